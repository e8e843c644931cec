-- Countdown: a procedure that calls itself, bounded by the file's
-- top-level settings.

max_depth(3)
max_turns(4)
async(true)

procedure("countdown", {
  params = {n = {type = "number", default = 2}},
  outputs = {depth = {type = "number", required = true}},
}, function()
  if params.n <= 0 then
    return {depth = 0}
  end
  local inner = Procedure.run("countdown", {n = params.n - 1})
  return {depth = inner.depth + 1}
end)

specifications([[
Feature: Bounded recursion
  Scenario: within max_depth
    Given the n parameter is 2
    When the procedure runs
    Then the output depth should be 2

  Scenario: beyond max_depth
    Given the n parameter is 5
    When the procedure runs
    Then the procedure should fail with max_depth 3 exceeded
]])
