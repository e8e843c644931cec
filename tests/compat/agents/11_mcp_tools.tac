-- Tools from an MCP server, as the reference's users write it: the server's
-- tools are named SERVER_TOOL, and an agent's toolsets list them one by one
-- (or name the whole server, or a toolset of some of its tools). The
-- reference reads mcp_servers from its config file; here the notebook
-- declares the server.
mcp_server("test_server", {
    command = "python",
    args = {"mcp_server.py"},
    env = {MCP_CALL_LOG = "mcp_calls.log"},
})

toolset("dictionary", {type = "mcp", server = "test_server", tools = {"lookup"}})

agent("calculator", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = [[
You are a helpful calculator assistant.
You have access to mathematical tools from an MCP server.

IMPORTANT: After completing the calculation, you MUST call the done tool to finish.
]],
    initial_message = "Calculate 5 + 3 and call done when finished",
    toolsets = {
        "test_server_add",
        "done"
    }
})

agent("librarian", {
    provider = "openai",
    model = "gpt-4o-mini",
    system_prompt = "Look every word up with the dictionary, then call done.",
    initial_message = "What does alpha mean?",
    toolsets = {"dictionary", "done"}
})

procedure("main", {}, function()
    Log.info("Starting MCP server test")

    local max_turns = 5
    local turn_count = 0

    repeat
        Calculator.turn()
        turn_count = turn_count + 1

        if Tool.called("test_server_add") then
            local result = Tool.last_result("test_server_add")
            Log.info("Addition completed", {result = result})
        end
    until Tool.called("done") or turn_count >= max_turns

    local sum = Tool.last_result("test_server_add")
    Tool.reset()
    Librarian.turn()

    if Tool.called("done") then
        return {
            success = true,
            sum = sum,
            definition = Tool.last_result("test_server_lookup"),
            turns = turn_count
        }
    end
    return {success = false, error = "Did not complete in time"}
end)
