-- MessageHistory: a system note and a user message set up before the
-- agent's turn stay in the history with the agent's answer.
agent("chatbot", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "You are a helpful chatbot. Answer questions concisely.",
    toolsets = {},
})

procedure({
    name = "chat",
    params = {user_message = {type = "string", default = "Hello"}},
}, function()
    MessageHistory.inject_system("You are having a friendly conversation")
    MessageHistory.append({role = "user", content = params.user_message})
    local r = Chatbot.turn()
    local history = MessageHistory.get()
    local roles, contents = {}, {}
    for i = 1, #history do
        roles[i] = history[i].role
        contents[i] = history[i].content
    end
    local all_roles = {}
    for i, msg in ipairs(r.all_messages()) do all_roles[i] = msg.role end
    return {history_length = #history, roles = roles, contents = contents, all_roles = all_roles}
end)
