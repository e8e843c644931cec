"""Nothing is lost on a kill, and records do not hold memory for ever
(issue 21, "Data loss"): the flush bound of the records comm, the record
budget, what ``%tactus reset`` gives back."""

from __future__ import annotations

import gc
import json
import os
import signal
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

from kernel_driver import KernelDriver

from tactus_kernel.engine.feature import Observer

# Each step burns ~100 ms in a Lua loop: no yield, so the event loop never runs meanwhile.
COMPUTE = """
procedure({name = "crunch"}, function()
  for i = 1, 8 do
    Step.run("s" .. i, function()
      print("run " .. i)
      local t = os.clock()
      while os.clock() - t < 0.1 do end
      return i
    end)
    print("done " .. i)
  end
  return {n = 8}
end)
"""


def _steps(procedures: dict[str, Any], key: str) -> list[str]:
    return [e["name"] for e in procedures.get(key, {}).get("checkpoints", [])]


def test_a_kill_during_compute_only_steps_keeps_the_steps_sent(tmp_path: Path):
    first = KernelDriver(tmp_path)
    try:
        first.open_tactus(None)  # as the extension opens it
        run = first.submit(COMPUTE, cell_id="c1")
        first.wait_until(lambda: "done 5" in "".join(m["content"].get("text", "") for m in run.messages), 30)
        os.kill(first.km.provisioner.process.pid, signal.SIGKILL)
        first.drain(0.5)  # what the kernel sent before it died
        saved = first.recorded_procedures()
    finally:
        first.shutdown()
    assert _steps(saved, "crunch")[:4] == ["s1", "s2", "s3", "s4"], saved

    second = KernelDriver(tmp_path)
    try:
        second.open_tactus({"version": 1, "procedures": saved})
        rerun = second.execute(COMPUTE, cell_id="c1", timeout=60)
        assert rerun.status == "ok", rerun.errors
        ran = [line for line in rerun.stdout.splitlines() if line.startswith("run ")]
        kept = len(_steps(saved, "crunch"))
        assert ran == [f"run {i}" for i in range(kept + 1, 9)], rerun.stdout  # none of the saved steps again
    finally:
        second.shutdown()


def test_10000_quick_steps_still_send_a_handful_of_messages(kernel):
    kernel.open_tactus(None)
    code = """procedure({name = "many"}, function()
      for i = 1, 10000 do Step.run("item_" .. i, function() return i end) end
    end)"""
    run = kernel.execute(code, cell_id="m")
    assert run.status == "ok", run.errors
    kernel.drain(0.5)
    updates = [o for o in kernel.tactus_ops() if o["op"] == "update"]
    assert len(_steps(kernel.recorded_procedures(), "many")) == 10000
    print(f"10,000 steps: {len(updates)} update messages")
    assert 1 <= len(updates) <= 10, len(updates)


# ------------------------------------------------------------ record budget
BIG_STEPS = """
procedure({name = "hoard"}, function()
  local big = string.rep("x", 20 * 2^20)
  for i = 1, 40 do Step.run("s" .. i, function() return big end) end
end)
"""


def test_records_have_a_budget_with_a_clear_error_and_the_kernel_lives(tmp_path: Path):
    import psutil

    env = {**os.environ, "TACTUS_MAX_RECORDS": str(100 * 2**20)}
    driver = KernelDriver(tmp_path, env=env)
    try:
        proc = psutil.Process(driver.km.provisioner.process.pid)
        assert driver.execute("1").status == "ok"
        before = proc.memory_info().rss
        run = driver.execute(BIG_STEPS, cell_id="h", timeout=60)
        after = proc.memory_info().rss
        [err] = run.errors
        assert err["ename"] == "NotRecordableError"
        assert err["evalue"].startswith(
            "[cell 2]:4: step 's5' of procedure 'hoard': the value is 20.0 MiB, and recording it would take the "
            "records past their budget of 100.0 MiB (80.0 MiB already recorded)"
        ), err["evalue"]
        assert "TACTUS_MAX_RECORDS" in err["evalue"]
        print(f"RSS before {before / 2**20:.0f} MiB, after 40 x 20 MiB steps {after / 2**20:.0f} MiB")
        # 4 records of 20 MiB kept, plus the Lua string and the cell's transient copies
        assert after - before < 300 * 2**20
        assert driver.execute("1 + 1").result == "2"  # alive
        assert driver.execute("%tactus reset hoard").status == "ok"
        again = driver.execute(
            'procedure({name = "small"}, function() return {n = Step.run("a", function() '
            'return string.rep("y", 50 * 2^20) end):len()} end)',
            cell_id="s",
        )
        assert again.status == "ok" and again.result == "{n = 52428800}", again.errors  # the budget came back
    finally:
        driver.shutdown()


# ------------------------------------------------------------------ reset
BIG_RECORD = (
    'procedure({name = "big"}, function() '
    'return {n = #Step.run("s", function() return string.rep("x", 55 * 2^20) end)} end)'
)


class _LogWatcher(Observer):
    """A run observer keeping weak references to every run's RunLog."""

    def __init__(self) -> None:
        self.logs: list[Any] = []

    def run_started(self, run: Any) -> None:
        self.logs.append(weakref.ref(run.log))


