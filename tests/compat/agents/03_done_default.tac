-- The built-in done tool is on every agent that does not list its tools:
-- the reference's "did the agent complete?" loop ends on the offline model
-- too, and a scripted agent calls it as its script says.
agent("greeter", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "Greet the user warmly, then call the done tool with your greeting as the reason.",
    initial_message = "Please greet the user.",
})

agent("scripted", {
    provider = "anthropic",
    model = "claude-sonnet-4-5",
    system_prompt = "Answer, then call done.",
    mock = {responses = {
        "Thinking about it.",
        {tool = "done", args = {reason = "Hello from the script", success = true}},
        "Finished.",
    }},
})

procedure({
    name = "greeting",
    outputs = {
        greeting = {type = "string", required = true},
        completed = {type = "boolean", required = true},
        scripted = {type = "string", required = true},
        stop_reason = {type = "string", required = true},
        turns = {type = "number", required = true},
    },
}, function()
    local max_turns, turn_count = 10, 0
    while not Tool.called("done") and turn_count < max_turns do
        turn_count = turn_count + 1
        Greeter.turn()
    end
    local greeting, completed
    if Tool.called("done") then
        greeting, completed = Tool.last_call("done").args.reason or "Hello!", true
    else
        greeting, completed = "Agent did not complete properly", false
    end

    Tool.reset()
    local scripted_turns = 0
    repeat
        Scripted.turn()
        scripted_turns = scripted_turns + 1
    until Tool.called("done") or scripted_turns >= 3
    local scripted = Tool.called("done") and Tool.last_call("done").args.reason or "Agent did not complete properly"
    return {greeting = greeting, completed = completed, scripted = scripted, stop_reason = Stop.reason(),
            turns = turn_count + scripted_turns}
end)
