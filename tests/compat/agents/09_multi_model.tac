-- Combined: two agents on two models hand work on through State, each
-- ending with done; the reference's multi-model research workflow.
default_provider("openai")

agent("researcher", {
    model = "gpt-4o",
    system_prompt = [[You are a researcher. Give brief findings.
You MUST call the 'done' tool when finished, passing your research as the 'reason' argument.]],
    initial_message = "Research this topic and call done when finished: {params.topic}",
})

agent("summarizer", {
    model = "gpt-4o-mini",
    system_prompt = "You summarise text. Call done with your summary as the reason.",
    initial_message = "Summarise this research and call done:\n\n{state.research}",
    model_settings = {temperature = 0.3},
})

procedure({
    name = "multi_model",
    params = {topic = {type = "string", default = "artificial intelligence"}},
    outputs = {
        research = {type = "string", required = true},
        summary = {type = "string", required = true},
        done_calls = {type = "number", required = true},
    },
}, function()
    local done_calls = 0
    local turns = 0
    repeat
        Researcher.turn()
        turns = turns + 1
    until Tool.called("done") or turns >= 3
    if Tool.called("done") then done_calls = done_calls + 1 end
    State.set("research", Tool.called("done") and Tool.last_call("done").args.reason or "Research not completed")

    Tool.reset()
    turns = 0
    repeat
        Summarizer.turn()
        turns = turns + 1
    until Tool.called("done") or turns >= 3
    if Tool.called("done") then done_calls = done_calls + 1 end
    local summary = Tool.called("done") and Tool.last_call("done").args.reason or "Summary not completed"
    return {research = State.get("research"), summary = summary, done_calls = done_calls}
end)
