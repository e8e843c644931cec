-- A turn's result: text, {role, content} message records, and
-- pydantic-ai's own messages through raw_messages().
agent("assistant", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "You answer questions.",
    toolsets = {},
    mock = {responses = {"Paris is the capital of France.", "About 2.1 million people live there."}},
})

agent("extractor", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "Extract the city and its country.",
    output_type = {
        city = {type = "string", required = true},
        country = {type = "string", required = true},
    },
})

procedure({name = "results"}, function()
    local first = Assistant.turn({inject = "What is the capital of France?"})
    local second = Assistant.turn({inject = "How many people live there?"})
    local roles, contents = {}, {}
    for i, msg in ipairs(second.all_messages()) do
        roles[i] = msg.role
        contents[i] = msg.content
    end
    local new_roles = {}
    for i, msg in ipairs(second.new_messages()) do new_roles[i] = msg.role end
    local raw = second.raw_messages()
    local extracted = Extractor.turn({inject = "Lisbon is in Portugal."})
    return {
        first_text = first.text,
        second_text = second.text,
        roles = roles,
        contents = contents,
        new_roles = new_roles,
        raw_kinds = {raw[1].kind, raw[2].kind},
        raw_all = #second.raw_messages("all"),
        city_is_text = type(extracted.data.city) == "string",
        country_is_text = type(extracted.data.country) == "string",
        extracted_text = extracted.text,
        extractor_done = Tool.called("done"),
    }
end)