def test_reset_frees_a_large_record_by_refcounting_alone(cells):
    watcher = _LogWatcher()
    cells.runtime.add_observer(watcher)
    gc.disable()  # no full collection may be needed: the run log and its trail hold no cycle
    tracemalloc.start()
    try:
        assert cells(BIG_RECORD) == [{"n": 55 * 2**20}]
        assert watcher.logs and all(ref() is None for ref in watcher.logs), "run logs die with their cell"
        held, _ = tracemalloc.get_traced_memory()
        assert cells.runtime.reset(["big"]) == ["big"]
        left, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held - left > 50 * 2**20, f"reset freed only {(held - left) / 2**20:.1f} MiB"
    assert "big" not in cells.runtime.procedures
    err = cells.error('Procedure.run("big")')
    assert err.ename == "ProcedureError" and "unknown procedure 'big'" in err.evalue


def test_reset_forgets_every_declaration(cells):
    cells('for i = 1, 975 do procedure({name = "p" .. i}, function() return {} end) end')
    assert len(cells.runtime.procedures) == 975
    cells.runtime.reset()
    assert cells.runtime.procedures == {}
    err = cells.error('Procedure.run("p7")')
    assert err.ename == "ProcedureError" and "unknown procedure 'p7'" in err.evalue
    assert cells('procedure({name = "p7"}, function() return {ok = true} end)') == [{"ok": True}]  # declared afresh


def test_three_record_then_reset_cycles_give_the_memory_back(kernel):
    import psutil

    proc = psutil.Process(kernel.km.provisioner.process.pid)
    kernel.open_tactus(None)
    rss = []
    for _ in range(3):
        run = kernel.execute(BIG_RECORD, cell_id="big", timeout=60)
        assert run.status == "ok", run.errors
        reset = kernel.execute("%tactus reset big")
        assert "Forgot the checkpoints of: big" in reset.stdout
        rss.append(proc.memory_info().rss)
    print("RSS after each record-then-reset cycle (MiB):", [round(r / 2**20) for r in rss])
    assert rss[2] - rss[0] < 20 * 2**20, rss


# ------------------------------------------------------------- deep input
def _notebook(path: Path, source: str = "1 + 1", tactus: Any = None) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, str(path))
    if tactus is not None:  # as raw JSON text: it may be deeper than json can write
        raw = json.loads(path.read_text())
        raw["metadata"]["tactus"] = "PLACEHOLDER"
        path.write_text(json.dumps(raw).replace('"PLACEHOLDER"', tactus))
    return path


def _cli(capsys: Any, *args: str | Path) -> tuple[int, str]:
    from tactus_kernel.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


DEEP = "[" * 900 + "]" * 900


def test_deep_options_are_exit_4_naming_the_option(tmp_path: Path, capsys):
    nb = _notebook(tmp_path / "n.ipynb")
    out = tmp_path / "out.ipynb"
    cases = {
        (
            "-p",
            "x=" + DEEP,
        ): "-p x: the value is nested more than 200 levels deep (at value.0.0.0.0.0.0.0.0.0.0.…(188 more).0.0)",
        ("--answer", "Ship it?=" + DEEP): "--answer Ship it?: the value is nested more than 200 levels deep",
        ("-P", "deploy.env=" + DEEP): "-P deploy.env: the value is nested more than 200 levels deep",
        ("-p", "x=" + "[" * 5000 + "]" * 5000): "-p x: the value is nested more than 200 levels deep",
    }
    for args, message in cases.items():
        code, err = _cli(capsys, "replay", nb, "-o", out, *args)
        assert code == 4 and f"tactus-kernel replay: {message}" in err, err
        assert "Traceback" not in err and not out.exists()
    answers = tmp_path / "answers.json"
    answers.write_text('{"q": ' + "[" * 3000 + "]" * 3000 + "}")
    code, err = _cli(capsys, "replay", nb, "-o", out, "--answers", answers)
    assert code == 4 and f"--answers {answers}: nested more than 200 levels deep" in err, err


def test_a_3000_deep_recorded_value_is_exit_4_naming_the_metadata_path(tmp_path: Path, capsys):
    value = "[" * 3000 + "]" * 3000
    meta = (
        '{"version": 1, "procedures": {"deploy": {"checkpoints": [{"kind": "step", "name": "build", '
        f'"at": "2026-01-01T00:00:00.000Z", "value": {value}}}]}}}}'
    )
    nb = _notebook(tmp_path / "deep.ipynb", tactus=meta)
    before = nb.read_bytes()
    code, err = _cli(capsys, "replay", nb, "--inplace")
    assert code == 4, err
    assert (
        f"{nb}: nested more than 200 levels deep at metadata.tactus.procedures.deploy.checkpoints.0.value.0."
        "0.0.…(188 more).0.0\n"
    ) in err, err
    assert nb.read_bytes() == before


def test_records_nested_too_deep_by_a_recursion_are_exit_4_and_nothing_written(tmp_path: Path, capsys):
    source = """procedure({name = "r", max_depth = 1000, params = {n = {type = "integer", default = 0}}}, function()
  if params.n < 120 then Procedure.run("r", {n = params.n + 1}) end
  return {}
end)"""
    nb = _notebook(tmp_path / "r.ipynb", source)
    out = tmp_path / "out.ipynb"
    code, err = _cli(capsys, "replay", nb, "-o", out)
    assert code == 4, err
    assert (
        "the kernel's records are nested more than 200 levels deep at metadata.tactus.procedures.r.children."
        "r#1.children.r#1.children.r#1.…(188 more).children.r#1 (a recursion too deep?); they cannot be written to the "
        "notebook, so nothing was written"
    ) in err, err
    assert not out.exists()
