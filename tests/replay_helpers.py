"""Record notebooks for real, then replay them: helpers for the replay tests.

A notebook is recorded the way a person makes one in JupyterLab: a real
kernel with the ``tactus`` comm open, each cell sent with its cell id, the
cards clicked, and the kernel's update/delete ops merged into
``metadata.tactus``. The result is written with nbformat (cell ids
included), ready for ``tactus-kernel replay``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import psutil
from kernel_driver import KernelDriver

Interact = Callable[[KernelDriver], None]

RELEASE = """\
procedure({name = "release", params = {env = {type = "string", default = "staging"}}}, function()
  local b = Step.run("build", function() print("building"); return {ok = true} end)
  local t = Step.run("test", function() print("testing"); return {passed = 3} end)
  return {env = params.env, built = b.ok, passed = t.passed, greeting = greeting}
end)"""

GREET = """\
procedure({name = "greet"}, function()
  local name = Human.input({message = "Your name?"})
  local ok = Human.approve({message = "Send the greeting?"})
  return {text = greeting .. ", " .. name, sent = ok}
end)"""


@dataclass
class Cell:
    source: str
    tags: list[str] = field(default_factory=list)
    interact: Interact | None = None  # answers the cell's cards while it runs
    markdown: bool = False


def click(label: str) -> Interact:
    """Click the card button with this label once it shows up."""

    def run(d: KernelDriver) -> None:
        d.wait_until(lambda: _enabled(d, label), timeout=20)
        d.click(d.button(label))

    return run


def type_answer(text: str) -> Interact:
    """Type into the newest text box and press Submit."""

    def run(d: KernelDriver) -> None:
        d.wait_until(lambda: _enabled(d, "Submit"), timeout=20)
        boxes = [cid for cid in d.widgets_where(_model_name="TextModel") if not d.widgets[cid].get("disabled")]
        d.set_value(boxes[-1], text)
        d.click(d.button("Submit"))

    return run


def steps(*interactions: Interact) -> Interact:
    def run(d: KernelDriver) -> None:
        for i in interactions:
            i(d)
            d.drain(0.1)

    return run


def _enabled(d: KernelDriver, label: str) -> bool:
    try:
        d.button(label)
    except LookupError:
        return False
    return True


def record_notebook(path: Path, cells: list[Cell | str]) -> nbformat.NotebookNode:
    """Run `cells` on a real kernel, as JupyterLab does, and save the notebook
    with the checkpoints the kernel sent back."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    for spec in cells:
        c = Cell(spec) if isinstance(spec, str) else spec
        if c.markdown:
            nb.cells.append(nbformat.v4.new_markdown_cell(c.source))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(c.source, metadata={"tags": list(c.tags)}))
    specs = [Cell(s) if isinstance(s, str) else s for s in cells]
    driver = KernelDriver(path.parent)
    try:
        driver.open_tactus(None)
        for cell, spec in zip(nb.cells, specs, strict=True):
            if cell.cell_type != "code":
                continue
            run = driver.submit(cell.source, cell_id=cell.id)
            if spec.interact is not None:
                spec.interact(driver)
            driver.wait(run, timeout=60)
            assert run.status == "ok", f"recording failed: {run.errors}"
        driver.drain(0.3)
        procedures = driver.recorded_procedures()
    finally:
        driver.shutdown()
    nb.metadata["tactus"] = {"version": 1, "procedures": procedures}
    nbformat.write(nb, str(path))
    return nb


def edit_cell(src: Path, dst: Path, index: int, source: str) -> Path:
    """Copy a notebook with one cell's source changed (the record kept)."""
    nb = nbformat.read(str(src), as_version=4)
    nb.cells[index].source = source
    nbformat.write(nb, str(dst))
    return dst


def load(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    kernels: set[int]  # pids of every process the CLI started


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    timeout: float = 90,
    on_start: Callable[[psutil.Popen], None] | None = None,
) -> CliRun:
    """Run ``tactus-kernel`` as a user would, noting each process it starts
    (so a test can check none outlives it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tactus_kernel", *map(str, args)]
    t0 = time.monotonic()
    proc = psutil.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: set[int] = set()
    if on_start is not None:
        on_start(proc)
    while proc.poll() is None:
        try:
            children.update(c.pid for c in proc.children(recursive=True))
        except psutil.Error:
            pass
        if time.monotonic() - t0 > timeout:
            proc.terminate()  # the CLI shuts its kernel down on SIGTERM
            try:
                out, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise TimeoutError(
                f"tactus-kernel {' '.join(map(str, args))} did not finish in {timeout}s; stderr: {err[-3000:]}"
            )
        time.sleep(0.05)
    out, err = proc.communicate()
    return CliRun(proc.returncode, out, err, time.monotonic() - t0, children)


def alive(pids: set[int]) -> list[str]:
    """The processes among `pids` still running (zombies count as gone)."""
    left = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid}: {' '.join(p.cmdline())}")
        except psutil.NoSuchProcess:
            continue
    return left


def wait_gone(pids: set[int], timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    left = alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = alive(pids)
    return left


def kernels_of(parent_pid: int) -> list[int]:
    """Kernels started by `parent_pid`, found by the JPY_PARENT_PID that
    jupyter_client gives every kernel it launches (they outlive a killed
    parent as orphans)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "tactus_kernel" not in " ".join(p.info["cmdline"] or []):
                continue
            if p.environ().get("JPY_PARENT_PID") == str(parent_pid) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except psutil.Error:
            continue
    return found
