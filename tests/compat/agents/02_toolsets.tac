-- v0.7 names an agent's tools with toolsets = {...}; toolset(name, {...})
-- groups Lua tools; Toolset.get reads a group back; toolsets = {} is none.
toolset("math_tools", {
    type = "lua",
    tools = {
        {
            name = "add",
            description = "Add two numbers",
            parameters = {
                a = {type = "number", required = true, description = "First number"},
                b = {type = "number", required = true, description = "Second number"},
            },
            handler = function(args)
                return string.format("%g + %g = %g", args.a, args.b, args.a + args.b)
            end,
        },
        {
            name = "multiply",
            description = "Multiply two numbers",
            parameters = {
                a = {type = "number", required = true},
                b = {type = "number", required = true},
            },
            handler = function(args) return args.a * args.b end,
        },
    },
})

agent("mathematician", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "Use the math tools for every calculation, then call done with the answer.",
    initial_message = "What is 5 plus 3?",
    toolsets = {"math_tools", "done"},
})

agent("chatter", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "You only talk.",
    initial_message = "Say something.",
    toolsets = {},  -- explicitly no tools, not even done
})

procedure({
    name = "toolsets",
    outputs = {
        answer = {type = "string", required = true},
        completed = {type = "boolean", required = true},
        used_add = {type = "boolean", required = true},
        toolset_tools = {type = "array", required = true},
        chatter_called_done = {type = "boolean", required = true},
        summary_called_tools = {type = "boolean", required = true},
    },
}, function()
    local set = Toolset.get("math_tools")
    local turns = 0
    repeat
        Mathematician.turn()
        turns = turns + 1
    until Tool.called("done") or turns >= 5
    local answer = Tool.called("done") and Tool.last_call("done").args.reason or "did not complete"
    local completed, used_add = Tool.called("done"), Tool.called("add")

    Tool.reset()
    -- a summary turn with no tools at all (the per-turn toolsets option)
    Mathematician.turn({inject = "Summarise what you did.", toolsets = {}})
    local summary_called_tools = Tool.called("add") or Tool.called("done")
    Chatter.turn()
    return {answer = answer, completed = completed, used_add = used_add, toolset_tools = set.tools,
            chatter_called_done = Tool.called("done"), summary_called_tools = summary_called_tools}
end)
