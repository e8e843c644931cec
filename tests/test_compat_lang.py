"""Reference Tactus (v0.3 to v0.7) language compatibility: the result of a
cell that ends with a call, v0.3 declarations and settings, matchers, the
reference's built-in specification steps, and .tac import / export.

The corpus in tests/compat/language/ (procedures written in the reference's style)
runs as one-cell notebooks through nbclient on the offline model.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import Cells

from tactus_kernel.features.specs.matchers import Matcher, MatcherError, from_plain
from tactus_kernel.features.specs.runner import run_specs
from tactus_kernel.jupyter import tacfile

CORPUS = Path(__file__).parent / "compat" / "language"

GREET = """
procedure({outputs = {greeting = {type = "string", required = true}}}, function()
  return {greeting = "Hello"}
end)
"""
SPECS = """
specifications([[
Feature: Greeting
  Scenario: hello
    Then the output greeting should be "Hello"
]])
"""


# ------------------------------------------------------------ the result bug
@pytest.mark.parametrize(
    "tail",
    [
        SPECS,
        'step("the greeting is kind", function() return true end)',
        'print("declared")',
        SPECS + 'step("the greeting is kind", function() return true end)\nprint("declared")',
    ],
)
def test_a_trailing_call_does_not_hide_the_procedures_result(cells: Cells, tail: str) -> None:
    assert cells(GREET + tail) == [{"greeting": "Hello"}]


def test_a_trailing_value_is_still_the_cells_result(cells: Cells) -> None:
    assert cells(GREET + "\n1 + 2") == [3]


def test_a_trailing_nil_without_a_procedure_shows_nothing(cells: Cells) -> None:
    assert cells('print("hi")') == []
    assert cells("local x = nil\nx") == []


# ------------------------------------------------------ v0.3 declarations
V03 = """
description("Greets someone")
parameter("name", {type = "string", default = "World"})
output("greeting", {type = "string", required = true})
procedure(function()
  return {greeting = "Hello, " .. params.name, extra = 1}
end)
"""


def test_v03_parameter_output_description(cells: Cells) -> None:
    assert cells(V03) == [{"greeting": "Hello, World"}]  # extra: undeclared, stripped
    spec = cells.runtime.procedures["cell-a"]
    assert spec.config["description"] == "Greets someone"
    assert set(spec.params) == {"name"} and set(spec.outputs) == {"greeting"}


def test_v03_declarations_after_the_procedure_apply_to_it(cells: Cells) -> None:
    code = """
procedure(function() return {greeting = "Hi " .. params.name, n = params.n} end)
parameter("name", {type = "string", default = "Ada"})
parameter("n", {type = "integer", default = 2})
output("greeting", {type = "string", required = true})
output({n = {type = "integer", required = true}})
"""
    assert cells(code) == [{"greeting": "Hi Ada", "n": 2}]


def test_an_output_that_breaks_its_declaration_is_an_output_error(cells: Cells) -> None:
    err = cells.error(
        'output("count", {type = "number", required = true})\nprocedure(function() return {count = "three"} end)'
    )
    assert err.ename == "OutputError"
    assert "count" in err.evalue and "number" in err.evalue


def test_pending_declarations_do_not_leak_into_another_cells_procedure(cells: Cells) -> None:
    cells('parameter("stale", {type = "string", default = "x"})', key="cell-1")
    cells("procedure(function() return {ok = true} end)", key="cell-2")
    assert cells.runtime.procedures["cell-2"].params == {}


def test_input_and_output_config_keys_are_params_and_outputs(cells: Cells) -> None:
    code = """
