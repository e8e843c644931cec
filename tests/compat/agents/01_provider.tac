-- Providers as the reference Tactus names them: provider = "...", with or
-- without a model, and a notebook-wide default_provider.
default_provider("openai")

agent("writer", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "You write one short sentence, then call done with it as the reason.",
    initial_message = "Write about lighthouses.",
})

agent("critic", {
    provider = "anthropic",
    system_prompt = "You review a sentence and call done with your verdict.",
    initial_message = "Review the sentence.",
})

agent("archivist", {
    provider = "bedrock",
    model = "us.amazon.nova-micro-v1:0",
    system_prompt = "You file things away.",
    initial_message = "File it.",
    toolsets = {},
})

agent("scout", {
    model = "gpt-4o",  -- no provider here: default_provider applies
    system_prompt = "You look around.",
    initial_message = "Look around.",
    toolsets = {},
})

agent("gemini_helper", {
    provider = "google",
    model = "gemini-2.0-flash",
    system_prompt = "You help.",
    initial_message = "Help.",
    toolsets = {},
})

procedure({
    name = "providers",
    outputs = {
        sentence = {type = "string", required = true},
        verdict = {type = "string", required = true},
        filed = {type = "string", required = true},
        turns = {type = "number", required = true},
    },
}, function()
    Writer.turn()
    local sentence = Tool.called("done") and Tool.last_call("done").args.reason or "writer did not finish"
    Tool.reset()
    Critic.turn()
    local verdict = Tool.called("done") and Tool.last_call("done").args.reason or "critic did not finish"
    local filed = Archivist.turn().text
    Scout.turn()
    Gemini_helper.turn()
    return {sentence = sentence, verdict = verdict, filed = filed, turns = Iterations.current()}
end)
