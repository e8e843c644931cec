"""BDD specifications: specifications([[...]]), step(...), %tactus test, pytest --tactus-specs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tactus_kernel.features.specs.runner import run_specs
from tactus_kernel.features.specs.steps import parse_value

SHIP = """
stages({"planning", "shipping", "done"})
tool("lookup", {description = "Look a release up", params = {q = {type = "string"}}},
     function(a) return {hits = 3} end)
agent("worker", {model = "test", tools = {"lookup", "done"},
  mock = {responses = {{tool = "lookup", args = {q = "v2"}},
                       {tool = "done", args = {reason = "shipped", success = true}}, "All done."}}})
RUNS = 0
procedure({name = "ship", params = {env = {type = "string", default = "staging"}}}, function()
  Stage.set("planning")
  RUNS = RUNS + 1
  State.set("env", params.env)
  State.set("even_run", RUNS % 2 == 0)
  local ok = Human.approve({message = "Ship it?"})
  State.set("approved", ok)
  State.set("name", Human.input({message = "Your name?"}))
  Stage.set("shipping")
  Worker.turn()
  Stage.set("done")
  return {ok = ok, env = params.env}
end)
specifications([[
Feature: Shipping a release
  Scenario: approved in prod
    Given the env parameter is prod
    And the human approves "Ship it?"
    And the human answers "Your name?" with "Ada"
    When the procedure runs
    Then the procedure should complete successfully
    And the state env should be prod
    And the state name should be "Ada"
    And the state approved should be true
    And the stage should be done
    And the lookup tool should be called
    And the lookup tool should be called at least 1 times
    And the done tool should be called exactly 1 time
    And iterations should be less than 3
    And the output env should be "prod"
    And the stop reason should contain shipped
    And the name was recorded

  Scenario: rejected
    Given the human rejects "Ship it?"
    And the human answers "Your name?" with "Bob"
    Then the state approved should be false
    And the state env should be staging

  Scenario: every other run
    Given the human approves "Ship it?"
    And the human answers "Your name?" with "Cy"
    Then the state even_run should be true

  Scenario: nobody answers
    Then the procedure should complete successfully
]])
step("the name was recorded", function()
  assert(State.get("name") == "Ada", "the name is " .. tostring(State.get("name")))
end)
"""


@pytest.fixture
def ship(cells):
    cells.runtime.answers.update({"Ship it?": True, "Your name?": "Zed"})
    cells(SHIP, key="ship-cell")
    cells.runtime.answers.clear()
    return cells


def run(cells: Any, *args: Any) -> Any:
    return asyncio.run(run_specs(cells.runtime, *args))


def test_passing_scenario_with_the_built_in_steps(ship):
    report = run(ship, "ship", "approved in prod")
    [row] = report.rows()
    assert row["result"] == "pass", report.failures()
    assert row["steps passed"] == 16 and row["steps failed"] == 0
    assert row["duration"].endswith(" ms")


def test_scenarios_run_on_fresh_records_and_leave_the_notebooks_alone(ship):
    before = json.dumps(ship.runtime.records.snapshot(), sort_keys=True)
    answers_before = dict(ship.runtime.answers)
    run(ship, "ship")
    assert json.dumps(ship.runtime.records.snapshot(), sort_keys=True) == before
    assert ship.runtime.answers == answers_before and ship.runtime.batch is False
    assert ship.runtime.host is ship.host


def test_a_failing_scenario_names_the_step_and_why(ship):
    report = run(ship, "ship", "nobody answers")
    assert report.failed == [("ship", "nobody answers")]
    text = report.failures()
    assert "Then the procedure should complete successfully" in text
    assert 'Human.approve "Ship it?" was not answered by the scenario' in text


def test_runs_give_a_success_rate_and_name_flaky_scenarios(ship):
    report = run(ship, "ship", "every other run", 4)
    [row] = report.rows()
    assert row["runs"] == 4 and row["passed"] == 2 and row["success rate"] == "50%" and row["result"] == "FLAKY"
    assert report.flaky == [("ship", "every other run")]
    assert "success rate 50%; flaky: every other run" in report.summary()
    stable = run(ship, "ship", "rejected", 3)
    assert stable.rows()[0]["result"] == "pass" and not stable.flaky


def test_outlines_undefined_steps_and_step_patterns(cells):
    cells("""
    procedure({name = "greet", params = {who = {type = "string", default = "world"}}}, function()
      State.set("greeting", "hello " .. params.who)
      return {text = "hello " .. params.who}
    end)
    specifications("greet", [[
    Feature: Greeting
      Scenario Outline: greets <who>
        Given the who parameter is <who>
        Then the output text should be "hello <who>"
        And the greeting mentions <who>
      Examples:
        | who  |
        | Ada  |
        | Alan |
      Scenario: unknown words
        Then the moon should be made of cheese
    ]])
    step("the greeting mentions (%a+)", function(who) assert(State.get("greeting"):find(who), "no " .. who) end)
    """)
    report = run(cells, "greet")
    rows = {r["scenario"]: r["result"] for r in report.rows()}
    assert rows == {"greets Ada": "pass", "greets Alan": "pass", "unknown words": "FAIL"}
    assert "no built-in step matches and no step(...) defines it" in report.failures()


def test_bad_gherkin_is_an_error_at_the_declaration(cells):
    err = cells.error("specifications([[Feature: x\n  Scenario: y\n    Given a\n  Oops this is not gherkin]])")
    assert err.ename == "SpecificationError" and "does not parse" in err.evalue


def test_selection_errors_say_what_exists(ship):
    from tactus_kernel.engine.errors import CellError

    with pytest.raises(CellError, match="procedures with specifications: ship"):
        run(ship, "nope")
    with pytest.raises(CellError, match=r"no scenario named 'x'.*approved in prod"):
        run(ship, "ship", "x")


def test_parse_value():
    assert parse_value('"prod"') == "prod" and parse_value("prod") == "prod"
    assert parse_value("3") == 3 and parse_value("true") is True and parse_value('{"a": 1}') == {"a": 1}


# ---------------------------------------------------------------- kernel
def test_the_magic_shows_a_table_and_fails_the_cell_when_a_scenario_fails(kernel):
    kernel.execute('%tactus answer "Ship it?" true')
    kernel.execute('%tactus answer "Your name?" "Zed"')
    assert kernel.execute(SHIP, cell_id="ship").status == "ok"
    ok = kernel.execute('%tactus test ship --scenario "approved in prod"')
    assert ok.status == "ok", ok.errors
    table = ok.of_type("display_data")[0]["content"]["data"]
    assert "approved in prod" in table["text/plain"] and "<table" in table["text/html"]
    assert "1 scenario(s), 1 run(s): 1 passed, 0 failed" in ok.stdout
    flaky = kernel.execute('%tactus test ship --scenario "every other run" --runs 4')
    assert flaky.errors[0]["ename"] == "SpecificationError" and "flaky" in flaky.errors[0]["evalue"]
    assert "FLAKY" in flaky.of_type("display_data")[0]["content"]["data"]["text/plain"]
    assert "success rate 50%" in flaky.stdout
    usage = kernel.execute("%tactus test ship --runs zero")
    assert usage.errors[0]["ename"] == "UsageError"


# ---------------------------------------------------------- pytest plugin
def test_pytest_collects_a_notebooks_scenarios(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("""
procedure({name = "add", params = {a = {type = "number", default = 1}, b = {type = "number", default = 2}}},
  function() return {sum = params.a + params.b} end)
specifications([[
Feature: Adding
  Scenario: two and two
    Given the a parameter is 2
    And the b parameter is 2
    Then the output sum should be 4
  Scenario: wrong sum
    Then the output sum should be 5
]])
"""),
        nbformat.v4.new_code_cell("%tactus test add"),
    ]
    path = tmp_path / "adding.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--tactus-specs",
            str(path),
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-p",
            "no:randomly",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 1 passed" in out
    assert "wrong sum" in out and "the output 'sum' is 3, expected 5" in out
