-- A procedure whose param is required and has no default: running the cell
-- declares it (and what follows it), it does not fail.
procedure({
    name = "greet",
    params = {name = {type = "string", required = true}},
    outputs = {
        greeting = {type = "string", required = true},
        length = {type = "number", required = true},
    },
}, function()
    local greeting = "Hello, " .. params.name .. "!"
    return {greeting = greeting, length = string.len(greeting)}
end)

specifications([[
Feature: Greeting
  Scenario: Greets by name
    Given the name parameter is Alice
    When the procedure runs
    Then the procedure should complete successfully
]])

tool("after_greet", {description = "Declared after the procedure"}, function() return "ok" end)
