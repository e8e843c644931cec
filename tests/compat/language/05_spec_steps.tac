-- Tide report: an agent looks the tide up and calls done; the
-- specifications use the reference's built-in steps.

stages({"planning", "researching", "reporting"})

tool("lookup", {
  description = "Look up the tide at a harbour",
  params = {harbour = {type = "string", required = true}},
}, function(args)
  State.set("notes", "high tide at " .. args.harbour .. " 06:10")
  return {high = "06:10"}
end)

agent("researcher", {
  model = "test",
  system_prompt = "Find the tide for {params.harbour}, then call done.",
  tools = {"lookup", "done"},
  mock = {responses = {
    {tool = "lookup", args = {harbour = "Brest"}},
    {tool = "done", args = {reason = "finished", success = true}},
    "Reported.",
  }},
})

procedure({
  params = {harbour = {type = "string", default = "Brest"}},
  outputs = {answer = {type = "string", required = true}},
}, function()
  Stage.set("planning")
  Stage.set("researching")
  repeat
    Researcher.turn()
  until Tool.called("done") or Iterations.exceeded(3)
  Stage.set("reporting")
  return {answer = State.get("notes")}
end)

specifications([[
Feature: Tide report
  Scenario: the agent reports
    Given the procedure has started
    When the researcher agent takes turns
    Then the done tool should be called at least once
    And the lookup tool should be called exactly 1 time
    And the lookup tool should be called with harbour=Brest
    And the stage should transition from planning to researching
    And the stage should transition from researching to reporting
    And the stage is reporting
    And the total iterations should be less than 3
    And the total iterations should be greater than 0
    And the total iterations should be between 1 and 2
    And the agent should take at least 1 turn
    And the stop reason should be finished
    And the state should contain notes
    And the output should contain answer
    And the output answer should exist
    And the output answer should match pattern "06:[0-9]{2}"
    And the procedure should complete successfully
]])
