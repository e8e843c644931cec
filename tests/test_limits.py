"""Run-time limits over a real kernel: ``procedure({timeout = S}, fn)`` and
``TACTUS_PROCEDURE_TIMEOUT`` end a runaway procedure with ProcedureTimeout,
keep its checkpoints, and leave the kernel usable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kernel_driver import KernelDriver


@pytest.fixture
def kernel(tactus_kernel: KernelDriver) -> KernelDriver:
    """A kernel connected as JupyterLab is: the plugin's own fixture (docs/testing.md)."""
    return tactus_kernel


SPIN = """\
procedure({name = "spin", timeout = 1}, function()
  Step.run("prepare", function() print("preparing"); return {ready = true} end)
  local n = 0
  while true do n = n + 1 end
end)"""


def test_a_tight_loop_ends_with_procedure_timeout_and_keeps_its_checkpoints(kernel: KernelDriver):
    t0 = time.monotonic()
    run = kernel.run(SPIN, timeout=30)
    elapsed = time.monotonic() - t0
    assert run.error is not None, run.messages
    assert run.error["ename"] == "ProcedureTimeout"
    assert run.error["evalue"].startswith("procedure 'spin' ran past its time limit of 1s (its timeout) at [cell 1]:4")
    assert "its checkpoints are kept" in run.error["evalue"]
    assert "preparing" in run.stdout
    assert elapsed < 10, elapsed
    kernel.drain(0.3)
    [entry] = kernel.records["spin"]["checkpoints"]
    assert (entry["kind"], entry["name"], entry["value"]) == ("step", "prepare", {"ready": True})
    # the kernel lives on, and a re-run replays the recorded step
    assert kernel.run("1 + 1").result == "2"
    again = kernel.run(SPIN, timeout=30)
    assert again.error is not None and again.error["ename"] == "ProcedureTimeout"
    assert "preparing" not in again.stdout


def test_a_long_sleep_ends_with_procedure_timeout(kernel: KernelDriver):
    t0 = time.monotonic()
    run = kernel.run(
        'procedure({name = "nap", timeout = 0.5}, function()\n  Step.run("before", function() return 1 end)\n'
        "  Sleep(60)\nend)",
        timeout=30,
    )
    elapsed = time.monotonic() - t0
    assert run.error is not None and run.error["ename"] == "ProcedureTimeout", run.messages
    assert run.error["evalue"].startswith("procedure 'nap' ran past its time limit of 0.5s (its timeout) at [cell 1]:3")
    assert elapsed < 10, elapsed
    kernel.drain(0.3)
    assert [c["name"] for c in kernel.records["nap"]["checkpoints"]] == ["before"]  # the sleep never finished
    assert kernel.run("Sleep(0.1)\nlocal x = 1\nx + 1").result == "2"  # the kernel lives on


def test_a_child_procedure_over_its_own_limit(kernel: KernelDriver):
    declared = kernel.run(
        'procedure({name = "inner", timeout = 0.5, params = {s = {type = "number", required = true}}},\n'
        "  function() Sleep(params.s) end)"
    )
    assert "procedure 'inner' is declared, not run" in declared.stdout  # it needs its param
    run = kernel.run('procedure({name = "outer"}, function() return Procedure.run("inner", {s = 30}) end)', timeout=30)
    assert run.error is not None and run.error["ename"] == "ProcedureTimeout", run.messages
    assert run.error["evalue"].startswith(
        "procedure 'inner' (called by 'outer') ran past its time limit of 0.5s (its timeout) at [cell 1]:2"
    )


def test_waiting_for_a_person_does_not_count(kernel: KernelDriver):
    run = kernel.start(
        'procedure({name = "ask", timeout = 1}, function()\n  return Human.approve({message = "Go?"})\nend)'
    )
    card = kernel.card()
    # The card waits longer than the limit (this is the time under test, not a wait for an event)
    time.sleep(1.5)
    card.approve()
    kernel.wait(run)
    assert run.status == "ok", run.errors
    assert run.result == "true"


def test_the_environment_gives_the_default(tmp_path: Path):
    driver = KernelDriver(tmp_path, env={**os.environ, "TACTUS_PROCEDURE_TIMEOUT": "0.5"})
    try:
        driver.open_tactus(None)
        run = driver.run('procedure({name = "loop"}, function() while true do end end)', timeout=30)
        assert run.error is not None and run.error["ename"] == "ProcedureTimeout", run.messages
        assert run.error["evalue"].startswith(
            "procedure 'loop' ran past its time limit of 0.5s (TACTUS_PROCEDURE_TIMEOUT) at [cell 1]:1"
        )
        # a procedure's own timeout wins over the default
        ok = driver.run('procedure({name = "quick", timeout = 30}, function() Sleep(1); return "done" end)')
        assert ok.status == "ok", ok.errors
        assert ok.result == "done"
    finally:
        driver.shutdown()


@pytest.mark.parametrize("value", ['"soon"', "0", "-1", "true", "0/0"])
def test_a_bad_timeout_is_a_param_error_naming_the_field(kernel: KernelDriver, value: str):
    run = kernel.run(f'procedure({{name = "bad", timeout = {value}}}, function() print("ran") end)')
    assert run.error is not None
    assert run.error["ename"] == "ParamError"
    assert "procedure 'bad': timeout must be a number of seconds greater than 0, got" in run.error["evalue"]
    assert "ran" not in run.stdout
    assert kernel.run("1 + 1").result == "2"


def test_pcall_cannot_catch_the_limit(kernel: KernelDriver):
    code = (
        'procedure({name = "stubborn", timeout = 0.5}, function()\n'
        "  while true do\n"
        "    pcall(function() local n = 0; while true do n = n + 1 end end)\n"
        "    pcall(Sleep, 60)\n"
        "  end\nend)"
    )
    run = kernel.run(code, timeout=30)
    assert run.error is not None and run.error["ename"] == "ProcedureTimeout", run.messages
    assert run.error["evalue"].startswith(
        "procedure 'stubborn' ran past its time limit of 0.5s (its timeout) at [cell 1]:3"
    )


def test_a_bad_environment_value_is_a_param_error_naming_the_variable(tmp_path: Path):
    driver = KernelDriver(tmp_path, env={**os.environ, "TACTUS_PROCEDURE_TIMEOUT": "soon"})
    try:
        run = driver.run('procedure({name = "p"}, function() print("ran") end)')
        assert run.error is not None and run.error["ename"] == "ParamError", run.messages
        assert (
            "TACTUS_PROCEDURE_TIMEOUT='soon': must be a number of seconds (0 or empty: no limit)" in run.error["evalue"]
        )
        assert "ran" not in run.stdout
        # a procedure with its own timeout does not need the default
        assert driver.run('procedure({name = "q", timeout = 5}, function() return 1 end)').status == "ok"
    finally:
        driver.shutdown()


def test_an_agent_turn_whose_tool_runs_away(kernel: KernelDriver):
    code = """\
tool("spin", {description = "spins"}, function(args) while true do end end)
agent("bot", {model = "test", tools = {"spin"}})
procedure({name = "think", timeout = 1}, function()
  return Bot.turn().data
end)"""
    run = kernel.run(code, timeout=30)
    assert run.error is not None and run.error["ename"] == "ProcedureTimeout", run.messages
    assert run.error["evalue"].startswith("procedure 'think' ran past its time limit of 1s (its timeout) at [cell 1]:1")
    assert kernel.run("1 + 1").result == "2"
