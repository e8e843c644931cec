-- Topic brief, declared the v0.3 way: parameter(), output() and
-- description() at the top level, then procedure(function() ... end).

description("Write a numbered brief about a topic")

parameter("topic", {type = "string", default = "tides", description = "What the brief is about"})
parameter("points", {type = "number", default = 3})

output("brief", {type = "string", required = true})
output("count", {type = "number", required = true})

procedure(function()
  local lines = {}
  for i = 1, params.points do
    lines[#lines + 1] = i .. ". " .. params.topic .. " point " .. i
    State.set("written", i)
  end
  return {brief = table.concat(lines, "\n"), count = #lines, draft = "not an output"}
end)

specifications([[
Feature: Topic brief
  Scenario: the defaults
    Given the procedure has started
    When the procedure runs
    Then the output count should be 3
    And the output brief should match pattern "^1\. tides point 1"
    And the state written should be 3
    And the procedure should complete successfully

  Scenario: two points on the moon
    Given the topic parameter is moon
    And the points parameter is 2
    When the procedure runs
    Then the output count should be 2
    And the output brief should match pattern "^1\. moon point 1\n2\. moon point 2$"
]])
