-- Named prompts, a session shared between agents with a filter, and the
-- reference's return_prompt / error_prompt.
prompt("research_system", "You research {params.topic}. Call done with your findings.")
prompt("summary_system", "You summarise what the researcher found.")
return_prompt("Summarise the result of your work concisely.")
error_prompt("Explain what went wrong and any partial progress made.")

agent("researcher", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = prompts.research_system,
    initial_message = "Begin.",
    session = {source = "shared", filter = filters.last_n(20)},
})

agent("summarizer", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = prompts.summary_system,
    toolsets = {},
    session = {source = "shared", filter = filters.by_role("user", "assistant")},
    mock = {responses = {"Lighthouses guide ships.", "In short: the research found that lighthouses guide ships."}},
})

procedure({
    name = "research",
    params = {topic = {type = "string", required = true}},
}, function()
    repeat Researcher.turn() until Tool.called("done") or Iterations.exceeded(5)
    Summarizer.turn({inject = "Summarise the findings."})
    -- returns nothing: the return_prompt's summary turn is the result
end)

procedure({
    name = "failing",
    params = {topic = {type = "string", required = true}},
}, function()
    Researcher.turn()
    error("the archive is offline")
end)

procedure({
    name = "report",
    outputs = {
        summary = {type = "string", required = true},
        failed = {type = "boolean", required = true},
        error = {type = "string", required = true},
    },
}, function()
    local summary = Procedure.run("research", {topic = "lighthouses"})
    local ok, err = pcall(Procedure.run, "failing", {topic = "tides"})
    return {summary = summary, failed = not ok, error = tostring(err)}
end)
