-- model_settings, request_limit and disable_streaming.
agent("physicist", {
    provider = "openai",
    model = "gpt-4o",
    system_prompt = "You are a physics expert. Be concise and accurate.",
    initial_message = "Explain quantum entanglement in exactly 2 sentences.",
    toolsets = {},
    disable_streaming = true,
    model_settings = {temperature = 0.7, top_p = 0.9, max_tokens = 200},
})

agent("busy", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "Call done when finished.",
    request_limit = 2,  -- the done call and the answer after it: two requests
})

procedure({
    name = "settings",
    outputs = {
        answer = {type = "string", required = true},
        finished = {type = "boolean", required = true},
        requests = {type = "number", required = true},
    },
}, function()
    local r = Physicist.turn({temperature = 0.2})
    local b = Busy.turn()
    return {answer = r.text, finished = Tool.called("done"), requests = b.usage.requests}
end)
