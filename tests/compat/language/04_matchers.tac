-- Reply screening with the matchers contains(), equals() and matches().

local rules = {
  greeting = matches("^(Hello|Hi)\\b"),
  polite = contains("please"),
  done = equals("OK"),
}

procedure({
  outputs = {
    greeting = {type = "boolean", required = true},
    polite = {type = "boolean", required = true},
    done = {type = "boolean", required = true},
    listed = {type = "boolean", required = true},
    rule = {type = "string", required = true},
  },
}, function()
  local reply = "Hello there, please hold"
  return {
    greeting = rules.greeting(reply),
    polite = rules.polite:test(reply),
    done = rules.done(reply),
    listed = contains("b")({"a", "b"}),
    rule = tostring(rules.polite),
  }
end)

specifications([[
Feature: Screening
  Scenario: a polite greeting
    When the procedure runs
    Then the output greeting should be true
    And the output polite should be true
    And the output done should be false
    And the output listed should be true
    And the output rule should be 'contains("please")'
    And the rules are plain data
]])

step("the rules are plain data", function()
  local m = matches("[0-9]+")
  assert(m.matcher == "matches" and m.value == "[0-9]+", "a matcher is {matcher, value}")
  assert(m("abc123") and not m("abc"), "matches finds a regular expression")
end)
