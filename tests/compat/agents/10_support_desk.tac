-- Combined: a support desk. A Lua toolset, a structured triage agent, a
-- per-turn restriction, a shared session, and message records.
toolset("crm", {
    type = "lua",
    tools = {
        {
            name = "lookup_customer",
            description = "Find a customer by id",
            parameters = {id = {type = "integer", required = true}},
            handler = function(args) return {id = args.id, name = "Ada", plan = "pro"} end,
        },
    },
})

agent("triage", {
    provider = "anthropic",
    model = "claude-sonnet-4-5",
    system_prompt = "Classify the ticket.",
    toolsets = {},
    output_type = {
        category = {type = "string", enum = {"billing", "bug", "other"}, required = true},
        urgent = {type = "boolean", required = true},
    },
})

agent("helpdesk", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "You help customers. Look them up, then call done with your reply.",
    toolsets = {"crm", "done"},
    session = {source = "own", filter = filters.last_n(30)},
    model_settings = {temperature = 0.2, max_tokens = 300},
    mock = {responses = {
        {tool = "lookup_customer", args = {id = 42}},
        {tool = "done", args = {reason = "Hi Ada, your pro plan renews tomorrow."}},
        "Replied.",
        "Ada asked about her renewal; I told her it is tomorrow.",
    }},
})

procedure({
    name = "desk",
    params = {ticket = {type = "string", default = "When does my plan renew? I am customer 42."}},
    outputs = {
        category = {type = "string", required = true},
        urgent = {type = "boolean", required = true},
        reply = {type = "string", required = true},
        customer = {type = "string", required = true},
        note = {type = "string", required = true},
        roles = {type = "array", required = true},
    },
}, function()
    local t = Triage.turn({inject = params.ticket})
    Helpdesk.turn({inject = params.ticket})
    local reply = Tool.last_call("done").args.reason
    local customer = Tool.last_result("lookup_customer").name
    local note = Helpdesk.turn({inject = "Write an internal note.", toolsets = {}})
    local roles = {}
    for i, m in ipairs(note.all_messages()) do roles[i] = m.role end
    return {category = t.data.category, urgent = t.data.urgent, reply = reply, customer = customer,
            note = note.text, roles = roles}
end)