main = procedure("main", {
  input = {x = {type = "number", default = 4}},
  output = {double = {type = "number", required = true}},
}, function(input) return {double = input.x * 2, noise = true} end)
"""
    assert cells(code) == [{"double": 8}]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            'procedure(function() parameter("x", {type = "string"}) end)',
            "parameter: declare it at the top level of a cell, not inside a procedure",
        ),
        ('parameter("a b", {type = "string"})', 'parameter: argument #1 must be a name such as "topic", got a b'),
        (
            'parameter("x", "string")',
            "parameter 'x': argument #2 must be a table such as {type = \"string\"}, got string",
        ),
        ("description(42)", "description: argument #1 must be text, got number"),
        ('max_depth("deep")', "max_depth: expected a positive whole number, got deep"),
        ("max_turns(0)", "max_turns: expected a positive whole number, got 0"),
        ('async("yes")', "async: expected true or false, got yes"),
        ("matches(3)", "matches: expected a regular expression (a string), got number"),
        (
            'matches("(")("x")',
            "MatcherError: matches: '(' is not a valid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
    ],
)
def test_bad_declarations_name_what_is_wrong(cells: Cells, code: str, message: str) -> None:
    err = cells.error(code)
    assert err.ename == "LuaError"
    assert err.evalue == f"[cell 1]:1: {message}"


# ------------------------------------------------------------ settings
RECURSE = """
procedure("down", {params = {n = {type = "number", default = 0}}}, function()
  if params.n <= 0 then return {left = 0} end
  return Procedure.run("down", {n = params.n - 1})
end)
"""


def test_max_depth_bounds_procedures_declared_after_it(cells: Cells) -> None:
    cells("max_depth(2)", key="settings")
    cells(RECURSE)
    assert cells('return Procedure.run("down", {n = 1})', key="c2") == [{"left": 0}]
    err = cells.error('return Procedure.run("down", {n = 5})', key="c3")
    assert err.ename == "ProcedureError"
    assert "procedure 'down': max_depth 2 exceeded (call chain: down > down > down)" in err.evalue


def test_a_procedures_own_max_depth_wins(cells: Cells) -> None:
    cells("max_depth(2)", key="settings")
    cells(RECURSE.replace("{params =", "{max_depth = 9, params ="))
    assert cells.runtime.procedures["down"].config["max_depth"] == 9


def test_max_turns_and_async_land_in_the_config(cells: Cells) -> None:
    cells(GREET + "max_turns(7)\nasync(true)")
    config = cells.runtime.procedures["cell-a"].config
    assert (config["max_turns"], config["async"]) == (7, True)


def test_top_level_max_turns_stops_the_agent(cells: Cells) -> None:
    code = """
max_turns(1)
agent("chatty", {model = "test", mock = {responses = {"one", "two"}}})
procedure(function()
  Chatty.turn()
  Chatty.turn()
  return {}
end)
"""
    err = cells.error(code)
    assert err.ename == "AgentError"
    assert "reached its max_turns (1)" in err.evalue


# ------------------------------------------------------------ matchers
def test_matchers_in_lua(cells: Cells) -> None:
    code = """
local c, e, m = contains("lo W"), equals({1, 2}), matches("^H.*d$")
return {c("Hello World"), c:test("nope"), e({1, 2}), e({2, 1}), m("Hello World"), m(42),
        contains(2)({1, 2, 3}), tostring(c), tostring(m), c.matcher, c.value}
"""
    assert cells(code) == [
        [True, False, True, False, True, False, True, 'contains("lo W")', 'matches("^H.*d$")', "contains", "lo W"]
    ]


def test_a_matcher_is_plain_data_that_python_reads_back(cells: Cells) -> None:
    [plain] = cells('return contains("x")')
    assert plain == {"matcher": "contains", "value": "x"}
    m = from_plain(plain)
    assert m == Matcher("contains", "x") and m.test("axb") and not m.test("ab")
    assert from_plain({"matcher": "nope", "value": 1}) is None
    assert Matcher("matches", r"\d+").test("a1") and not Matcher("matches", r"\d+").test(5)
    assert Matcher("equals", [1]).test([1]) and Matcher("contains", 1).test({"a": 1})
    with pytest.raises(MatcherError, match=r"unknown matcher 'like' \(known: contains, equals, matches\)"):
        Matcher("like", "x")


# ------------------------------------------------------------ spec steps
STEPS_PROC = """
stages({"a", "b", "c"})
tool("lookup", {params = {q = {type = "string"}}}, function(args) State.set("notes", "n") return {} end)
agent("worker", {model = "test", tools = {"lookup", "done"}, system_prompt = "Find the tides at Brest",
  mock = {responses = {{tool = "lookup", args = {q = "tides"}}, {tool = "done", args = {reason = "finished"}}, "ok"}}})
