"""evaluations({...}) on pydantic-evals, evaluation({runs}), %tactus eval and
pytest --tactus-evals."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tactus_kernel.engine.errors import CellError
from tactus_kernel.features.evaluations.command import eval_command
from tactus_kernel.features.evaluations.running import SuiteResult, run_suite

pytest.importorskip("pydantic_evals")

GREET = """
tool("lookup", {description = "How a person likes to be greeted",
  params = {name = {type = "string", required = true}}},
  function(args) return {title = "Dr."} end)
agent("writer", {model = "test", tools = {"lookup", "done"},
  mock = {responses = {{tool = "lookup", args = {name = "Ada"}},
                       {tool = "done", args = {reason = "written", success = true}}, "Done."}}})
procedure({
  name = "greet",
  params = {name = {type = "string", default = "Ada"}, excited = {type = "boolean", default = false}},
  outputs = {greeting = {type = "string", required = true}, length = {type = "integer", required = true}},
}, function()
  State.set("status", "drafting")
  Writer.turn()
  local greeting = "Hello, " .. params.name .. (params.excited and "!" or ".")
  State.set("status", Tool.called("done") and "done" or "unfinished")
  return {greeting = greeting, length = #greeting}
end)
"""


def declare(cells: Any, evaluators: str, extra: str = "", dataset: str | None = None) -> None:
    dataset = (
        dataset
        or """{
      {name = "ada", inputs = {name = "Ada"}, expected_output = {greeting = "Hello, Ada."}},
      {name = "grace", inputs = {name = "Grace", excited = true}, expected_output = {greeting = "Hello, Grace!"}},
    }"""
    )
    cells(GREET + f"evaluations({{dataset = {dataset}, evaluators = {{{evaluators}}}{extra}}})", key="greet")


def suite(cells: Any, runs: int | None = None) -> SuiteResult:
    return asyncio.run(run_suite(cells.runtime, "greet", runs))


def why(result: SuiteResult) -> dict[str, str]:
    """case -> the reasons it failed ("" when it passed)."""
    return {r.case: r.error or "; ".join(r.failed) for r in result.rows}


# ------------------------------------------------------------ each evaluator
PASS_FAIL = [
    ('{type = "equals_expected", field = "greeting"}', '{type = "equals_expected", field = "length"}', None),
    (
        '{type = "contains", field = "greeting", value = "Hello"}',
        '{type = "contains", field = "greeting", value = "Bye"}',
        'contains(greeting): output.greeting "Hello, Ada." does not contain "Bye"',
    ),
    (
        '{type = "contains", field = "greeting", value = "hello", case_sensitive = false}',
        '{type = "contains", field = "greeting", value = "hello"}',
        'contains(greeting): output.greeting "Hello, Ada." does not contain "hello"',
    ),
    (
        '{type = "contains_any", field = "greeting", value = {"Hi", "Hello"}}',
        '{type = "contains_any", field = "greeting", value = {"Hi", "Hey"}}',
        'contains_any(greeting): output.greeting "Hello, Ada." contains none of ["Hi", "Hey"]',
    ),
    (
        '{type = "min_length", field = "greeting", value = 11}',
        '{type = "min_length", field = "greeting", value = 14}',
        "min_length(greeting): output.greeting has length 11, below the minimum 14",
    ),
    (
        '{type = "max_length", field = "greeting", value = 13}',
        '{type = "max_length", field = "greeting", value = 10}',
        "max_length(greeting): output.greeting has length 11, above the maximum 10",
    ),
    (
        '{type = "regex", field = "greeting", pattern = "^Hello, [A-Z]"}',
        '{type = "regex", field = "greeting", pattern = "^Hi"}',
        'regex(greeting): output.greeting "Hello, Ada." does not match /^Hi/',
    ),
    (
        '{type = "json_schema", json_schema = {type = "object", required = {"greeting", "length"}}}',
        '{type = "json_schema", json_schema = {type = "object", properties = {length = {type = "string"}}}}',
        "json_schema: the output does not match the JSON schema: 11 is not of type 'string' (at length)",
    ),
    (
        '{type = "range", field = "length", min_value = 5, max_value = 20}',
        '{type = "range", field = "length", max_value = 10}',
        "range(length): output.length is 11, outside [-inf, 10]",
    ),
    (
        '{type = "regex", field = "greeting", value = "^Hello"}',
        '{type = "regex", field = "greeting", value = "Bob"}',
        'regex(greeting): output.greeting "Hello, Ada." does not match /Bob/',
    ),
    (
        '{type = "range", field = "length", value = {min = 11, max = 13}}',
        '{type = "range", field = "greeting", value = {min = 1}}',
        'range(greeting): output.greeting is "Hello, Ada.", not a number',
    ),
    (
        '{type = "tool_called", value = "lookup"}',
        '{type = "tool_called", value = "search"}',
        "tool_called(search): the tool 'search' was called 0 time(s), expected at least 1 (tools called: done, lookup)",
    ),
    (
        '{type = "tool_called", value = "lookup", max_value = 1}',
        '{type = "tool_called", value = "lookup", min_value = 2}',
        "tool_called(lookup): the tool 'lookup' was called 1 time(s), expected at least 2 (tools called: done, lookup)",
    ),
    (
        '{type = "state_check", field = "status", value = "done"}',
        '{type = "state_check", field = "status", value = "drafting"}',
        'state_check(status): the state \'status\' is "done", expected "drafting"',
    ),
    (
        '{type = "agent_turns", field = "writer", max_value = 1}',
        '{type = "agent_turns", field = "writer", min_value = 2}',
        "agent_turns(writer): the agent 'writer' took 1 turn(s), expected at least 2",
    ),
    (
        '{type = "max_iterations", value = 3}',
        '{type = "max_iterations", value = 0}',
        "max_iterations: iterations 1, above the maximum 0",
    ),
]


@pytest.mark.parametrize(("good", "bad", "message"), PASS_FAIL, ids=[p[0].split('"')[1] for p in PASS_FAIL])
def test_each_evaluator_passes_and_fails_with_its_reason(cells, good, bad, message):
    declare(cells, good)
    passed = suite(cells)
    assert why(passed) == {"ada": "", "grace": ""}
    assert passed.threshold_failures == []
    declare(cells, bad)
    failed = suite(cells)
    if message is None:  # equals_expected on a field the case does not expect: nothing to check
        assert why(failed) == {"ada": "", "grace": ""} and failed.rows[0].assertions == 0
        return
    assert why(failed)["ada"] == message
    assert failed.threshold_failures == [
        "min_success_rate 1 (the default when no thresholds are declared): the success rate is 0 (0 of 2 runs passed)"
    ]


def test_equals_expected_fails_per_case(cells):
    declare(
        cells,
        '{type = "equals_expected", field = "greeting"}',
        dataset="""{
      {name = "ada", inputs = {name = "Ada"}, expected_output = {greeting = "Hi, Ada."}},
      {name = "grace", inputs = {name = "Grace"}, expected_output = {greeting = "Hello, Grace."}}}""",
    )
    assert why(suite(cells)) == {
        "ada": 'equals_expected(greeting): output.greeting is "Hello, Ada.", expected "Hi, Ada."',
        "grace": "",
    }


def test_whole_output_evaluators_are_pydantic_evals_own(cells):
    declare(
        cells,
        '{type = "equals_expected", name = "exact"}, {type = "is_instance", value = "dict"}, '
        '{type = "contains", value = {length = 11}}',
        dataset="""{
      {name = "ada", inputs = {name = "Ada"}, expected_output = {greeting = "Hello, Ada.", length = 11}},
      {name = "grace", inputs = {name = "Grace"}, expected_output = {greeting = "Hi", length = 13}}}""",
    )
    result = suite(cells)
    assert why(result)["ada"] == ""
    assert why(result)["grace"].startswith("exact")
    case = next(c for c in result.report.cases if c.name == "grace")
    assert set(case.assertions) == {"exact", "is_instance", "contains"}
    assert case.assertions["is_instance"].value is True and case.assertions["exact"].value is False
    assert type(result.report).__module__.startswith("pydantic_evals")


def test_the_llm_judge_runs_offline_without_a_key(cells, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("TACTUS_MODEL", raising=False)
    declare(cells, '{type = "llm_judge", name = "polite", rubric = "The greeting is polite"}')
    result = suite(cells)
    case = result.report.cases[0]
    judged = case.assertions["polite"]
    assert judged.value is True
    assert judged.reason == (
        "offline judge (pydantic-ai TestModel; OPENAI_API_KEY is not set for openai:gpt-4o): not a real judgement"
    )
    assert result.threshold_failures == []


# ------------------------------------------------------------------ datasets
def write(path: Path, text: str) -> None:
    path.write_text(text, "utf-8")


def test_datasets_from_jsonl_json_and_csv_files(cells, tmp_path):
    write(
        tmp_path / "cases.jsonl",
        json.dumps({"name": "ada", "inputs": {"name": "Ada"}, "expected_output": {"greeting": "Hello, Ada."}})
        + "\n\n"
        + json.dumps(
            {"name": "bob", "inputs": {"name": "Bob", "excited": True}, "expected_output": {"greeting": "Hello, Bob?"}}
        )
        + "\n",
    )
    write(
        tmp_path / "cases.json",
        json.dumps({"cases": [{"name": "cy", "inputs": {"name": "Cy"}, "metadata": {"kind": "short"}}]}),
    )
    write(
        tmp_path / "cases.csv",
        'name,inputs.name,excited,expected_output.greeting,metadata.source\ndee,Dee,true,"Hello, Dee!",csv\n',
    )
    for file, cases in (("cases.jsonl", ["ada", "bob"]), ("cases.json", ["cy"]), ("cases.csv", ["dee"])):
        cells(
            GREET + f'evaluations({{dataset_file = "{file}", evaluators = {{'
            '{type = "equals_expected", field = "greeting"}}})',
            key="greet",
        )
        result = suite(cells)
        assert [r.case for r in result.rows] == cases
    cells(
        GREET + 'evaluations({dataset_file = "cases.jsonl", dataset = {{name = "zoe", inputs = {name = "Zoe"}}},'
        ' evaluators = {{type = "equals_expected", field = "greeting"}}})',
        key="greet",
    )
    result = suite(cells)
    assert why(result) == {
        "ada": "",
        "bob": 'equals_expected(greeting): output.greeting is "Hello, Bob!", expected "Hello, Bob?"',
        "zoe": "",
    }
    dee = cells.runtime  # the CSV's columns: inputs typed, expected_output and metadata filled
    from tactus_kernel.features.evaluations.declarations import load_cases

    [case] = load_cases("cases.csv", dee.root)
    assert (case.name, case.inputs, case.expected_output, case.metadata) == (
        "dee",
        {"name": "Dee", "excited": True},
        {"greeting": "Hello, Dee!"},
        {"source": "csv"},
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "../outside.jsonl",
            "evaluations: dataset_file '../outside.jsonl': File: path '../outside.jsonl' leaves the "
            "notebook's folder and is refused",
        ),
        (
            "/etc/passwd",
            "evaluations: dataset_file '/etc/passwd': File: absolute path '/etc/passwd' refused; paths are "
            "relative to the notebook's folder",
        ),
        ("missing.jsonl", "evaluations: dataset_file 'missing.jsonl': no such file in the notebook's folder"),
    ],
)
def test_a_dataset_file_outside_the_folder_is_refused(cells, tmp_path, path, message):
    write(tmp_path.parent / "outside.jsonl", "{}\n")
    evaluators = '{{type = "contains", value = "x"}}'
    err = cells.error(GREET + f'evaluations({{dataset_file = "{path}", evaluators = {evaluators}}})', key="greet")
    assert err.ename == "EvaluationError"
    assert err.evalue.endswith(message)
    assert "[cell 1]:" in err.evalue


def test_bad_declarations_name_the_field(cells):
    cases = [
        ('{type = "similar"}', "evaluations: evaluators[1]: unknown evaluator type 'similar' (known: "),
        ('{type = "regex", pattern = "("}', "evaluations: evaluators[1] (regex): the pattern '(' does not compile: "),
        ('{type = "tool_called"}', 'evaluations: evaluators[1] (tool_called) needs value, e.g. value = "search"'),
        (
            '{type = "contains", value = "x", colour = 1}',
            "evaluations: unknown key in evaluators[1]: 'colour' (known: ",
        ),
    ]
    for evaluators, message in cases:
        err = cells.error(GREET + f"evaluations({{dataset = {{{{inputs = {{}}}}}}, evaluators = {{{evaluators}}}}})")
        assert err.ename == "EvaluationError" and message in err.evalue, err.evalue
    err = cells.error(
        GREET + 'evaluations({dataset = {{inputs = {}}}, evaluators = {{type = "contains", value = "x"}},'
        " thresholds = {min_sucess_rate = 1}})"
    )
    assert (
        "evaluations: unknown threshold 'min_sucess_rate' (known: min_success_rate, max_cost_per_run, "
        "max_duration, max_tokens_per_run)" in err.evalue
    )


# ---------------------------------------------------------------- thresholds
def test_thresholds_fail_the_cell_naming_the_threshold_and_the_value(cells):
    declare(
        cells,
        '{type = "contains", field = "greeting", value = "!"}',
        extra=", thresholds = {min_success_rate = 0.75, max_tokens_per_run = 1000}",
    )
    with pytest.raises(CellError) as info:
        asyncio.run(eval_command(cells.runtime, []))
    assert info.value.ename == "EvaluationThresholdError"
    assert info.value.evalue == "greet: min_success_rate 0.75: the success rate is 0.5 (1 of 2 runs passed)"
    shown = cells.host.displayed[-1]
    assert "FAIL" in shown["text/plain"] and "success rate 50%" in shown["text/plain"]
    assert "<html" in shown["text/html"] and "greet" in shown["text/html"]
    declare(
        cells,
        '{type = "contains", field = "greeting", value = "Hello"}',
        extra=", thresholds = {min_success_rate = 0.75, max_duration = 0}",
    )
    with pytest.raises(CellError) as info:
        asyncio.run(eval_command(cells.runtime, ["greet"]))
    assert info.value.evalue.startswith("greet: max_duration 0 s: run 1 of case ")
    declare(
        cells,
        '{type = "contains", field = "greeting", value = "Hello"}',
        extra=", thresholds = {min_success_rate = 0.75, max_tokens_per_run = 5}",
    )
    with pytest.raises(CellError) as info:
        asyncio.run(eval_command(cells.runtime, ["greet"]))
    assert "greet: max_tokens_per_run 5: run 1 of case 'ada' measured " in info.value.evalue


def test_runs_repeat_each_case_and_the_flag_overrides_them(cells):
    declare(cells, '{type = "contains", field = "greeting", value = "Hello"}', extra=", runs = 2")
    result = suite(cells)
    assert [(r.case, r.run) for r in result.rows] == [("ada", 1), ("ada", 2), ("grace", 1), ("grace", 2)]
    assert result.summary() == "evaluations of 'greet': 2 case(s) x 2 run(s): 4 of 4 passed, success rate 100%"
    asyncio.run(eval_command(cells.runtime, ["greet", "--runs", "3"]))
    assert "2 case(s) x 3 run(s): 6 of 6 passed" in cells.host.displayed[-1]["text/plain"]
    with pytest.raises(CellError) as info:
        asyncio.run(eval_command(cells.runtime, ["greet", "--runs", "none"]))
    assert (info.value.ename, info.value.evalue) == (
        "UsageError",
        "--runs needs a number: %tactus eval [procedure] [--runs N]",
    )


def test_a_failing_run_is_a_failed_case_and_the_notebook_record_is_untouched(cells):
    cells(
        """
procedure({name = "shaky", params = {n = {type = "number", default = 1}}}, function()
  if params.n > 1 then error("too big: " .. params.n) end
  Step.run("work", function() return 1 end)
  return {n = params.n}
end)
evaluations({dataset = {{name = "one", inputs = {n = 1}}, {name = "two", inputs = {n = 2}}},
  evaluators = {{type = "range", field = "n", max_value = 5}}, thresholds = {min_success_rate = 0.5}})
""",
        key="shaky",
    )
    before = json.dumps(cells.runtime.records.procedures, sort_keys=True, default=str)
    result = asyncio.run(run_suite(cells.runtime, "shaky"))
    assert why(result) == {"one": "", "two": "the procedure failed: LuaError: [cell 1]:3: too big: 2"}
    assert result.threshold_failures == []
    assert json.dumps(cells.runtime.records.procedures, sort_keys=True, default=str) == before


def test_start_up_does_not_import_pydantic_evals():
    code = (
        "import sys; from tactus_kernel.features import default_runtime; default_runtime(root='.'); "
        "print('pydantic_evals' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# --------------------------------------------------------- evaluation({runs})
FLAKY = """
COUNT = 0
procedure({name = "coin"}, function()
  COUNT = COUNT + 1
  State.set("even", COUNT % 2 == 0)
  return {count = COUNT}
end)
specifications([[
Feature: Coin
  Scenario: always
    Then the procedure should complete successfully
  Scenario: even
    Then the state even should be true
]])
evaluation({runs = 4, parallel = true})
"""


def test_evaluation_runs_the_specifications_and_reports_consistency(cells):
    cells(FLAKY, key="coin")
    with pytest.raises(CellError) as info:
        asyncio.run(eval_command(cells.runtime, ["coin"]))
    assert (info.value.ename, info.value.evalue) == ("EvaluationThresholdError", "coin: scenario 'even' flaky")
    text = cells.host.displayed[-1]["text/plain"]
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("coin")}
    assert lines["always"].split()[2:6] == ["4", "4", "100%", "100%"] and lines["always"].endswith("pass")
    assert lines["even"].split()[2:6] == ["4", "2", "50%", "50%"] and lines["even"].endswith("FLAKY")
    assert "success rate 75%; flaky: even" in text


def test_evaluation_without_specifications_says_so(cells):
    cells('procedure({name = "solo"}, function() return {} end)\nevaluation({runs = 2})', key="solo")
    with pytest.raises(CellError) as info:
        asyncio.run(eval_command(cells.runtime, ["solo"]))
    assert info.value.evalue == (
        "evaluation({runs = 2}) of 'solo' needs specifications([[...]]) to run; the procedure has none"
    )


# --------------------------------------------------------------- real kernel
def test_the_magic_in_a_kernel_shows_the_table_and_pydantic_evals_html(kernel):
    cell = (
        GREET
        + """evaluations({dataset = {{name = "ada", inputs = {name = "Ada"}}},
  evaluators = {{type = "contains", field = "greeting", value = "Ada"}}, thresholds = {min_success_rate = 1}})"""
    )
    assert kernel.execute(cell, cell_id="greet").status == "ok"
    ok = kernel.execute("%tactus eval greet --runs 2", timeout=60)
    assert ok.status == "ok", ok.errors
    data = ok.of_type("display_data")[0]["content"]["data"]
    assert "ada" in data["text/plain"] and "2 of 2 passed, success rate 100%" in data["text/plain"]
    assert "Evaluation Summary" in data["text/html"]
    bad = kernel.execute("%tactus eval nobody")
    assert bad.errors[0]["ename"] == "UsageError"
    assert "procedure 'nobody' declares no evaluations (procedures with evaluations: greet)" in bad.errors[0]["evalue"]


# ------------------------------------------------------------- pytest plugin
def test_pytest_collects_one_item_per_declaration(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            GREET
            + """evaluations({dataset = {{name = "ada", inputs = {name = "Ada"}}},
  evaluators = {{type = "contains", field = "greeting", value = "Ada"}}})"""
        ),
        nbformat.v4.new_code_cell("""procedure({name = "shout", params = {w = {type = "string", default = "hi"}}},
  function() return {text = string.upper(params.w)} end)
evaluations({runs = 2, dataset = {{name = "hi", inputs = {w = "hi"}}, {name = "yo", inputs = {w = "yo"}}},
  evaluators = {{type = "regex", field = "text", pattern = "^H"}}, thresholds = {min_success_rate = 0.9}})"""),
        nbformat.v4.new_code_cell(
            FLAKY.replace("evaluation({runs = 4, parallel = true})", "evaluation({runs = 1})").replace(
                "Scenario: even\n    Then the state even should be true\n", ""
            )
        ),
        nbformat.v4.new_code_cell("%tactus eval"),
    ]
    path = tmp_path / "evals.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--tactus-evals",
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
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 2 passed" in out
    assert "evaluations of 'shout' failed: min_success_rate 0.9: the success rate is 0.5 (2 of 4 runs passed)" in out
    assert 'regex(text): output.text "YO" does not match /^H/' in out


def test_declarations_can_name_their_procedure_and_the_later_spelling_is_accepted(cells):
    cells(GREET, key="greet")
    cells('procedure({name = "other"}, function() return {} end)', key="other")
    cells(
        'evaluations("greet", {dataset = {{name = "ada", inputs = {name = "Ada"}}}, '
        'evaluators = {{type = "contains", field = "greeting", value = "Ada"}}})\n'
        'evaluation("other", {runs = 2, dataset = {{name = "x"}},\n'
        '  evaluators = {{type = "is_instance", value = "dict"}}})',
        key="decl",
    )
    from tactus_kernel.features.evaluations.effects import registry

    reg = registry(cells.runtime)
    assert sorted(reg.suites) == ["greet", "other"] and reg.consistency == {}
    assert reg.suites["other"].runs == 2
    assert why(asyncio.run(run_suite(cells.runtime, "other"))) == {"x": ""}
    err = cells.error("evaluation({runs = 0})", key="bad")
    assert (err.ename, err.evalue) == (
        "EvaluationError",
        "[cell 4]:1: evaluation: runs must be a whole number of at least 1, got 0",
    )


def test_without_pydantic_evals_the_declaration_says_what_to_install(cells, monkeypatch):
    import tactus_kernel.features.evaluations as package

    monkeypatch.setitem(sys.modules, "pydantic_evals", None)
    monkeypatch.setitem(sys.modules, "pydantic_evals.evaluators", None)
    # imported by an earlier test: gone from both places `import` looks
    monkeypatch.delitem(sys.modules, "tactus_kernel.features.evaluations.evaluators", raising=False)
    monkeypatch.delattr(package, "evaluators", raising=False)
    err = cells.error(
        GREET + 'evaluations({dataset = {{inputs = {}}}, evaluators = {{type = "contains", value = "x"}}})'
    )
    assert err.ename == "EvaluationError"
    assert err.evalue.endswith(
        "evaluations: cannot import pydantic_evals.evaluators: pip install 'tactus-kernel[agents]'"
    )


def test_an_interrupted_evaluation_leaves_the_kernel_and_its_record_alone(kernel, tmp_path):
    cell = """procedure({name = "spin", params = {forever = {type = "boolean", default = false}}}, function()
  Step.run("start", function() return 1 end)
  if params.forever then
    File.write("spinning.txt", "yes")
    while true do end
  end
  return {done = true}
end)
evaluations({dataset = {{name = "forever", inputs = {forever = true}}},
  evaluators = {{type = "state_check", field = "x"}}})"""
    assert kernel.execute(cell, cell_id="spin").status == "ok"
    shown = kernel.execute("%tactus show spin").of_type("display_data")[0]["content"]["data"]["text/plain"]
    assert "start" in shown
    run = kernel.submit("%tactus eval spin")
    kernel.wait_until(lambda: (tmp_path / "spinning.txt").exists(), timeout=60)
    kernel.interrupt()
    kernel.wait(run, timeout=20)
    assert run.errors[0]["ename"] == "KeyboardInterrupt"
    assert kernel.execute("1 + 1").result == "2"
    after = kernel.execute("%tactus show spin").of_type("display_data")[0]["content"]["data"]["text/plain"]
    assert after == shown


def test_evaluations_register_when_the_procedure_needs_params_the_cell_did_not_give(cells):
    # the procedure is declared, not run (the cell says how to run it), and
    # the evaluations after it still register
    cells(
        'procedure({name = "hi", params = {name = {type = "string", required = true}}},\n'
        '  function() return {greeting = "Hello, " .. params.name} end)\n'
        'evaluations({dataset = {{name = "ada", inputs = {name = "Ada"}}},\n'
        '  evaluators = {{type = "contains", field = "greeting", value = "Ada"}}})',
        key="hi",
    )
    said = cells.host.stdout + cells.host.stderr
    assert "procedure 'hi' is declared, not run: it needs the param name (string)" in said
    result = asyncio.run(run_suite(cells.runtime, "hi"))
    assert result.summary() == "evaluations of 'hi': 1 case(s) x 1 run(s): 1 of 1 passed, success rate 100%"
