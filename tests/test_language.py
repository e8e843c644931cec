"""The procedure language on an in-process runtime (no Jupyter involved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DEPLOY = """
procedure({
  name = "deploy",
  params = {env = {type = "string", enum = {"staging", "prod"}, default = "staging"},
            replicas = {type = "integer", default = 2}},
  outputs = {status = {type = "string", required = true}, replicas = {type = "integer"}},
}, function()
  local built = Step.run("build", function() print("building"); return {image = "app:1"} end)
  return {status = "deployed " .. built.image .. " to " .. params.env, replicas = params.replicas, debug = "x"}
end)
"""


def test_trailing_expression_is_the_result(cells):
    assert cells("1 + 2") == [3]
    assert cells("local x = 20\nx * 2 + 2") == [42]
    assert cells("x = 1") == []
    assert cells("return 1, 'a'") == [1, "a"]


def test_the_trailing_expression_is_found_past_block_ends_and_keywords(cells):
    # lines that begin with end, return, local, ... cannot begin an
    # expression and are skipped; one that begins an expression is still
    # found above them, and words that merely start so are not keywords
    assert cells("t = {}\nfunction t.f()\n  return 5\nend\nt.f()") == [5]
    assert cells("endpoint, returned = 2, 3\nendpoint * returned") == [6]
    assert cells("local y = 1\nnot (y == 2)") == [True]
    assert cells("show = function(v) return v end\nshow(\n  {1, 2}\n)") == [[1, 2]]
    assert cells("do\n  z = 1\nend") == []


def test_a_line_inside_a_block_is_not_turned_into_a_return(cells):
    cells("n = 0\nfor i = 1, 3 do\n  n = n + i\nend")
    assert cells("n") == [6]


def test_globals_persist_between_cells(cells):
    cells("greeting = 'hello'\nfunction shout(s) return s:upper() .. '!' end")
    assert cells("shout(greeting)") == ["HELLO!"]


def test_tables_show_as_python_values(cells):
    assert cells("{a = 1, b = {1, 2, 'x'}}") == [{"a": 1, "b": [1, 2, "x"]}]


def test_print_and_log(cells):
    cells('print("a", 1, nil, true)\nLog.info("started")\nLog.warn("careful", {n = 3})')
    assert cells.host.stdout == "a\t1\tnil\ttrue\n[INFO] started\n"
    assert cells.host.stderr == '[WARN] careful {"n": 3}\n'


def test_syntax_error_names_the_cell_and_line(cells):
    err = cells.error("x = 1\ny = = 2")
    assert err.ename == "LuaSyntaxError"
    assert err.evalue.startswith("[cell 1]:2:")


def test_runtime_error_has_a_lua_traceback(cells):
    err = cells.error("local function inner() error('boom') end\nlocal function outer() inner() end\nouter()")
    assert err.ename == "LuaError"
    assert err.evalue == "[cell 1]:1: boom"
    tb = "\n".join(err.traceback)
    assert "in local 'inner'" in tb or "in upvalue 'inner'" in tb
    assert "[tactus" not in tb


def test_procedure_runs_with_defaults_and_strips_undeclared_outputs(cells):
    assert cells(DEPLOY) == [{"status": "deployed app:1 to staging", "replicas": 2}]
    assert cells.host.stdout == "building\n"
    rec = cells.runtime.records.procedures["deploy"]
    assert rec["status"] == "completed"
    assert [(c["kind"], c["name"], c["value"]) for c in rec["checkpoints"]] == [("step", "build", {"image": "app:1"})]


def test_rerunning_a_cell_replays_its_steps(cells):
    cells(DEPLOY)
    cells(DEPLOY)
    assert cells.host.stdout.count("building") == 1


def test_reset_starts_fresh(cells):
    cells(DEPLOY)
    cells.runtime.reset(["deploy"])
    cells(DEPLOY)
    assert cells.host.stdout.count("building") == 2


def test_procedure_run_with_params(cells):
    cells(DEPLOY)
    assert cells('Procedure.run("deploy", {env = "prod", replicas = 3})') == [
        {"status": "deployed app:1 to prod", "replicas": 3}
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{env = "dev"}', "param 'env' must be one of 'staging', 'prod', got 'dev'"),
        ('{replicas = "many"}', "param 'replicas' must be integer, got string 'many'"),
        ('{envv = "prod"}', "unknown param 'envv'"),
    ],
)
def test_bad_params_are_clear_errors_and_nothing_runs(cells, params, message):
    cells(DEPLOY)
    before = cells.host.stdout
    err = cells.error(f'Procedure.run("deploy", {params})')
    assert err.ename == "ParamError"
    assert message in err.evalue
    assert err.evalue.startswith("[cell 2]:1:")
    assert cells.host.stdout == before


def test_required_param_missing(cells):
    # the cell declares it (it cannot run without its param); a run without the param fails
    assert (
        cells('procedure({name = "hi", params = {who = {type = "string", required = true}}}, function() return 1 end)')
        == []
    )
    assert "procedure 'hi' is declared, not run: it needs the param who (string)" in cells.host.stdout
    err = cells.error('Procedure.run("hi")', key="c2")
    assert err.ename == "ParamError"
    assert "required param 'who' is missing" in err.evalue
    assert cells('Procedure.run("hi", {who = "Ada"})', key="c2") == [1]


def test_invalid_output_is_an_output_error(cells):
    code = 'procedure({outputs = {n = {type = "number", required = true}}}, function() return {n = "x"} end)'
    err = cells.error(code)
    assert err.ename == "OutputError"
    assert "output 'n' must be number" in err.evalue


@pytest.mark.parametrize(
    "returned",
    [
        pytest.param("{other = 1}", id="without-it"),
        pytest.param("nil", id="nothing"),
        pytest.param("{status = nil}", id="nil-value"),
    ],
)
def test_a_missing_required_output_is_an_output_error(cells, returned):
    code = (
        'procedure({name = "deploy", outputs = {status = {type = "string", required = true},'
        f' note = {{type = "string"}}}}}}, function() return {returned} end)'
    )
    err = cells.error(code)
    assert (err.ename, err.evalue) == ("OutputError", "procedure 'deploy': required output 'status' is missing")
    assert cells.runtime.records.procedures["deploy"]["status"] == "failed"
    # the optional output may be missing
    ok = 'procedure({name = "d2", outputs = {status = {type = "string", required = true}, note = {type = "string"}}},'
    assert cells(ok + ' function() return {status = "done"} end)', key="d2") == [{"status": "done"}]


def test_step_value_that_cannot_be_recorded_names_the_step(cells):
    err = cells.error('Step.run("fetch", function() return {cb = print} end)')
    assert err.ename == "NotRecordableError"
    assert "Step 'fetch'" in err.evalue and "the result.cb is a Lua function" in err.evalue


@pytest.mark.parametrize(
    ("lua", "recorded"),
    [
        # small flat tables travel to Python as arguments and back as a list
        # of values (K.step_record, _b_step_replay): the same JSON either way
        ('{b = 1, a = "x", c = true, d = 2.0, e = 0.5}', {"a": "x", "b": 1, "c": True, "d": 2.0, "e": 0.5}),
        ("{n = 1, t = {1, 2}}", {"n": 1, "t": [1, 2]}),
        ("{1, 2, 3}", [1, 2, 3]),
        ("{}", {}),
        ('"plain"', "plain"),
        (
            "(function() local t = {} for i = 1, 100 do t['k' .. i] = i end return t end)()",
            {f"k{i}": i for i in range(1, 101)},
        ),
    ],
)
def test_step_values_record_and_replay_exactly(cells, lua, recorded):
    code = f"""
    local v = Step.run("v", function() return {lua} end)
    if type(v) == "table" then v.mutated = true end  -- the caller's copy, not the record
    return Step.run("v2", function() return {lua} end)
    """
    first = cells(code)
    checkpoints = cells.runtime.records.procedures["cell-a"]["checkpoints"]
    assert [c["value"] for c in checkpoints] == [recorded, recorded]
    assert type(checkpoints[0]["value"]) is type(recorded)
    assert "d" not in recorded or type(checkpoints[0]["value"]["d"]) is float
    assert cells(code) == first  # replayed, from the record
    assert [c["value"] for c in checkpoints] == [recorded, recorded]


@pytest.mark.parametrize(
    ("lua", "says"),
    [
        ("{x = 0/0}", "the result.x is nan"),
        ('{x = "\\255"}', "not valid UTF-8"),
        ("{[1] = 1, x = 2}", "mixing string keys with a number key (1)"),
        ("{[2] = 1}", "sparse array"),
    ],
)
def test_a_flat_looking_value_that_cannot_be_recorded_says_why(cells, lua, says):
    err = cells.error(f'Step.run("bad", function() return {lua} end)')
    assert err.ename == "NotRecordableError", err.evalue
    assert says in err.evalue
    record = cells.runtime.records.procedures.get("cell-a")
    assert record is None or not record["checkpoints"]


def test_checkpoints_recorded_before_an_error_are_kept(cells):
    code = 'Step.run("one", function() return 1 end)\nStep.run("two", function() error("down") end)'
    cells.error(code)
    names = [c["name"] for c in cells.runtime.records.procedures["cell-a"]["checkpoints"]]
    assert names == ["one"]


def test_checkpoint_helpers(cells):
    code = """
    Step.run("a", function() return 1 end)
    Step.run("b", function() return {x = 2} end)
    Step.run("c", function() return 3 end)
    local before = {Checkpoint.exists("b"), Checkpoint.get("b").x, Checkpoint.exists("zz")}
    Checkpoint.clear_after("b")
    return before, Checkpoint.exists("a"), Checkpoint.exists("b"), Checkpoint.exists("c")
    """
    assert cells(code) == [[True, 2, False], True, False, False]
    assert cells('Checkpoint.clear_all()\nreturn Checkpoint.exists("a")', key="cell-a") == [False]


def test_divergence_is_detected(cells):
    cells('Step.run("fetch", function() return 1 end)')
    err = cells.error('Step.run("fetch_v2", function() return 1 end)')
    assert err.ename == "DivergenceError"
    assert "recorded: step 'fetch'" in err.evalue and "now:      step 'fetch_v2'" in err.evalue


def test_removed_step_is_a_divergence_at_the_end(cells):
    cells('Step.run("a", function() return 1 end)\nStep.run("b", function() return 2 end)')
    err = cells.error('Step.run("a", function() return 1 end)')
    assert err.ename == "DivergenceError"
    assert "the end of the procedure" in err.evalue


def test_run_magic_reports_divergence_as_a_cell_error(cells):
    """``%tactus run`` (Runtime.run_procedure) checks the record like a cell does."""
    import asyncio

    from tactus_kernel.engine.errors import CellError

    cells('procedure({name = "p"}, function() Step.run("a", function() return 1 end) end)')
    cells.runtime.records.procedures["p"]["checkpoints"].append(
        {"kind": "step", "name": "extra", "value": 2, "at": "2026-01-01T00:00:00.000Z"}
    )
    with pytest.raises(CellError) as info:
        asyncio.run(cells.runtime.run_procedure("p"))
    assert info.value.ename == "DivergenceError" and "the end of the procedure" in info.value.evalue


def test_allowing_divergence_rerecords(cells):
    cells('Step.run("fetch", function() return 1 end)')
    cells.runtime.allow_divergence = True
    assert cells('Step.run("fetch_v2", function() return 2 end)') == [2]
    names = [c["name"] for c in cells.runtime.records.procedures["cell-a"]["checkpoints"]]
    assert names == ["fetch_v2"]


def test_state(cells):
    code = """
    State.set("n", 1)
    State.increment("n", 4)
    State.append("items", "a")
    State.append("items", "b")
    return State.get("n"), State.get("missing", "dflt"), State.get("items"), State.all().n
    """
    assert cells(code) == [5, "dflt", ["a", "b"], 5]
    assert cells("State.clear()\nreturn State.get('n')") == []


def test_state_is_per_procedure_run(cells):
    cells('State.set("outside", 1)')
    out = cells('procedure(function() return {seen = State.get("outside", "none")} end)')
    assert out == [{"seen": "none"}]


def test_stages(cells):
    code = """
    stages({"plan", "build", "done"})
    Stage.advance()
    Stage.advance()
    return Stage.current(), Stage.is("build"), Stage.history()
    """
    assert cells(code) == ["build", True, ["plan", "build"]]
    err = cells.error('Stage.set("nope")')
    assert "Stage 'nope' is not declared" in err.evalue


def test_iterations_stop_and_tool_records_start_empty(cells):
    assert cells("return Iterations.current(), Iterations.exceeded(1), Stop.requested(), Tool.called('x')") == [
        0,
        False,
        False,
        False,
    ]


def test_json(cells):
    assert cells('Json.encode({a = {1, 2}, b = "é"})') == ['{"a":[1,2],"b":"é"}']
    assert cells('Json.decode(\'{"k": [1, {"z": null}]}\').k[1]') == [1]
    err = cells.error('Json.decode("{oops")')
    assert "Json.decode: invalid JSON" in err.evalue


def test_file_write_takes_text_or_a_number_and_refuses_nil(cells, tmp_path: Path):
    cells('File.write("n.txt", 42)')
    assert (tmp_path / "n.txt").read_text() == "42"
    for data in ("nil", "{}", "true"):
        err = cells.error(f'File.write("x.txt", {data})')
        assert "File.write: argument #2 must be a string" in err.evalue, data
    assert not (tmp_path / "x.txt").exists()


def test_files_are_confined_to_the_notebook_folder(cells, tmp_path: Path):
    cells('File.write("notes/a.txt", "hi")')
    assert (tmp_path / "notes" / "a.txt").read_text() == "hi"
    assert cells('return File.read("notes/a.txt"), File.exists("notes/a.txt"), File.size("notes/a.txt")') == [
        "hi",
        True,
        2,
    ]
    for path in ("/etc/passwd", "../outside.txt", "notes/../../x"):
        err = cells.error(f'File.read("{path}")')
        assert err.ename == "SandboxError", path


def test_retry_with_backoff_records_its_sleeps(cells):
    code = """
    local calls = 0
    local v = Retry.with_backoff(function()
      calls = calls + 1
      if calls < 3 then error("flaky") end
      return calls
    end, {max_attempts = 5, initial_delay = 0.01})
    return v
    """
    assert cells(code) == [3]
    kinds = [c["kind"] for c in cells.runtime.records.procedures["cell-a"]["checkpoints"]]
    assert kinds == ["sleep", "sleep"]


def test_retry_gives_up_with_the_last_error(cells):
    err = cells.error('Retry.with_backoff(function() error("always") end, {max_attempts = 2, initial_delay = 0})')
    assert "gave up after 2 attempts" in err.evalue and "always" in err.evalue


def test_sleep_is_recorded_and_replayed_without_waiting(cells):
    import time

    t0 = time.perf_counter()
    cells("Sleep(0.2)")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    cells("Sleep(0.2)")
    second = time.perf_counter() - t0
    assert first >= 0.2 and second < 0.1


def test_records_are_json(cells):
    cells(DEPLOY)
    snapshot = cells.runtime.records.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["version"] == 1


def test_memory_bomb_is_a_clear_error_and_the_runtime_survives(cells):
    err = cells.error('local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end')
    assert err.ename == "LuaMemoryError"
    assert "memory" in err.evalue
    assert cells("1 + 1") == [2]


def test_deep_recursion_is_a_clear_error(cells):
    err = cells.error("local function f() return f() + 1 end\nf()")
    assert "stack overflow" in err.evalue
    assert cells("1 + 1") == [2]


def test_interrupt_stops_a_tight_loop_even_inside_pcall(cells):
    import threading

    threading.Timer(0.2, cells.runtime.interrupt).start()
    err = cells.error("local n = 0\nwhile true do pcall(function() while true do end end) end")
    assert err.ename == "KeyboardInterrupt"
    assert err.evalue.startswith("interrupted by the user at [") and err.evalue.endswith("]:2"), err.evalue
    assert cells("1 + 1") == [2]


def test_is_complete_follows_the_lua_repl_rule(cells):
    rt = cells.runtime
    assert rt.is_complete("x = 1") == "complete"
    assert rt.is_complete("function f()") == "incomplete"
    assert rt.is_complete("x = = 1") == "invalid"
    assert rt.is_complete("1 +") == "incomplete"


def test_close_variables_are_closed_when_a_cell_fails(cells):
    err = cells.error("""
    local t <close> = setmetatable({}, {__close = function(_, e) print("closed after: " .. tostring(e)) end})
    error("boom")
    """)
    assert err.evalue.endswith("boom")
    assert "closed after: " in cells.host.stdout and "boom" in cells.host.stdout
    cells.host.out.clear()
    err = cells.error(
        """
    procedure({name = "tidy"}, function()
      local t <close> = setmetatable({}, {__close = function() print("procedure closed") end})
      error("inside")
    end)
    """,
        key="tidy",
    )
    assert "procedure closed" in cells.host.stdout


def test_a_close_handler_that_never_ends_can_be_interrupted(cells):
    import threading

    threading.Timer(0.3, cells.runtime.interrupt).start()
    err = cells.error("""
    local t <close> = setmetatable({}, {__close = function() while true do end end})
    error("boom")
    """)
    assert err.evalue.endswith("boom")  # the cell's own error; the interrupt ended the handler
    assert cells("1 + 1") == [2]  # and the kernel goes on