procedure("p", {outputs = {greeting = {type = "string"}, count = {type = "number"}, flag = {type = "boolean"}}},
function()
  Stage.set("a"); Stage.set("b")
  Worker.turn()
  Stage.set("c")
  return {greeting = "Hello Ada", count = 3, flag = true}
end)
"""


def _run_step(cells: Cells, step: str) -> tuple[bool, str]:
    cells(STEPS_PROC)
    cells(
        f'specifications("p", [[\nFeature: F\n  Scenario: S\n    When the procedure runs\n    Then {step}\n]])',
        key="specs",
    )
    report = asyncio.run(run_specs(cells.runtime, "p"))
    [[result]] = report.results.values()
    last = result.steps[-1]
    return last.status == "passed", last.message


@pytest.mark.parametrize(
    "step",
    [
        "the output greeting should exist",
        "the output should contain count",
        "the output greeting should be Hello Ada",
        'the output greeting should be "Hello Ada"',
        "the output count should be 3",
        "the output flag should be True",
        'the output greeting should not be "Hello Bob"',
        'the output greeting should match pattern "^Hello [A-Z]"',
        "the total iterations should be less than 2",
        "the total iterations should be greater than 0",
        "the total iterations should be between 1 and 1",
        "the agent should take at least 1 turn",
        "the stage should transition from a to b",
        "the stage should transition from b to c",
        "the stage is c",
        "we are in stage c",
        "the stage should be c",
        "the done tool should be called at least once",
        "the done tool should be called exactly once",
        "the lookup tool should be called at least 1 time",
        "the lookup tool should be called with q=tides",
        "the stop reason should be finished",
        "the state should contain notes",
        "the state notes should exist",
        "the agent's context should include tides at Brest",
        "the agent context should include Brest",
    ],
)
def test_reference_step_passes(cells: Cells, step: str) -> None:
    assert _run_step(cells, step) == (True, "")


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("the output missing should exist", "the output has no 'missing' (its keys: count, flag, greeting)"),
        ("the output should contain missing", "the output has no 'missing' (its keys: count, flag, greeting)"),
        ('the output greeting should not be "Hello Ada"', "the output 'greeting' is \"Hello Ada\""),
        (
            'the output greeting should match pattern "^Bye"',
            "the output 'greeting' is \"Hello Ada\", which does not match '^Bye'",
        ),
        (
            'the output greeting should match pattern "("',
            "matches: '(' is not a valid regular expression: missing ), unterminated subpattern at position 0",
        ),
        ("the output missing should match pattern x", "the output has no 'missing' (its keys: count, flag, greeting)"),
        ("the total iterations should be less than 1", "the total iterations are 1, expected less than 1"),
        ("the total iterations should be greater than 1", "the total iterations are 1, expected greater than 1"),
        ("the total iterations should be between 2 and 4", "the total iterations are 1, expected between 2 and 4"),
        ("the agent should take at least 2 turns", "the agents took 1 turn(s), expected at least 2"),
        ("the stage should transition from a to c", "the stage did not go from 'a' to 'c' (stages: a -> b -> c)"),
        ("the stage is b", "the stage is 'c', expected 'b'"),
        ("we are in stage a", "the stage is 'c', expected 'a'"),
        (
            "the lookup tool should be called at least twice",
            "the lookup tool was called 1 time(s), expected at least 2",
        ),
        (
            "the lookup tool should be called with q=rain",
            'the lookup tool was called with q = "tides", expected "rain"',
        ),
        ("the search tool should be called with q=rain", "the search tool was not called"),
        ("the stop reason should be timeout", "the stop reason is 'finished', expected 'timeout'"),
        ("the state should contain nothing", "the state has no 'nothing'"),
        ("the agent's context should include Paris", "no agent turn was given 'Paris'"),
    ],
)
def test_reference_step_fails_with_its_message(cells: Cells, step: str, message: str) -> None:
    assert _run_step(cells, step) == (False, message)


def test_the_agent_context_step_without_any_turn(cells: Cells) -> None:
    cells('procedure("p", function() return {} end)')
    cells(
        'specifications("p", [[\nFeature: F\n  Scenario: S\n    Then the agent\'s context should include x\n]])',
        key="s",
    )
    [[result]] = asyncio.run(run_specs(cells.runtime, "p")).results.values()
    assert result.steps[-1].message == "no agent turn was given 'x' (no agent took a turn)"


def test_the_procedure_has_started_lets_params_follow(cells: Cells) -> None:
    cells('procedure("p", {params = {x = {type = "number", default = 1}}}, function() return {x = params.x} end)')
    cells(
        'specifications("p", [[\nFeature: F\n  Scenario: S\n    Given the procedure has started\n'
        "    And the x parameter is 5\n    When the procedure runs\n    Then the output x should be 5\n]])",
        key="s",
    )
    report = asyncio.run(run_specs(cells.runtime, "p"))
    assert report.summary() == "1 scenario(s), 1 run(s): 1 passed, 0 failed"


# ------------------------------------------------------------ import / export
SOURCE = (CORPUS / "05_spec_steps.tac").read_text("utf-8")


def test_split_finds_the_top_level_statements() -> None:
    header, statements = tacfile.split(SOURCE)
    assert header.startswith("-- Tide report: an agent looks the tide up")
    assert [s.call for s in statements] == ["stages", "tool", "agent", "procedure", "specifications"]
    assert [s.declares for s in statements][1:3] == ["lookup", "researcher"]


def test_split_copes_with_blocks_strings_and_comments() -> None:
    code = (
        "x = [==[ end ]] ]==] --[[ ( ]]\nif x then y = 1 elseif z then y = 2 else y = 3 end\n"
        'while false do end\nfor i = 1, 2 do repeat local _ = "\\" end" until true end\n'
        "f(1,\n  2)\n-- about g\nfunction g() return 'function' end\n"
    )
    _, statements = tacfile.split(code)
    assert [s.text.split("\n")[0][:8] for s in statements] == [
        "x = [==[",
        "if x the",
        "while fa",
        "for i = ",
        "f(1,",
        "function",
    ]
    assert statements[-1].comment == "-- about g"
    with pytest.raises(tacfile.TacError, match="the file ends inside a block or bracket"):
        tacfile.split("function f()\n")
    with pytest.raises(tacfile.TacError, match="line 1: a string is not closed"):
        tacfile.split('x = "abc\n')


def test_import_lays_out_the_cells() -> None:
    nb = tacfile.to_notebook((CORPUS / "02_v03_declarations.tac").read_text("utf-8"))
    kinds = [(c.cell_type, c.source.split("\n")[0]) for c in nb.cells]
    assert kinds == [
        ("markdown", "Topic brief, declared the v0.3 way: parameter(), output() and"),
        ("code", 'description("Write a numbered brief about a topic")'),
        ("code", "specifications([["),
    ]
    assert nb.metadata.kernelspec.name == "tactus"
    # v0.3 fields declared before the agents still land in the procedure's cell
    _header, cells = tacfile.cells_of('parameter("x", {type = "string"})\nagent("a", {})\nprocedure(function() end)\n')
    assert [[s.call for s in c] for c in cells] == [["agent"], ["parameter", "procedure"]]
    # a top-level local goes with the statement after it: a local is seen only in its own cell
    _header, cells = tacfile.cells_of('local x = 1\nagent("a", {})\nlocal y = 2\nprocedure(function() end)\nlocal z')
    assert [[s.text for s in c] for c in cells] == [
        ["local x = 1", 'agent("a", {})'],
        ["local y = 2", "procedure(function() end)"],
        ["local z"],
    ]


def test_cli_import(tmp_path: Path) -> None:
    src = tmp_path / "brief.tac"
    src.write_text((CORPUS / "02_v03_declarations.tac").read_text("utf-8"), "utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "tactus_kernel", "import", str(src), "-o", str(tmp_path / "b.ipynb")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Wrote {tmp_path / 'b.ipynb'}\n"
    assert len(nbformat.read(tmp_path / "b.ipynb", as_version=4).cells) == 3
    bad = tmp_path / "bad.tac"
    bad.write_text("procedure(function()\n", "utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "tactus_kernel", "import", str(bad)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert (
        done.stderr
        == f"tactus-kernel import: {bad}: the file ends inside a block or bracket (a missing 'end' or ')')\n"
    )


def test_export_takes_what_the_procedure_uses(cells: Cells, tmp_path: Path) -> None:
    cells('tool("unused", function() return 1 end)', key="k0")
    cells('agent("helper", {model = "test"})\nfunction shout(s) return s:upper() end', key="k1")
    cells("max_depth(4)", key="k2")
    cells('procedure("p", function() Helper.turn() return {v = shout("a")} end)', key="k3")
    cells(
        'specifications("p", [[\nFeature: G\n  Scenario: s\n    Then the greeting is kind\n]])\n'
        'step("x", function() end)',
        key="k4",
    )
    cells('step("the greeting is kind", function() return true end)', key="k5")
    cells('step("an unused step", function() end)', key="k6")
    from tactus_kernel.jupyter.tacfile import export_command

    export_command(cells.runtime, ["p", "out/p.tac"])
    text = (tmp_path / "out" / "p.tac").read_text("utf-8")
    _, statements = tacfile.split(text)
    assert [s.call if s.call != "code" else s.declares for s in statements] == [
        "agent",
        "shout",
        "max_depth",
        "procedure",
        "specifications",
        "step",  # declared in the specifications' cell
        "step",  # used by the specifications
    ]
    assert cells.host.stdout.endswith("Wrote procedure 'p' (7 statements) to out/p.tac\n")
    assert (
        cells.host.stderr
        == "out/p.tac: agent 'helper' has no provider = \"...\": the reference refuses an agent without one\n"
    )


def test_export_refuses_a_path_outside_the_folder_and_an_unknown_name(cells: Cells) -> None:
    from tactus_kernel.engine.errors import CellError
    from tactus_kernel.jupyter.tacfile import export_command

    cells(GREET)
    with pytest.raises(CellError) as info:
        export_command(cells.runtime, ["cell-a", "../x.tac"])
    assert (info.value.ename, info.value.evalue) == (
        "SandboxError",
        "%tactus export: path '../x.tac' leaves the notebook's folder and is refused",
    )
    with pytest.raises(CellError) as info:
        export_command(cells.runtime, ["nope", "x.tac"])
    assert info.value.evalue == "unknown procedure 'nope' (declared: cell-a)"
    with pytest.raises(CellError) as info:
        export_command(cells.runtime, ["cell-a", "x.lua"])
    assert info.value.evalue == "%tactus export NAME FILE.tac"


# ------------------------------------------------------------ through nbclient
def _execute(nb: Any, folder: Path) -> Any:
    from nbclient import NotebookClient

    saved = os.environ.get("TACTUS_OFFLINE")
    os.environ["TACTUS_OFFLINE"] = "1"  # the kernel inherits it; put back after, for the tests that follow
    try:
        NotebookClient(nb, timeout=300, kernel_name="tactus", resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        if saved is None:
            os.environ.pop("TACTUS_OFFLINE", None)
        else:
            os.environ["TACTUS_OFFLINE"] = saved
    return nb


def _text(cell: Any, kind: str) -> str:
    """A cell's execute_result text, or what it wrote to stdout/stderr."""
    out = []
    for o in cell.outputs:
        if o.output_type == "stream" and o.name == kind:
            out.append(o.text)
        elif o.output_type == kind:
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


