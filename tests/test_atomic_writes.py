"""Every write path of the project is atomic: killed while writing, the
target holds its old bytes or its new bytes, never a part, and no
temporary file is left behind (issue 21, "Data loss").

Each path is driven in a subprocess whose fsync is held: it prints a
marker and waits on stdin, so the signal lands while the new bytes sit in
the temporary file and the target is not yet replaced (no sleeping to
synchronise). The real CLI and a real kernel are killed while writing too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from kernel_driver import KernelDriver
from replay_helpers import load, run_cli

from tactus_kernel.engine.atomic import atomic_write

HOLD_FSYNC = """
import os, sys
import tactus_kernel.engine.atomic as atomic
real_fsync = os.fsync
def held(fd):
    real_fsync(fd)
    print("WRITING", flush=True)
    sys.stdin.readline()  # held here until the test has sent its signal
atomic.os.fsync = held
"""

WRITERS = {
    "notebook": """
import nbformat
from tactus_kernel.replay.notebook_io import write_notebook
nb = nbformat.v4.new_notebook()
nb.cells.append(nbformat.v4.new_markdown_cell("new " * 1_000_000))
write_notebook(nb, TARGET)
""",
    "file": """
from pathlib import Path
from tactus_kernel.engine.files import file_op
file_op(Path(TARGET).parent, "write", Path(TARGET).name, "new " * 1_000_000)
""",
    "kernelspec": """
from tactus_kernel.jupyter.kernelspec import install
install(prefix=PREFIX)
""",
}


def _target(tmp_path: Path, path_kind: str) -> Path:
    if path_kind == "kernelspec":
        target = tmp_path / "share/jupyter/kernels/tactus/kernel.json"
        target.parent.mkdir(parents=True)
        return target
    return tmp_path / ("out.ipynb" if path_kind == "notebook" else "data.txt")


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tactus-tmp"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("path_kind", sorted(WRITERS))
def test_a_kill_while_writing_leaves_the_old_bytes(tmp_path: Path, path_kind: str, sig: signal.Signals):
    target = _target(tmp_path, path_kind)
    old = b'{"old": true}\n'
    target.write_bytes(old)
    script = HOLD_FSYNC + f"TARGET = {str(target)!r}\nPREFIX = {str(tmp_path)!r}\n" + WRITERS[path_kind]
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "WRITING\n", proc.stderr.read() if proc.stderr else line
        assert _temps(target.parent), "the new bytes go to a temporary file first"
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -sig
    assert target.read_bytes() == old
    if sig == signal.SIGTERM:
        assert _temps(target.parent) == [], "SIGTERM: the temporary file is removed before the process ends"
    else:
        # SIGKILL cannot be caught: the next write to that file removes the dead process's temporary file
        assert len(_temps(target.parent)) == 1
        atomic_write(target, b"next")
        assert target.read_bytes() == b"next"
        assert _temps(target.parent) == []


def test_a_failed_check_or_error_leaves_the_target_and_no_temp(tmp_path: Path):
    target = tmp_path / "t.txt"
    target.write_bytes(b"old")

    def refuse(data: bytes) -> None:
        raise ValueError(f"refused {len(data)} bytes")

    with pytest.raises(ValueError, match="refused 3 bytes"):
        atomic_write(target, b"new", check=refuse)
    assert target.read_bytes() == b"old" and _temps(tmp_path) == []
    os.chmod(target, 0o640)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640, "an existing file keeps its permission bits"
    fresh, plain = tmp_path / "fresh.txt", tmp_path / "plain.txt"
    atomic_write(fresh, b"x")
    plain.write_bytes(b"x")
    assert fresh.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777, "a new file gets the umask's mode"


# ------------------------------------------------------ the real CLI and kernel
def _big_notebook(path: Path) -> bytes:
    """A 44 MB notebook (one big markdown cell) whose one code cell replays at once."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells.append(nbformat.v4.new_markdown_cell("x" * (44 * 2**20)))
    nb.cells.append(nbformat.v4.new_code_cell("1 + 1"))
    nbformat.write(nb, str(path))
    return path.read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_replay_inplace_killed_while_writing_a_44mb_notebook(tmp_path: Path, sig: signal.Signals):
    path = tmp_path / "big.ipynb"
    old = _big_notebook(path)
    seen: dict[str, object] = {}

    def kill_when_the_temp_file_appears(proc) -> None:
        deadline = time.monotonic() + 120
        while not _temps(tmp_path):  # the event itself: the write has begun
            assert proc.poll() is None, "the replay ended before it wrote"
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.001)
        os.kill(proc.pid, sig)
        seen["killed"] = True

    run = run_cli("replay", path, "--inplace", on_start=kill_when_the_temp_file_appears, timeout=120)
    assert seen["killed"] and run.returncode == -sig, run.stderr
    after = path.read_bytes()
    assert after == old or json.loads(after)["cells"][1]["outputs"], "old bytes or the whole new notebook"
    if sig == signal.SIGTERM:
        assert _temps(tmp_path) == []


def test_file_write_in_a_kernel_killed_while_writing(tmp_path: Path):
    (tmp_path / "big.txt").write_text("old")
    driver = KernelDriver(tmp_path)
    try:
        made = driver.execute("big = string.rep('n', 200 * 2^20)")  # (300 MiB would not fit the 512 MiB cap)
        assert made.status == "ok", made.errors
        run = driver.submit('File.write("big.txt", big)')
        deadline = time.monotonic() + 60
        while not _temps(tmp_path):  # the write has begun
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.001)
        os.kill(driver.km.provisioner.process.pid, signal.SIGKILL)
        del run
    finally:
        driver.shutdown()
    data = (tmp_path / "big.txt").read_bytes()
    assert data == b"old" or data == b"n" * (200 * 2**20)
    atomic_write(tmp_path / "big.txt", b"after")  # and the dead kernel's temporary file goes with the next write
    assert _temps(tmp_path) == []


def test_a_lone_surrogate_in_the_record_is_exit_4_and_nothing_written(tmp_path: Path):
    path = tmp_path / "s.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells.append(nbformat.v4.new_code_cell("1 + 1"))
    nbformat.write(nb, str(path))
    meta = {
        "version": 1,
        "procedures": {
            "deploy": {
                "checkpoints": [
                    {"kind": "step", "name": "build", "value": "ok", "at": "2026-01-01T00:00:00.000Z"},
                    {"kind": "step", "name": "fetch", "value": "PLACEHOLDER", "at": "2026-01-01T00:00:00.000Z"},
                ]
            }
        },
    }
    raw = load(path)
    raw["metadata"]["tactus"] = meta
    text = json.dumps(raw).replace('"PLACEHOLDER"', '"bad \\ud800 text"')
    path.write_text(text)
    before = path.read_bytes()
    out = tmp_path / "out.ipynb"
    for args in (["--inplace"], ["-o", str(out)]):
        run = run_cli("replay", path, *args)
        assert run.returncode == 4, run.stderr
        assert (
            "procedure 'deploy', checkpoint #2 (step 'fetch'), at metadata.tactus.procedures.deploy."
            "checkpoints.1.value holds text that is not valid Unicode"
        ) in run.stderr
        assert path.read_bytes() == before and not out.exists() and _temps(tmp_path) == []
