"""Load: a very long procedure, and many notebooks replayed at once.

A record grows by one entry per call, and CI replays whole folders of
notebooks in parallel. These tests check that neither is a cliff: 100 000
steps record and replay in seconds without the memory growing past a sane
bound, and 20 notebooks replayed by ``pytest -n 4 --tactus-replay`` all
pass with their own outputs (no kernel shared, lost or mixed up).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

import nbformat
import psutil
import pytest
from conftest import Cells
from replay_helpers import Cell, click, load, record_notebook

from tactus_kernel.engine.sandbox import DEFAULT_MAX_MEMORY
from tactus_kernel.features import default_runtime
from tactus_kernel.protocol import parse_metadata

STEPS = 100_000
MANY = f"""
procedure({{name = "many"}}, function()
  local total = 0
  for i = 1, {STEPS} do
    total = total + Step.run("s" .. i, function() RAN = RAN + 1; return i end)
  end
  return total
end)"""
TOTAL = STEPS * (STEPS + 1) // 2
MB = 1e6


class PeakRss:
    """The most this process held in RAM while the block ran, sampled every
    10 ms from a thread (the Lua loop calls back into Python for each step,
    so the sampler gets the GIL often). Growth is measured from the RSS at
    entry, so what earlier tests left allocated does not count."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.base = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> float:
        return (self.peak - self.base) / MB


@pytest.mark.timeout(120)  # a few seconds when healthy; a per-step cost that grows with the record fails here
def test_100000_steps_record_and_replay_in_bounded_memory(cells: Cells, tmp_path: Path) -> None:
    """Record 100 000 steps on the kernel's default Lua heap (512 MiB,
    TACTUS_MAX_MEMORY's default), replay them in the same runtime, then as a
    restarted kernel does: the record through JSON and ``parse_metadata``
    into a fresh runtime, this one with a 32 MiB heap (the records live in
    Python, not in Lua). Each replay returns the same total without running
    a single step function, and the process grows by less than 300 MB in
    each phase."""
    assert cells.runtime.max_memory == DEFAULT_MAX_MEMORY
    with PeakRss() as live:
        cells("RAN = 0", key="init")
        assert cells(MANY, key="many") == [TOTAL]
        assert cells("RAN", key="check") == [STEPS]
        cells("RAN = 0", key="init")
        assert cells(MANY, key="many") == [TOTAL]  # replayed from the kernel's own record
        assert cells("RAN", key="check") == [0]
    assert cells.runtime.lua.get_memory_used() < 32 * 2**20
    checkpoints = cells.runtime.records.procedures["many"]["checkpoints"]
    assert len(checkpoints) == STEPS and checkpoints[-1]["value"] == STEPS
    assert live.growth < 300, f"recording and replaying grew the process by {live.growth:.0f} MB"

    text = json.dumps(cells.runtime.records.snapshot())  # what the notebook saves
    cells.runtime.records.load({})
    gc.collect()
    with PeakRss() as restart:
        fresh = Cells(tmp_path)
        fresh.runtime = default_runtime(root=tmp_path, host=fresh.host, max_memory=32 * 2**20)
        fresh.runtime.records.load(parse_metadata(json.loads(text)))
        fresh.runtime.batch = True
        fresh("RAN = 0", key="init")
        assert fresh(MANY, key="many") == [TOTAL]
        assert fresh("RAN", key="check") == [0]
    assert restart.growth < 300, f"a restarted kernel's replay grew the process by {restart.growth:.0f} MB"


# ------------------------------------------------ 20 notebooks in parallel
SHIP = """
procedure({name = "ship"}, function()
  local build = Step.run("build", function() print("building for " .. who) return {image = "app:" .. who} end)
  State.set("image", build.image)
  local ok = Human.approve({message = "Ship it?"})
  local n = Step.run("count", function() return 3 end)
  return {who = who, image = State.get("image"), shipped = ok, n = n}
end)"""
NOTEBOOKS = 20


def run_pytest(root: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess, as a project's CI runs it (not as a worker of
    this session)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(240)
def test_20_notebooks_replay_in_parallel_each_with_its_own_outputs(tmp_path: Path) -> None:
    """One notebook recorded for real (a step, State, an approval clicked
    in its card, another step), copied 20 times with a different parameter
    each, then replayed by ``pytest -n 4 --tactus-replay``: 20 passed, none
    failed or errored, and each executed notebook holds its own parameter
    in its outputs, the recorded step value (the step did not run again)
    and its record unchanged. About 30 s on 2 cores (the replays about
    25 s of it), so the timeouts only catch a hang."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    source = tmp_path / "ship.ipynb"
    record_notebook(source, [Cell('who = "recorder"', tags=["parameters"]), Cell(SHIP, interact=click("Approve"))])
    recorded = load(source)["metadata"]["tactus"]
    assert [e["kind"] for e in recorded["procedures"]["ship"]["checkpoints"]] == ["step", "human", "step"]
    for i in range(NOTEBOOKS):
        nb = nbformat.read(str(source), as_version=4)
        nb.cells[0].source = f'who = "nb{i:02d}"'
        nbformat.write(nb, str(root / "notebooks" / f"nb{i:02d}.ipynb"))

    proc = run_pytest(root, "-n", "4", "--tactus-replay", "notebooks", "--tactus-output-dir", "out", "-q", timeout=200)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{NOTEBOOKS} passed" in summary and "failed" not in summary and "error" not in summary, summary

    outputs = sorted((root / "out" / "notebooks").glob("*.ipynb"))
    assert [p.name for p in outputs] == [f"nb{i:02d}.ipynb" for i in range(NOTEBOOKS)]
    for i, path in enumerate(outputs):
        nb = load(path)
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] for c in code), path.name
        text = json.dumps(code[1]["outputs"])
        assert f'who = \\"nb{i:02d}\\"' in text, (path.name, text[:500])
        assert 'image = \\"app:recorder\\"' in text and "shipped = true" in text, (path.name, text[:500])
        assert "building for" not in text  # the step came from the record
        assert (
            nb["metadata"]["tactus"]["procedures"]["ship"]["checkpoints"]
            == recorded["procedures"]["ship"]["checkpoints"]
        )
