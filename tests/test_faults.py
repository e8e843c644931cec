"""Faults a real kernel must survive (issue 8, "Hardening").

A kernel killed mid-procedure, the ``tactus`` comm closed while a cell
waits, widget clicks that reach a kernel which no longer knows the widget,
two replays at once, and interrupts of tight Lua loops inside a
``Step.run`` callback and inside an agent's tool. Each test drives real
kernels over jupyter_client, as a browser or the replay CLI does.

Side effects are lines appended to a file in the notebook folder (the
kernel's cwd): a step whose body runs twice shows as a line written twice.
While Lua spins in a tight loop the kernel sends nothing (its event loop is
not running), so the tests wait for those lines, not for printed output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager
from replay_helpers import GREET, RELEASE, Cell, click, load, record_notebook, steps, type_answer

from tactus_kernel import testing as kernel_driver
from tactus_kernel.testing import CellRun, KernelDriver

TIMEOUT = 60  # generous: two cores shared with other test runs

# Appends a line to journal.txt in the notebook folder and returns it.
NOTE = """
function note(line)
  local old = File.exists("journal.txt") and File.read("journal.txt") or ""
  File.write("journal.txt", old .. line .. "\\n")
  return line
end
"""

JOURNAL = (
    NOTE
    + """
procedure({name = "journal"}, function()
  Step.run("one", function() return note("one") end)
  Step.run("two", function() return note("two") end)
  local ok = Human.approve({message = "Carry on?"})
  Step.run("three", function() return note("three") end)
  return {ok = ok, lines = #File.read("journal.txt")}
end)
"""
)

LATER = 'procedure({name = "later"}, function() return {v = Step.run("v", function() return 1 end)} end)'

SHIP = """
procedure({name = "ship"}, function()
  local ok = Human.approve({message = "Deploy v2 to prod?"})
  return {ok = ok}
end)
"""


def journal(folder: Path) -> list[str]:
    path = folder / "journal.txt"
    return path.read_text().splitlines() if path.exists() else []


def wait_for_line(kernel: KernelDriver, folder: Path, line: str) -> None:
    kernel.wait_until(lambda: line in journal(folder), TIMEOUT)


def wait_for_button(kernel: KernelDriver, label: str) -> str:
    kernel.wait_until(
        lambda: kernel.widgets_where(_model_name="ButtonModel", description=label, disabled=False), TIMEOUT
    )
    return kernel.button(label)


def checkpoints(kernel: KernelDriver, key: str, start: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    record = kernel.recorded_procedures(start).get(key, {})
    return [(c["kind"], c["name"]) for c in record.get("checkpoints", [])]


def tail(path: Path, start: int) -> str:
    """What a log file got after byte `start`."""
    with path.open("rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", "replace")


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KernelDriver, Path]]:
    """A kernel whose own log (its stderr: where ``self.log`` writes, the
    Jupyter server's console in real life) goes to a file."""
    log_path = tmp_path / "kernel.log"
    log = log_path.open("ab")

    class LoggedKernelManager(KernelManager):
        def start_kernel(self, **kw: Any) -> None:
            kw.setdefault("stderr", log)
            kw.setdefault("stdout", log)
            super().start_kernel(**kw)

    monkeypatch.setattr(kernel_driver, "KernelManager", LoggedKernelManager)
    driver = KernelDriver(tmp_path)
    try:
        yield driver, log_path
    finally:
        driver.shutdown()
        log.close()


def every_message(kernel: KernelDriver, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Keep every IOPub message from now on, not only the pending cells'."""
    seen: list[dict[str, Any]] = []
    route = kernel._route

    def keep(msg: dict[str, Any]) -> None:
        seen.append(msg)
        route(msg)

    monkeypatch.setattr(kernel, "_route", keep)
    return seen


# ------------------------------------------------------------ hard kill
def test_a_killed_kernel_resumes_from_the_saved_records_without_redoing_side_effects(kernel, tmp_path):
    """The kernel can die at any moment (OOM killer, a crash, a laptop lid):
    what the frontend saved from the comm must be enough for a new kernel to
    replay the finished steps (without running their side effects again) and
    to carry on from the first unanswered request to the end."""
    kernel.open_tactus(None)
    run = kernel.submit(JOURNAL, cell_id="j1")
    wait_for_button(kernel, "Approve")
    kernel.wait_until(lambda: checkpoints(kernel, "journal") == [("step", "one"), ("step", "two")], TIMEOUT)
    saved = {"version": 1, "procedures": kernel.recorded_procedures()}
    assert journal(tmp_path) == ["one", "two"]

    os.kill(kernel.km.provisioner.pid, signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT
    while kernel.km.is_alive():
        assert time.monotonic() < deadline, "the kernel survived SIGKILL"
        time.sleep(0.05)
    assert run.reply is None  # the cell never finished

    fresh = KernelDriver(tmp_path)
    try:
        fresh.open_tactus(saved)
        again = fresh.submit(JOURNAL, cell_id="j1")
        approve = wait_for_button(fresh, "Approve")
        assert journal(tmp_path) == ["one", "two"]  # replayed, not re-run
        fresh.click(approve)
        fresh.wait(again, TIMEOUT)
        assert again.status == "ok", again.errors
        assert again.result == "{lines = 14, ok = true}"
        assert journal(tmp_path) == ["one", "two", "three"]
        fresh.wait_until(
            lambda: fresh.recorded_procedures(saved["procedures"])["journal"]["status"] == "completed", TIMEOUT
        )
        record = fresh.recorded_procedures(saved["procedures"])["journal"]
        assert [(c["kind"], c["name"]) for c in record["checkpoints"]] == [
            ("step", "one"),
            ("step", "two"),
            ("human", "Carry on?"),
            ("step", "three"),
        ]
        assert record["checkpoints"][:2] == saved["procedures"]["journal"]["checkpoints"]  # kept as saved
        assert record["checkpoints"][2]["value"] is True
    finally:
        fresh.shutdown()


# ---------------------------------------------------------- comm closed
def test_closing_the_records_comm_mid_run_loses_nothing_and_breaks_nothing(logged, tmp_path, monkeypatch):
    """A page closed or reloaded while a procedure waits closes the comm
    under the running cell. The card's click must still finish the run with
    no traceback anywhere, the kernel keeps working, says that checkpoints
    are no longer saved, and hands every record over when a frontend opens
    the comm again (so the answer given meanwhile reaches the notebook)."""
    kernel, log = logged
    seen = every_message(kernel, monkeypatch)
    comm_id = kernel.open_tactus(None)
    run = kernel.submit(JOURNAL, cell_id="j1")
    approve = wait_for_button(kernel, "Approve")
    kernel.wait_until(lambda: checkpoints(kernel, "journal") == [("step", "one"), ("step", "two")], TIMEOUT)
    saved = kernel.recorded_procedures()

    kernel.send_comm("comm_close", {"comm_id": comm_id, "data": {}})
    kernel.click(approve)
    kernel.wait(run, TIMEOUT)
    assert run.status == "ok", run.errors
    assert run.result == "{lines = 14, ok = true}"
    assert journal(tmp_path) == ["one", "two", "three"]
    assert kernel.execute("x = 1").status == "ok"
    assert kernel.execute("x + 1").result == "2"
    # nothing recorded after the close went out on the closed comm
    assert ("human", "Carry on?") not in checkpoints(kernel, "journal")
    # the next procedure cell says where its checkpoints go
    later = kernel.execute(LATER, cell_id="s1")
    assert later.status == "ok", later.errors
    assert "will not be saved into the notebook" in later.stderr

    # a reloaded page opens the comm again with what the notebook had saved
    reopened = kernel.open_tactus({"version": 1, "procedures": saved})
    kernel.wait_until(
        lambda: any(m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == reopened for m in kernel.comm_msgs),
        TIMEOUT,
    )
    [update] = [
        m["content"]["data"]
        for m in kernel.comm_msgs
        if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == reopened
    ]
    assert update["op"] == "update"
    record = update["procedures"]["journal"]
    assert record["status"] == "completed"
    assert [(c["kind"], c["name"]) for c in record["checkpoints"]] == [
        ("step", "one"),
        ("step", "two"),
        ("human", "Carry on?"),
        ("step", "three"),
    ]
    assert update["procedures"]["later"]["status"] == "completed"  # recorded while no frontend listened

    assert not [m for m in seen if m["msg_type"] == "error"]
    streams = "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream")
    assert "Traceback" not in streams
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text


# -------------------------------------------------------- stale widgets
def test_double_click_and_clicks_on_widgets_from_before_a_restart_are_ignored(logged, tmp_path):
    """A double click must answer once. After a restart the page still shows
    the old card: a click on it reaches a kernel that never made that
    widget. It must not answer anything (not even a new card of the re-run
    cell), must not kill or confuse the kernel, and leaves one clear line in
    the kernel log."""
    kernel, log = logged
    kernel.open_tactus(None)
    run = kernel.submit(SHIP, cell_id="c1")
    old_approve = wait_for_button(kernel, "Approve")
    kernel.click(old_approve)
    kernel.click(old_approve)
    kernel.wait(run, TIMEOUT)
    assert run.status == "ok" and run.result == "{ok = true}"
    kernel.wait_until(lambda: kernel.recorded_procedures().get("ship", {}).get("status") == "completed", TIMEOUT)
    saved = kernel.recorded_procedures()
    assert [c["value"] for c in saved["ship"]["checkpoints"]] == [True]  # one answer for two clicks

    kernel.restart(timeout=TIMEOUT)
    kernel.open_tactus({"version": 1, "procedures": saved})
    # a new, unrecorded question is waiting when the stale click arrives
    waiting = kernel.submit(SHIP.replace("ship", "ship2").replace("v2", "v3"), cell_id="c2")
    new_reject = wait_for_button(kernel, "Reject")
    assert new_reject != old_approve
    start = log.stat().st_size
    kernel.click(old_approve)
    note = (
        f"Tactus: ignored a message for widget {old_approve}, which this kernel does not know "
        "(a widget from before a kernel restart?); re-run its cell to get a live one"
    )
    kernel.wait_until(lambda: note in tail(log, start), TIMEOUT)
    kernel.drain(0.3)
    assert waiting.reply is None  # the stale click answered nothing
    assert checkpoints(kernel, "ship2") == []
    assert checkpoints(kernel, "ship", saved) == [("human", "Deploy v2 to prod?")]
    kernel.click(new_reject)
    kernel.wait(waiting, TIMEOUT)
    assert waiting.result == "{ok = false}"

    assert kernel.execute("1 + 1").result == "2"
    replayed = kernel.execute(SHIP, cell_id="c1")  # the saved answer is untouched
    assert replayed.result == "{ok = true}"
    text = tail(log, start)
    assert text.count("ignored a message for widget") == 1
    assert "No such comm" not in text and "Traceback" not in text


# ------------------------------------------------------ parallel replays
def replay_cmd(notebook: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tactus_kernel", "replay", str(notebook), "-o", str(out)]


def comparable(path: Path) -> dict[str, Any]:
    """A replayed notebook without what differs from run to run (timings,
    the times of the run's own events)."""
    nb = load(path)
    cells = []
    for cell in nb["cells"]:
        outs: list[tuple[Any, ...]] = []
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                outs.append((out["name"], "".join(out["text"])))
            elif out["output_type"] == "error":
                outs.append(("error", out["ename"], out["evalue"]))
            else:
                outs.append((out["output_type"], "".join(out["data"].get("text/plain", ""))))
        cells.append((cell["id"], cell.get("execution_count"), outs))
    procedures = {
        key: {k: v for k, v in rec.items() if k != "events"}
        for key, rec in nb["metadata"]["tactus"]["procedures"].items()
    }
    return {"cells": cells, "procedures": procedures}


def test_two_notebooks_replay_in_parallel_as_they_do_one_after_the_other(tmp_path):
    """CI runs notebooks side by side: two replays at once (two kernels, two
    replay clients, one machine) must neither block nor mix each other's
    checkpoints, and give what each gives alone."""
    greet = tmp_path / "greet" / "greet.ipynb"
    release = tmp_path / "release" / "release.ipynb"
    greet.parent.mkdir()
    release.parent.mkdir()
    params = Cell('greeting = "hello"', tags=["parameters"])
    record_notebook(greet, [params, Cell(GREET, interact=steps(type_answer("Ada"), click("Approve")))])
    record_notebook(release, [params, RELEASE, Cell(SHIP, interact=click("Reject"))])

    sequential = {}
    for nb in (greet, release):
        out = nb.with_name("alone.ipynb")
        done = subprocess.run(replay_cmd(nb, out), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        sequential[nb] = comparable(out)

    procs = {
        nb: subprocess.Popen(
            replay_cmd(nb, nb.with_name("together.ipynb")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for nb in (greet, release)
    }
    try:
        results = {nb: p.communicate(timeout=120) for nb, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for nb, p in procs.items():
        assert p.returncode == 0, results[nb][1]
        assert comparable(nb.with_name("together.ipynb")) == sequential[nb]

    # and what they hold is each notebook's own
    greet_out = sequential[greet]
    assert set(greet_out["procedures"]) == {"greet"}
    assert greet_out["procedures"]["greet"]["output"] == {"text": "hello, Ada", "sent": True}
    release_out = sequential[release]
    assert set(release_out["procedures"]) == {"release", "ship"}
    assert release_out["procedures"]["ship"]["output"] == {"ok": False}
    assert release_out["procedures"]["release"]["output"]["passed"] == 3


# ----------------------------------------------------------- interrupts
SPIN_STEP = (
    NOTE
    + """
procedure({name = "spin"}, function()
  local a = Step.run("a", function() return note("a") end)
  local b = Step.run("b", function() return note("b") end)
  local c = Step.run("loop", function() note("looping"); while spin do end; return 3 end)
  return {a = a, b = b, c = c}
end)
"""
)


def assert_interrupted(run: CellRun) -> None:
    assert run.status == "error"
    assert run.reply is not None and run.reply["content"]["ename"] == "KeyboardInterrupt"
    assert [e["ename"] for e in run.errors] == ["KeyboardInterrupt"]
    # and says which line of the cell was running (the loop: `while spin do end`)
    assert re.fullmatch(r"interrupted by the user at \[cell \d+\]:\d+", run.errors[0]["evalue"]), run.errors
    # the error belongs to the cell that ran the loop
    [error] = run.of_type("error")
    assert error["parent_header"]["msg_id"] == run.msg_id


def assert_stopped_record(kernel: KernelDriver, key: str) -> None:
    """The saved record says the run was interrupted, and its timeline has
    nothing left "running" (a notebook saved now must not show a live run)."""
    kernel.wait_until(lambda: kernel.recorded_procedures()[key].get("status") == "interrupted", TIMEOUT)
    events = kernel.recorded_procedures()[key]["events"]
    assert events[0]["state"] == "cancelled"
    assert not [e for e in events if e["state"] in ("running", "waiting")], events


def spin_then_interrupt(
    kernel: KernelDriver, tmp_path: Path, code: str, cell_id: str, line: str, key: str, kept: list[tuple[str, str]]
) -> None:
    """Run `code` until it writes `line` and spins, interrupt it, and check
    the interrupt's error, the checkpoints kept and the closed record."""
    kernel.open_tactus(None)
    assert kernel.execute("spin = true").status == "ok"
    run = kernel.submit(code, cell_id=cell_id)
    wait_for_line(kernel, tmp_path, line)
    t0 = time.monotonic()
    kernel.interrupt()
    kernel.wait(run, TIMEOUT)
    assert time.monotonic() - t0 < 10
    assert_interrupted(run)
    kernel.wait_until(lambda: checkpoints(kernel, key) == kept, TIMEOUT)
    assert_stopped_record(kernel, key)


def test_interrupt_stops_an_infinite_loop_inside_a_step_and_keeps_earlier_checkpoints(kernel, tmp_path):
    """A step callback that never returns must yield to Interrupt: the cell
    ends with KeyboardInterrupt, the steps finished before it stay recorded
    (and are sent to the notebook), and a re-run replays them instead of
    running them again."""
    spin_then_interrupt(kernel, tmp_path, SPIN_STEP, "s1", "looping", "spin", [("step", "a"), ("step", "b")])

    assert kernel.execute("1 + 1").result == "2"
    assert kernel.execute("spin = false").status == "ok"
    again = kernel.execute(SPIN_STEP, cell_id="s1", timeout=TIMEOUT)
    assert again.status == "ok", again.errors
    assert again.result == '{a = "a", b = "b", c = 3}'
    assert journal(tmp_path) == ["a", "b", "looping", "looping"]  # a and b ran once
    kernel.wait_until(lambda: checkpoints(kernel, "spin") == [("step", "a"), ("step", "b"), ("step", "loop")], TIMEOUT)


SPIN_TOOL = (
    NOTE
    + """
tool("burn", {description = "Works forever", params = {}}, function(args)
  note("burning")
  while spin do end
  return {burnt = true}
end)
agent("worker", {model = "test", tools = {"burn"}, mock = {responses = {{tool = "burn", args = {}}, "all done"}}})
procedure({name = "agentic"}, function()
  local before = Step.run("before", function() return note("before") end)
  local r = Worker.turn({inject = "Go"})
  return {before = before, said = r.data, burnt = Tool.called("burn")}
end)
"""
)


def test_interrupt_stops_an_infinite_loop_in_a_tool_during_an_agent_turn(kernel, tmp_path):
    """A Lua tool runs in its own coroutine, called from pydantic-ai's turn
    in Python: an interrupt must reach it there too, end the cell with
    KeyboardInterrupt, keep what was recorded before the turn, record no
    half-finished turn, and leave the kernel (and its agents) working."""
    spin_then_interrupt(kernel, tmp_path, SPIN_TOOL, "a1", "burning", "agentic", [("step", "before")])

    assert kernel.execute("1 + 1").result == "2"
    assert kernel.execute("spin = false").status == "ok"
    again = kernel.execute(SPIN_TOOL, cell_id="a1", timeout=TIMEOUT)
    assert again.status == "ok", again.errors
    assert again.result == '{before = "before", burnt = true, said = "all done"}'
    assert journal(tmp_path) == ["before", "burning", "burning"]  # the step ran once
    kernel.wait_until(lambda: checkpoints(kernel, "agentic") == [("step", "before"), ("agent", "worker")], TIMEOUT)
