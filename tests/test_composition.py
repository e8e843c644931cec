"""Composition: Procedure.run/spawn/wait/..., guards, dependencies, depth,
nested child records and their replay. In-process first, then a real
kernel where spawned children wait for clicks."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

CHILD = """
Double = procedure({name = "double", params = {n = {type = "number", default = 1}}, outputs = {v = {type = "number"}}},
  function()
    local v = Step.run("mul", function() print("double ran", params.n); return params.n * 2 end)
    return {v = v}
  end)
"""

NAP = """
procedure({name = "nap", params = {s = {type = "number", default = 0}, tag = {type = "string", default = "x"}}},
  function()
    Sleep(params.s)
    Step.run("woke " .. params.tag, function() print("woke", params.tag); return params.tag end)
    return {tag = params.tag}
  end)
"""


def record(cells: Any, key: str) -> dict[str, Any]:
    return cells.runtime.records.procedures[key]


def test_run_from_a_cell_and_from_a_procedure_records_in_the_caller(cells):
    cells(CHILD, key="c1")
    assert cells('return Procedure.run("double", {n = 4}).v', key="c2") == [8]
    cells(
        """
    procedure({name = "main"}, function()
      local a = Procedure.run("double", {n = 3})
      local b = Double({n = 5})          -- a handle call is a composition call too
      return {a = a.v, b = b.v}
    end)""",
        key="c3",
    )
    rec = record(cells, "main")
    assert rec["output"] == {"a": 6, "b": 10}
    calls = [(e["kind"], e["name"], e["value"], e["status"], e["child"], e["params"]) for e in rec["checkpoints"]]
    assert calls == [
        ("procedure", "double", {"v": 6}, "completed", "double#1", {"n": 3}),
        ("procedure", "double", {"v": 10}, "completed", "double#2", {"n": 5}),
    ]
    child = rec["children"]["double#1"]
    assert child["status"] == "completed" and child["params"] == {"n": 3} and child["output"] == {"v": 6}
    assert [(e["kind"], e["name"], e["value"]) for e in child["checkpoints"]] == [("step", "mul", 6)]
    # the cell that called it keeps its own record, nested the same way
    assert record(cells, "c2")["children"]["double#1"]["checkpoints"][0]["value"] == 8
    assert json.loads(json.dumps(cells.runtime.records.snapshot())) == cells.runtime.records.snapshot()


def test_replay_does_not_run_children_again(cells):
    cells(CHILD, key="c1")
    main = """
    procedure({name = "main"}, function()
      local a = Procedure.run("double", {n = 3})
      local h = Procedure.spawn("double", {n = 7})
      return {a = a.v, b = Procedure.wait(h).v}
    end)"""
    assert cells(main, key="c2") == [{"a": 6, "b": 14}]
    ran = cells.host.stdout
    assert ran.count("double ran") == 3  # the cell's own run of double, then 3 and 7
    assert cells(main, key="c2") == [{"a": 6, "b": 14}]
    assert cells.host.stdout == ran  # nothing ran again


def test_a_child_interrupted_halfway_replays_its_own_record(cells):
    cells(CHILD, key="c1")
    cells(
        """
    FLAG = true
    procedure({name = "two_steps"}, function()
      Step.run("first", function() print("first ran"); return 1 end)
      if not FLAG then error("stopped half-way") end
      return {done = Step.run("second", function() print("second ran"); return 2 end)}
    end)""",
        key="c2",
    )
    err = cells.error(
        """
    FLAG = false
    procedure({name = "outer"}, function() return Procedure.run("two_steps") end)""",
        key="c3",
    )
    assert err.ename == "ProcedureError" and "procedure 'two_steps' failed" in err.evalue
    assert "stopped half-way" in err.evalue
    entry = record(cells, "outer")["checkpoints"][0]
    assert entry["status"] == "failed" and "stopped half-way" in entry["error"]
    before = cells.host.stdout.count("first ran")
    cells(
        """
    FLAG = true
    procedure({name = "outer"}, function() return Procedure.run("two_steps") end)""",
        key="c3",
    )
    # the failed call runs again; its own record replays "first" and records "second"
    assert cells.host.stdout.count("first ran") == before
    assert "second ran" in cells.host.stdout
    entry = record(cells, "outer")["checkpoints"][0]
    assert entry["status"] == "completed" and entry["value"] == {"done": 2}
    steps = [e["name"] for e in record(cells, "outer")["children"]["two_steps#1"]["checkpoints"]]
    assert steps == ["first", "second"]


def test_unknown_names_bad_params_and_child_failures_are_catchable(cells):
    cells(CHILD, key="c1")
    cells('procedure({name = "boom"}, function() if RUN_BOOM then error("kaput") end return {} end)', key="c2")
    out = cells(
        """
    RUN_BOOM = true
    local results = {}
    for i, call in ipairs({
      function() return Procedure.run("nope") end,
      function() return Procedure.run("double", {n = "three"}) end,
      function() return Procedure.run("double", {m = 1}) end,
      function() return Procedure.run("boom") end,
      function() return Procedure.spawn(42) end,
    }) do
      local ok, err = pcall(call)
      results[i] = tostring(ok) .. " " .. tostring(err)
    end
    return results""",
        key="c3",
    )[0]
    assert out[0].startswith("false") and "ProcedureError: unknown procedure 'nope'" in out[0]
    assert "declared: boom, double" in out[0]
    assert "ParamError" in out[1] and "param 'n' must be number" in out[1]
    assert "ParamError" in out[2] and "unknown param 'm'" in out[2]
    assert "ProcedureError: procedure 'boom' failed" in out[3] and "kaput" in out[3]
    assert "Procedure.spawn: argument #1 must be a procedure name" in out[4]
    # a bad call records nothing in the caller
    assert [e["name"] for e in record(cells, "c3")["checkpoints"]] == ["boom"]


def test_recursion_within_max_depth_works_and_runaway_recursion_stops(cells):
    cells(
        """
    procedure({name = "fact", params = {n = {type = "integer", default = 1}}, max_depth = 6}, function()
      if params.n <= 1 then return {v = 1} end
      return {v = params.n * Procedure.run("fact", {n = params.n - 1}).v}
    end)""",
        key="c1",
    )
    assert cells('return Procedure.run("fact", {n = 5}).v', key="c2") == [120]
    rec = record(cells, "c2")
    assert list(rec["children"]["fact#1"]["children"]["fact#1"]["children"]) == ["fact#1"]
    cells(
        'procedure({name = "forever"}, function() if GO then return Procedure.run("forever") end return {} end)',
        key="c3",
    )
    err = cells.error('GO = true\nreturn Procedure.run("forever")', key="c4")
    assert err.ename == "ProcedureError"
    assert "max_depth 5 exceeded" in err.evalue
    assert "forever > forever > forever > forever > forever" in err.evalue


def test_guards_stop_before_any_step_with_the_reason(cells):
    code = """
    procedure({name = "deploy", params = {env = {type = "string", default = "staging"}},
               guards = {function() return params.env ~= "prod" or ALLOW_PROD, "prod needs ALLOW_PROD" end}},
      function()
        Step.run("ship", function() print("shipped", params.env); return true end)
        return {ok = true}
      end)"""
    cells(code, key="c1")
    err = cells.error('return Procedure.run("deploy", {env = "prod"})', key="c2")
    assert err.ename == "GuardError"
    assert "guard #1 failed: prod needs ALLOW_PROD" in err.evalue
    assert cells.host.stdout.count("shipped") == 1  # only the cell's own staging run
    assert record(cells, "c2")["children"]["deploy#1"]["checkpoints"] == []
    assert record(cells, "c2")["children"]["deploy#1"]["status"] == "failed"
    assert cells('ALLOW_PROD = true\nreturn Procedure.run("deploy", {env = "prod"}).ok', key="c3") == [True]


def test_dependencies_are_checked_up_front(cells):
    code = """
    procedure({name = "needs", dependencies = {tools = {"lookup"}, procedures = {"helper"}}}, function()
      Step.run("work", function() print("worked"); return 1 end)
      return {}
    end)"""
    err = cells.error(code, key="c1")
    assert err.ename == "DependencyError"
    assert "procedure 'needs' depends on tool 'lookup', which is not declared" in err.evalue
    assert "worked" not in cells.host.stdout
    assert "needs" not in cells.runtime.records.procedures  # nothing ran, nothing recorded
    cells('tool("lookup", {description = "find"}, function(a) return {} end)', key="c2")
    err = cells.error(code, key="c1")
    assert "depends on procedure 'helper', which is not declared" in err.evalue
    cells('procedure({name = "helper"}, function() return {} end)', key="c3")
    cells(code, key="c1")
    assert "worked" in cells.host.stdout
    # a composed call checks them too, with the caller's line
    err = cells.error('procedure({name = "caller", dependencies = {tools = {"ghost"}}}, function() end)', key="c4")
    assert "tool 'ghost'" in err.evalue


def test_spawn_runs_children_concurrently_with_status_and_stage(cells):
    cells(NAP, key="c1")
    cells(
        """
    stages({"napping", "awake"})
    procedure({name = "staged", params = {s = {type = "number", default = 0}}}, function()
      Stage.set("napping")
      Sleep(params.s)
      Stage.set("awake")
      return {}
    end)""",
        key="c2",
    )
    out = cells(
        """
    local slow = Procedure.spawn("staged", {s = 0.4})
    local fast = Procedure.spawn("nap", {s = 0.05, tag = "fast"})
    local mid = Procedure.spawn("nap", {s = 0.2, tag = "mid"})
    Sleep(0.1)
    local s1, stage1 = Procedure.status(slow)
    local first, res, err = Procedure.wait_any({slow, mid, fast})
    local all = Procedure.wait_all({fast, mid})
    local before = Procedure.all_complete({slow, fast})
    Procedure.wait(slow)
    local s2, stage2 = Procedure.status(slow)
    return {s1 = s1, stage1 = stage1, first = first.key, res = res.tag, all = {all[1].tag, all[2].tag},
            before = before, s2 = s2, stage2 = stage2, done = Procedure.is_complete(slow),
            all_done = Procedure.all_complete({slow, fast, mid})}
    """,
        key="c3",
    )[0]
    assert out == {
        "s1": "running",
        "stage1": "napping",
        "first": "c3/nap#1",
        "res": "fast",
        "all": ["fast", "mid"],
        "before": False,
        "s2": "completed",
        "stage2": "awake",
        "done": True,
        "all_done": True,
    }
    waits = [e for e in record(cells, "c3")["checkpoints"] if e["kind"] == "wait"]
    assert [(w["name"], w["value"]) for w in waits] == [
        ("wait_any staged#1, nap#2, nap#1", {"timed_out": False, "index": 3})
    ]


def test_wait_timeout_and_recorded_wait_any_replay_the_same_way(cells):
    cells(NAP, key="c1")
    code = """
    procedure({name = "race"}, function()
      local a = Procedure.spawn("nap", {s = 0.3, tag = "a"})
      local b = Procedure.spawn("nap", {s = 0.05, tag = "b"})
      local r, why = Procedure.wait(a, {timeout = 0.01})
      local first, res = Procedure.wait_any({a, b})
      Procedure.wait_all({a, b})
      return {timed = why, first = res.tag}
    end)"""
    assert cells(code, key="c2") == [{"timed": "timeout", "first": "b"}]
    waits = [(e["name"], e["value"]) for e in record(cells, "race")["checkpoints"] if e["kind"] == "wait"]
    assert waits == [
        ("wait_one nap#1", {"timed_out": True}),
        ("wait_any nap#1, nap#2", {"timed_out": False, "index": 2}),
    ]
    stdout = cells.host.stdout
    assert cells(code, key="c2") == [{"timed": "timeout", "first": "b"}]  # replayed: nothing waits or runs
    assert cells.host.stdout == stdout


def test_cancel_stops_a_child_and_is_recorded(cells):
    cells(NAP, key="c1")
    code = """
    procedure({name = "impatient"}, function()
      local h = Procedure.spawn("nap", {s = 30, tag = "late"})
      Sleep(0.05)
      local was_running = Procedure.cancel(h)
      local again = Procedure.cancel(h)
      local ok, err = pcall(Procedure.wait, h)
      return {was_running = was_running, again = again, status = Procedure.status(h), err = err}
    end)"""
    out = cells(code, key="c2")[0]
    assert out["was_running"] is True and out["again"] is False and out["status"] == "cancelled"
    assert "ProcedureError: procedure 'nap' was cancelled" in out["err"]
    rec = record(cells, "impatient")
    assert rec["checkpoints"][0]["status"] == "cancelled"
    assert rec["children"]["nap#1"]["status"] == "cancelled"
    assert "woke late" not in cells.host.stdout
    # replay: the child stays cancelled without running
    assert cells(code, key="c2")[0]["status"] == "cancelled"


def test_a_spawned_child_nobody_waits_for_still_finishes(cells):
    cells(NAP, key="c1")
    cells(
        """
    procedure({name = "fire_and_forget"}, function()
      Procedure.spawn("nap", {s = 0.1, tag = "orphan"})
      return {}
    end)""",
        key="c2",
    )
    assert "woke\torphan" in cells.host.stdout
    assert record(cells, "fire_and_forget")["checkpoints"][0]["status"] == "completed"


def test_inject_reaches_the_childs_next_agent_turn(cells):
    cells(
        """
    agent("helper", {model = "test", mock = {responses = {"noted"}}})
    procedure({name = "listener"}, function()
      Sleep(0.1)
      local r = Helper.turn()
      return {said = r.data}
    end)""",
        key="c1",
    )
    out = cells(
        """
    local h = Procedure.spawn("listener")
    local delivered = Procedure.inject(h, "Focus on the failing tests")
    local r = Procedure.wait(h)
    return {delivered = delivered, said = r.said, late = Procedure.inject(h, "too late")}
    """,
        key="c2",
    )[0]
    assert out == {"delivered": True, "said": "noted", "late": False}
    turn = record(cells, "c2")["children"]["listener#1"]["checkpoints"][-1]
    assert turn["kind"] == "agent" and turn["request"]["message"] == "Focus on the failing tests"


def test_procedure_names_may_not_contain_a_slash(cells):
    err = cells.error('procedure({name = "a/b"}, function() end)')
    assert err.ename == "ProcedureError" and "must not contain '/'" in err.evalue


# ---------------------------------------------------------------- kernel
TWO_APPROVALS = """
procedure({name = "ask", params = {what = {type = "string", default = "x"}}}, function()
  local ok = Human.approve({message = "Approve " .. params.what .. "?"})
  Step.run("after " .. params.what, function() print("after", params.what, ok) return ok end)
  return {what = params.what, ok = ok}
end)
"""

FAN_OUT = """
procedure({name = "fan"}, function()
  local a = Procedure.spawn("ask", {what = "alpha"})
  local b = Procedure.spawn("ask", {what = "beta"})
  Sleep(0.3)
  print("status", Procedure.status(a), Procedure.status(b))
  local rs = Procedure.wait_all({a, b})
  return {a = rs[1].ok, b = rs[2].ok}
end)
"""


def card_button(kernel: Any, message: str, label: str) -> str:
    """The enabled `label` button of the card asking `message` (cards are VBoxes)."""
    for box in kernel.widgets_where(_model_name="VBoxModel"):
        children = [c.removeprefix("IPY_MODEL_") for c in kernel.widgets[box].get("children", [])]
        texts = " ".join(str(kernel.widgets.get(c, {}).get("value", "")) for c in children)
        if f">{message}<" not in texts:
            continue
        stack = list(children)
        while stack:
            cid = stack.pop()
            st = kernel.widgets.get(cid, {})
            if st.get("_model_name") == "ButtonModel" and st.get("description") == label and not st.get("disabled"):
                return cid
            stack.extend(c.removeprefix("IPY_MODEL_") for c in st.get("children", []))
    raise LookupError(f"no enabled {label!r} on the card {message!r}")


def wait_for_card(kernel: Any, message: str, label: str = "Approve") -> str:
    found: list[str] = []

    def ready() -> bool:
        try:
            found.append(card_button(kernel, message, label))
        except LookupError:
            return False
        return True

    kernel.wait_until(ready, timeout=30)
    return found[-1]


def test_spawned_children_wait_for_humans_at_once_answered_out_of_order(kernel):
    kernel.open_tactus(None)
    kernel.execute('%tactus answer "Approve x?" true')
    assert kernel.execute(TWO_APPROVALS, cell_id="ask").status == "ok"
    run = kernel.submit(FAN_OUT, cell_id="fan")
    beta = wait_for_card(kernel, "Approve beta?")
    alpha = wait_for_card(kernel, "Approve alpha?")
    assert run.reply is None  # both cards wait in the same cell
    kernel.wait_until(lambda: "status" in run.stdout, timeout=10)  # printed while the children wait
    assert "status\twaiting_for_human\twaiting_for_human" in run.stdout
    kernel.click(beta)  # answered out of order
    kernel.wait_until(
        lambda: any(c["message"] == "Approve beta?" and c["answer_text"] == "Approved" for c in kernel.static_cards)
    )
    assert run.reply is None  # alpha still waits
    kernel.click(card_button(kernel, "Approve alpha?", "Reject"))
    kernel.wait(run)
    assert run.status == "ok", run.errors
    assert run.result == "{a = false, b = true}"
    assert "status\twaiting_for_human\twaiting_for_human" in run.stdout
    assert run.stdout.index("after\tbeta\ttrue") < run.stdout.index("after\talpha\tfalse")
    # its Approve button existed while waiting (a widget's comm id: uuid4 hex), and the answer closed it:
    # the card is static now
    assert re.fullmatch(r"[0-9a-f]{32}", alpha), alpha
    kernel.wait_until(lambda: alpha not in kernel.widgets)
    assert [c["answer_text"] for c in kernel.static_cards if c["message"] == "Approve alpha?"] == ["Rejected"]
    kernel.drain(0.3)
    rec = [
        op["procedures"]["fan"] for op in kernel.tactus_ops() if op.get("op") == "update" and "fan" in op["procedures"]
    ][-1]
    answers = {name: child["checkpoints"][0]["value"] for name, child in rec["children"].items()}
    assert answers == {"ask#1": False, "ask#2": True}
    # re-running replays everything: no card, no child runs
    cards = len(kernel.widgets_where(_model_name="ButtonModel", description="Approve"))
    again = kernel.execute(FAN_OUT, cell_id="fan")
    assert again.status == "ok" and again.result == run.result
    assert "after" not in again.stdout
    assert len(kernel.widgets_where(_model_name="ButtonModel", description="Approve")) == cards


def test_cancelling_a_child_closes_its_waiting_card(kernel):
    kernel.open_tactus(None)
    kernel.execute('%tactus answer "Approve x?" true')
    assert kernel.execute(TWO_APPROVALS, cell_id="ask").status == "ok"
    code = """
    local h = Procedure.spawn("ask", {what = "gamma"})
    Sleep(0.5)
    print("before", Procedure.status(h))
    print("cancelled", Procedure.cancel(h), Procedure.status(h))
    """
    run = kernel.submit(code, cell_id="canceller")
    wait_for_card(kernel, "Approve gamma?")
    kernel.wait(run)
    assert run.status == "ok", run.errors
    assert "before\twaiting_for_human" in run.stdout and "cancelled\ttrue\tcancelled" in run.stdout
    kernel.wait_until(
        lambda: [c["state"] for c in kernel.static_cards if c["message"] == "Approve gamma?"] == ["stopped"]
    )
    with pytest.raises(LookupError):
        card_button(kernel, "Approve gamma?", "Approve")


def test_errors_name_the_procedure_in_the_kernel(kernel):
    run = kernel.execute('Procedure.run("missing")')
    assert run.errors[0]["ename"] == "ProcedureError"
    assert re.search(r"unknown procedure 'missing'", run.errors[0]["evalue"])


def test_an_interrupt_cancels_waiting_children_and_a_rerun_asks_again(kernel):
    kernel.open_tactus(None)
    kernel.execute('%tactus answer "Approve x?" true')
    assert kernel.execute(TWO_APPROVALS, cell_id="ask").status == "ok"
    code = (
        'local h = Procedure.spawn("ask", {what = "zeta"})\n'
        'local h2 = Procedure.spawn("ask", {what = "eta"})\n'
        "print(Procedure.wait_all({h, h2})[2].ok)"
    )
    run = kernel.submit(code, cell_id="z")
    wait_for_card(kernel, "Approve zeta?")
    wait_for_card(kernel, "Approve eta?")
    kernel.interrupt()
    kernel.wait(run, timeout=20)
    assert run.errors[0]["ename"] == "KeyboardInterrupt"
    kernel.drain(0.3)
    stopped = sorted(c["message"] for c in kernel.static_cards if c["state"] == "stopped")
    assert stopped == ["Approve eta?", "Approve zeta?"]
    rec = [op["procedures"]["z"] for op in kernel.tactus_ops() if op.get("op") == "update" and "z" in op["procedures"]][
        -1
    ]
    assert [e["status"] for e in rec["checkpoints"]] == ["interrupted", "interrupted"]
    assert {c["status"] for c in rec["children"].values()} == {"cancelled"}
    again = kernel.submit(code, cell_id="z")  # interrupted children run again and ask again
    kernel.click(wait_for_card(kernel, "Approve zeta?"))
    kernel.click(wait_for_card(kernel, "Approve eta?", "Reject"))
    kernel.wait(again)
    assert again.status == "ok" and again.stdout.strip().endswith("false")


def test_a_cancelled_child_closes_its_close_variables(cells):
    cells(
        """
    procedure({name = "holder", params = {s = {type = "number", default = 0}}}, function()
      local lock <close> = setmetatable({}, {__close = function() print("lock released") end})
      Sleep(params.s)
    end)
    """,
        key="c1",
    )
    cells.host.out.clear()
    [out] = cells(
        """
    procedure({name = "boss"}, function()
      local h = Procedure.spawn("holder", {s = 30})
      Sleep(0.05)
      Procedure.cancel(h)
      return Procedure.status(h)
    end)
    """,
        key="boss",
    )
    assert out == "cancelled"
    assert "lock released" in cells.host.stdout
