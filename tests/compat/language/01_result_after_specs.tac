-- Greeting
-- A procedure whose cell ends with its specifications and a custom step,
-- as most reference examples do: the procedure's result is still shown.

procedure({
  params = {name = {type = "string", default = "World"}},
  outputs = {greeting = {type = "string", required = true}},
}, function()
  return {greeting = "Hello, " .. params.name .. "!"}
end)

specifications([[
Feature: Greeting
  Scenario: the default name
    Given the procedure has started
    When the procedure runs
    Then the output greeting should be "Hello, World!"
    And the output greeting should match pattern "^Hello, [A-Z][a-z]+!$"
    And the greeting is polite

  Scenario: a given name
    Given the procedure has started
    And the name parameter is Ada
    When the procedure runs
    Then the output greeting should be "Hello, Ada!"
    And the output greeting should not be "Hello, World!"
]])

step("the greeting is polite", function()
  return true
end)