EXPECTED = {
    "01_result_after_specs.tac": ('{greeting = "Hello, World!"}', "2 scenario(s), 2 run(s): 2 passed, 0 failed"),
    "02_v03_declarations.tac": (
        '{brief = "1. tides point 1\\n2. tides point 2\\n3. tides point 3", count = 3}',
        "2 scenario(s), 2 run(s): 2 passed, 0 failed",
    ),
    "03_settings.tac": ("{depth = 2}", "2 scenario(s), 2 run(s): 2 passed, 0 failed"),
    "04_matchers.tac": (
        "{\n  done = false,\n  greeting = true,\n  listed = true,\n  polite = true,\n"
        '  rule = "contains(\\"please\\")"\n}',
        "1 scenario(s), 1 run(s): 1 passed, 0 failed",
    ),
    "05_spec_steps.tac": ('{answer = "high tide at Brest 06:10"}', "1 scenario(s), 1 run(s): 1 passed, 0 failed"),
}


def test_the_corpus_covers_every_file() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.tac")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_runs_as_one_cell(name: str, tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell((CORPUS / name).read_text("utf-8")),
        nbformat.v4.new_code_cell("%tactus test"),
    ]
    _execute(nb, tmp_path)
    result, summary = EXPECTED[name]
    assert _text(nb.cells[0], "execute_result") == result
    assert _text(nb.cells[1], "stdout").splitlines()[-1] == summary


