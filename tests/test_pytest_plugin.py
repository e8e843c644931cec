"""``pytest --tactus-replay``: notebooks recorded for real, replayed as test items.

Each scenario runs pytest in a subprocess inside tmp_path (its own
rootdir), the way a project's CI would, with the plugin loaded through
its ``pytest11`` entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from replay_helpers import GREET, RELEASE, Cell, click, edit_cell, record_notebook, steps, type_answer

PARAMS = Cell('greeting = "hello"', tags=["parameters"])


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with notebooks/: one that replays, one with an unanswered
    request, one whose code no longer matches its record."""
    root = tmp_path_factory.mktemp("project")
    (root / "pytest.ini").write_text("[pytest]\n")
    nbs = root / "notebooks"
    nbs.mkdir()
    record_notebook(nbs / "release.ipynb", [PARAMS, RELEASE])
    greet = nbs / "greet.ipynb"
    record_notebook(greet, [PARAMS, Cell(GREET, interact=steps(type_answer("Ada"), click("Approve")))])
    nb = json.loads(greet.read_text())
    rec = nb["metadata"]["tactus"]["procedures"]["greet"]
    rec["checkpoints"] = [c for c in rec["checkpoints"] if c["name"] != "Send the greeting?"]
    greet.write_text(json.dumps(nb))
    edit_cell(nbs / "release.ipynb", nbs / "diverged.ipynb", 1, RELEASE.replace('"test"', '"tests"'))
    return root


def pytest_run(root: Path, *args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
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


def summary(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout.strip().splitlines()[-1]


def test_notebooks_are_not_collected_without_the_option(notebooks: Path):
    proc = pytest_run(notebooks, "notebooks")
    assert proc.returncode == 5, proc.stdout  # no tests ran
    assert "ipynb" not in proc.stdout


def test_each_notebook_is_an_item_failing_with_cell_and_request(notebooks: Path):
    proc = pytest_run(notebooks, "--tactus-replay", "notebooks", "-n", "2", "-q")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert " 2 failed, 1 passed" in summary(proc) or "2 failed, 1 passed" in summary(proc), out
    assert (
        'notebooks/greet.ipynb cell 2, procedure "greet": Human.approve "Send the greeting?" '
        "has no recorded answer" in out
    )
    assert "--tactus-answer 'Send the greeting?=VALUE'" in out
    assert 'notebooks/diverged.ipynb cell 2, procedure "release": replay diverged' in out
    assert "step 'test'" in out and "step 'tests'" in out
    assert "FAILED notebooks/greet.ipynb::replay" in out
    assert "Traceback" not in out


def test_answers_timeout_and_output_dir(notebooks: Path, tmp_path: Path):
    slow = notebooks.parent / "slow"
    slow.mkdir(exist_ok=True)
    (slow / "pytest.ini").write_text("[pytest]\n")
    edit_cell(notebooks / "notebooks" / "release.ipynb", slow / "slow.ipynb", 1, "Sleep(30)")
    (slow / "greet.ipynb").write_bytes((notebooks / "notebooks" / "greet.ipynb").read_bytes())
    out_dir = tmp_path / "executed"
    proc = pytest_run(
        slow,
        "--tactus-replay",
        ".",
        "--tactus-answer",
        "Send the greeting?=true",
        "--tactus-timeout",
        "2",
        "--tactus-output-dir",
        str(out_dir),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in summary(proc), proc.stdout
    assert "slow.ipynb cell 2: the cell did not finish within 2s" in proc.stdout
    greet = json.loads((out_dir / "greet.ipynb").read_text())
    [entry] = [
        c
        for c in greet["metadata"]["tactus"]["procedures"]["greet"]["checkpoints"]
        if c["name"] == "Send the greeting?"
    ]
    assert entry["value"] is True
    assert (out_dir / "slow.ipynb").exists()


def test_bad_option_is_a_usage_error(notebooks: Path):
    proc = pytest_run(notebooks, "--tactus-replay", "notebooks", "--tactus-answer", "no-equals-sign")
    assert proc.returncode == 4
    assert "expected KEY=VALUE" in proc.stderr


def test_the_example_notebooks_replay():
    """This project's own notebooks/ replay from their records, as its docs say."""
    repo = Path(__file__).resolve().parent.parent
    found = sorted((repo / "notebooks").glob("*.ipynb"))
    if not found:
        pytest.skip("no example notebooks")
    proc = pytest_run(repo, "--tactus-replay", "notebooks", "-q", "-o", "addopts=", timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"{len(found)} passed" in summary(proc)
