"""Errors are data end to end: every cell error carries a Failure (kind,
message, place, and the fields of its kind), the kernel sends it beside
ename/evalue/traceback (key "tactus"), and the replay classifies and
describes a failure from that data, never from its text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tactus_kernel.engine.errors import Failure
from tactus_kernel.replay.exit_codes import ExitCode
from tactus_kernel.replay.outcome import CellReport, ReplayFailure, ReplayResult
from tactus_kernel.replay.report import describe_failure

CHILD = """
procedure({name = "double", params = {n = {type = "number", default = 1}}}, function()
  return {v = Step.run("mul", function() return params.n * 2 end)}
end)
"""


# ------------------------------------------------------------- in the runtime
def test_a_lua_runtime_error_names_its_cell_and_lines(cells):
    err = cells.error('local function f()\n  error("boom")\nend\nf()')
    assert (err.ename, err.evalue) == ("LuaError", "[cell 1]:2: boom")
    assert err.failure.to_json() == {
        "kind": "LuaError",
        "message": "boom",
        "cell": 1,
        "line": 2,
        "trace": [[1, 2], [1, 4]],
    }


def test_a_divergence_carries_both_calls_and_the_checkpoint(cells):
    cells('Step.run("a", function() return 1 end)', key="k")
    err = cells.error('Step.run("b", function() return 2 end)', key="k")
    assert err.ename == "DivergenceError"
    assert err.evalue.startswith("[cell 2]:1: replay diverged in procedure 'k' at checkpoint #1:\n")
    data = err.failure
    assert (data.kind, data.procedure, data.position, data.divergence) == ("DivergenceError", "k", 1, "call")
    assert data.recorded == {"kind": "step", "name": "a"}
    assert data.asked == {"kind": "step", "name": "b"}
    assert (data.cell, data.line) == (2, 1)


def test_the_end_of_a_procedure_is_a_divergence_too(cells):
    cells('Step.run("a", function() return 1 end)\nStep.run("b", function() return 2 end)', key="k")
    err = cells.error('Step.run("a", function() return 1 end)', key="k")
    data = err.failure
    assert (data.kind, data.position) == ("DivergenceError", 2)
    assert data.recorded == {"kind": "step", "name": "b"} and data.asked == {"kind": "end", "name": ""}


def test_a_params_divergence_is_its_own_divergence_with_both_params(cells):
    cells(CHILD, key="c1")
    cells('return Procedure.run("double", {n = 3}).v', key="c2")
    err = cells.error('return Procedure.run("double", {n = 4}).v', key="c2")
    assert err.ename == "DivergenceError"
    data = err.failure
    assert (data.divergence, data.procedure, data.position) == ("params", "c2", 1)
    assert data.recorded == {"kind": "procedure", "name": "double", "params": {"n": 3}}
    assert data.asked == {"kind": "procedure", "name": "double", "params": {"n": 4}}
    assert "with params" not in data.recorded["name"] and data.asked["name"] == "double"
    assert "  recorded: procedure 'double' with params {\"n\": 3}\n" in err.evalue
    assert "  now:      procedure 'double' with params {\"n\": 4}\n" in err.evalue


def test_a_missing_answer_carries_the_request_and_its_answer_key(cells):
    cells.runtime.batch = True
    err = cells.error('procedure({name = "ship"}, function() return Human.approve({message = "Ship it?"}) end)')
    assert err.ename == "NoRecordedAnswer"
    data = err.failure
    assert (data.kind, data.procedure, data.answer_key) == ("NoRecordedAnswer", "ship", "Ship it?")
    request = {"kind": "approve", "name": "Ship it?", "message": "Ship it?", "text": 'Human.approve "Ship it?"'}
    assert data.request == request
    assert data.message.startswith('procedure "ship": Human.approve "Ship it?" has no recorded answer')


@pytest.mark.parametrize(
    ("call", "field"),
    [('{n = "three"}', "n"), ("{m = 1}", "m")],
)
def test_a_param_error_names_its_field(cells, call: str, field: str):
    cells(CHILD, key="c1")
    err = cells.error(f'Procedure.run("double", {call})', key="c2")
    assert err.ename == "ParamError"
    assert (err.failure.kind, err.failure.field) == ("ParamError", field)
    assert err.failure.procedure is None  # the call has no record of its own: the replay names the caller's


def test_a_failed_child_is_a_procedure_error_whose_cause_is_the_childs(cells):
    cells(
        'procedure({name = "bad", params = {why = {type = "string", required = true}}}, function()\n'
        "  error(params.why)\nend)",
        key="c1",
    )
    err = cells.error('Procedure.run("bad", {why = "no disk"})', key="c2")
    assert err.ename == "ProcedureError"
    data = err.failure
    assert data.procedure == "c2/bad#1"
    assert data.cause is not None and (data.cause.kind, data.cause.message) == ("LuaError", "no disk")


def test_a_cells_own_text_that_looks_like_a_kernel_error_stays_a_lua_error(cells):
    err = cells.error("error(\"DivergenceError: replay diverged in procedure 'x' at checkpoint #3\", 0)")
    assert err.ename == "LuaError"
    assert err.failure.kind == "LuaError" and err.failure.procedure is None and err.failure.position is None


def test_a_failure_survives_json_and_ignores_what_it_does_not_know():
    data = Failure(
        "ProcedureError",
        "procedure 'b' failed: x",
        procedure="c/b#1",
        cause=Failure("LuaError", "x", cell=1, line=2, trace=[[1, 2]]),
    )
    text = json.dumps(data.to_json())
    assert Failure.from_json(json.loads(text)) == data
    assert Failure.from_json({**data.to_json(), "future": 1}) == data
    assert Failure.from_json({"message": "no kind"}) is None and Failure.from_json("text") is None


# ------------------------------------------------------------- over Jupyter
def _data(content: dict[str, Any]) -> dict[str, Any]:
    return content["tactus"]


def test_the_error_reply_and_message_carry_the_failure(kernel):
    kernel.open_tactus(
        {
            "version": 1,
            "procedures": {
                "k": {"checkpoints": [{"kind": "step", "name": "a", "value": 1, "at": "2026-01-01T00:00:00Z"}]}
            },
        },
        replay=True,
    )
    # a Lua runtime error: the same text as before, and its place as data
    run = kernel.execute("local t = nil\nreturn t.x")
    reply = run.reply["content"]
    assert reply["ename"] == "LuaError" and reply["evalue"].startswith("[cell 1]:2: attempt to index a nil value")
    assert _data(reply)["kind"] == "LuaError" and (_data(reply)["cell"], _data(reply)["line"]) == (1, 2)
    assert run.error is not None and _data(run.error) == _data(reply)
    assert run.error["traceback"][0] == f"LuaError: {reply['evalue']}"

    # a divergence
    run = kernel.execute('Step.run("b", function() return 2 end)', cell_id="k")
    data = _data(run.reply["content"])
    assert run.reply["content"]["ename"] == "DivergenceError"
    assert {k: data[k] for k in ("kind", "procedure", "position", "recorded", "asked")} == {
        "kind": "DivergenceError",
        "procedure": "k",
        "position": 1,
        "recorded": {"kind": "step", "name": "a"},
        "asked": {"kind": "step", "name": "b"},
    }
    assert _data(run.error) == data

    # a missing recorded answer (replay mode: fails at once), read through the driver
    run = kernel.execute('procedure({name = "greet"}, function() return Human.input({message = "Name?"}) end)')
    failure = run.failure
    assert failure is not None and failure.to_json() == _data(run.reply["content"])
    assert (failure.kind, failure.procedure, failure.answer_key) == ("NoRecordedAnswer", "greet", "Name?")
    assert failure.request is not None and failure.request["kind"] == "input"
    assert kernel.execute("return 1").failure is None

    # a param error of %tactus run
    kernel.execute('procedure({name = "p", params = {n = {type = "number", required = true}}}, function() end)')
    run = kernel.execute("%tactus run p m=1")
    data = _data(run.reply["content"])
    assert (data["kind"], data["field"]) == ("ParamError", "m")

    # a kernel error with no Lua behind it (a usage error) has its kind and message
    run = kernel.execute("%tactus nope")
    assert _data(run.reply["content"]) == {"kind": "UsageError", "message": "unknown %tactus command 'nope'"}


# ------------------------------------------------------------- the replay report
def _result(failure: ReplayFailure, recorded: dict[str, Any] | None = None) -> ReplayResult:
    return ReplayResult(notebook=None, recorded=recorded, failure=failure)  # type: ignore[arg-type]


CELL = CellReport(index=1, number=2, cell_id="c", source='x = 1\nerror("...")\ny = 2', procedures=["release"])
DECOY = (
    "Divergence: replay diverged in procedure 'decoy' at checkpoint #7:\n  recorded: step 'x'\n  now:      step 'y'\n"
    'procedure "decoy": Human.input "Decoy?" has no recorded answer (pass --answer "decoy=VALUE")'
)


def test_a_decoy_in_an_errors_text_is_not_misread():
    """A Lua error whose text reads like a divergence and a missing answer
    is a failed cell (exit 1), about the cell's own procedure, with the
    excerpt centred on the line the data names."""
    data = Failure("LuaError", DECOY, cell=2, line=2, trace=[[2, 2]])
    failure = ReplayFailure.of_cell(CELL, data, f"[cell 2]:2: {DECOY}", ["LuaError: ...", "stack traceback:"])
    assert (failure.kind, failure.exit_code) == ("error", ExitCode.CELL_ERROR)
    text = describe_failure(_result(failure), "nb.ipynb")
    headline = f'nb.ipynb cell 2, procedure "release": LuaError: [cell 2]:2: {DECOY.splitlines()[0]}'
    assert text.splitlines()[0] == headline
    assert '  > 2 | error("...")' in text.splitlines()
    assert "--allow-divergence" not in text and "Record it" not in text


def test_a_divergence_report_is_built_from_the_data():
    """The table comes from the recorded and asked calls, not from the
    message (which here says something else entirely)."""
    data = Failure(
        "DivergenceError",
        "the message is not read",
        cell=2,
        line=3,
        procedure="release",
        divergence="call",
        position=2,
        recorded={"kind": "step", "name": "test"},
        asked={"kind": "step", "name": "tests"},
    )
    recorded = {
        "procedures": {
            "release": {"checkpoints": [{"kind": "step", "name": "compile"}, {"kind": "step", "name": "test"}]}
        }
    }
    failure = ReplayFailure.of_cell(CELL, data, "[cell 2]:3: the message is not read", [])
    assert (failure.kind, failure.exit_code) == ("divergence", ExitCode.DIVERGENCE)
    lines = describe_failure(_result(failure, recorded), "nb.ipynb").splitlines()
    assert lines[0] == 'nb.ipynb cell 2, procedure "release": replay diverged from the recorded checkpoints'
    assert lines[2].split() == ["1", "step", "'compile'", "step", "'compile'"]
    assert lines[3].split() == ["->", "2", "step", "'test'", "step", "'tests'"]
    assert "  > 3 | y = 2" in lines


def test_a_params_divergence_report_shows_both_params():
    data = Failure(
        "DivergenceError",
        "x",
        procedure="main",
        divergence="params",
        position=1,
        recorded={"kind": "procedure", "name": "double", "params": {"n": 3}},
        asked={"kind": "procedure", "name": "double", "params": {"n": 4}},
    )
    failure = ReplayFailure.of_cell(CELL, data, "x", [])
    row = describe_failure(_result(failure), "nb.ipynb").splitlines()[2]
    assert row.split()[:2] == ["->", "1"]
    assert "procedure 'double' with params {\"n\": 3}" in row and "procedure 'double' with params {\"n\": 4}" in row


def test_a_missing_answer_report_uses_the_answer_key_from_the_data():
    """The --answer key is the request's name as the kernel sent it, though
    the message holds another hint."""
    data = Failure(
        "NoRecordedAnswer",
        DECOY,
        procedure="greet",
        request={"kind": "approve", "name": "confirm", "message": "Ship it?", "text": 'Human.approve "Ship it?"'},
        answer_key="confirm",
    )
    failure = ReplayFailure.of_cell(CELL, data, DECOY, [])
    assert (failure.kind, failure.exit_code) == ("no-answer", ExitCode.NO_ANSWER)
    lines = describe_failure(_result(failure), "nb.ipynb", answer_flag="--tactus-answer").splitlines()
    assert lines[0] == 'nb.ipynb cell 2, procedure "greet": Human.approve "Ship it?" has no recorded answer'
    assert lines[1].endswith("or answer it here with --tactus-answer confirm=VALUE")


def test_a_divergence_in_a_child_shows_the_childs_nested_record():
    data = Failure(
        "DivergenceError",
        "x",
        procedure="main/double#1",
        divergence="call",
        position=2,
        recorded={"kind": "step", "name": "add"},
        asked={"kind": "step", "name": "mul"},
    )
    child = {"checkpoints": [{"kind": "step", "name": "load"}, {"kind": "step", "name": "add"}]}
    recorded = {"procedures": {"main": {"checkpoints": [], "children": {"double#1": child}}}}
    lines = describe_failure(_result(ReplayFailure.of_cell(CELL, data, "x", []), recorded), "nb.ipynb").splitlines()
    assert lines[2].split() == ["1", "step", "'load'", "step", "'load'"]
    assert lines[3].split() == ["->", "2", "step", "'add'", "step", "'mul'"]