ROUND_TRIPS = {"04_matchers.tac": 4, "05_spec_steps.tac": 5}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_import_then_export_round_trips(name: str, tmp_path: Path) -> None:
    source = (CORPUS / name).read_text("utf-8")
    nb = tacfile.to_notebook(source)
    # an imported unnamed procedure is keyed by its cell: name it, for a key the export can give
    proc_index = next(i for i, c in enumerate(nb.cells) if "procedure({" in c.source)
    nb.cells[proc_index].source = nb.cells[proc_index].source.replace("procedure({", 'procedure({\n  name = "p",', 1)
    nb.cells.append(nbformat.v4.new_code_cell("%tactus test"))
    nb.cells.append(nbformat.v4.new_code_cell("%tactus export p back.tac"))
    _execute(nb, tmp_path)
    result, summary = EXPECTED[name]
    assert _text(nb.cells[proc_index], "execute_result") == result
    assert _text(nb.cells[-2], "stdout").splitlines()[-1] == summary
    assert _text(nb.cells[-1], "stdout") == f"Wrote procedure 'p' ({ROUND_TRIPS[name]} statements) to back.tac\n"
    back = (tmp_path / "back.tac").read_text("utf-8").replace('\n  name = "p",', "", 1)
    assert [s.text for s in tacfile.split(back)[1]] == [s.text for s in tacfile.split(source)[1]]


def test_export_names_what_the_reference_would_refuse(tmp_path: Path) -> None:
    nb = tacfile.to_notebook(SOURCE.replace("procedure({", 'procedure({\n  name = "p",', 1))
    nb.cells.append(nbformat.v4.new_code_cell("%tactus export p back.tac"))
    _execute(nb, tmp_path)
    # the agent's mock model is this kernel's: the reference wants a provider
    assert _text(nb.cells[-1], "stderr") == (
        "back.tac: agent 'researcher' has no provider = \"...\": the reference refuses an agent without one\n"
    )
