"""Frontends that cannot show cards never hang on a human request.

nbconvert, papermill and plain nbclient connect no widget manager, so a
card could never be clicked: an unanswered request fails at once, naming
the cell, procedure and question and how to answer it. Run for real.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from kernel_driver import KernelDriver

ASK = """procedure({name = "release"}, function()
  local ok = Human.approve({message = "Ship it?"})
  return {ok = ok}
end)"""


def notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, path)
    return path


def test_nbconvert_execute_fails_at_once_on_an_unanswered_request(tmp_path: Path) -> None:
    src = notebook(tmp_path / "ask.ipynb", 'print("before")', ASK)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            str(src),
            "--output",
            "out.ipynb",
            "--ExecutePreprocessor.timeout=600",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert elapsed < 60, f"nbconvert took {elapsed:.0f}s: it waited for a human"
    assert "NoRecordedAnswer" in done.stderr
    assert 'procedure "release": Human.approve "Ship it?" has no recorded answer' in done.stderr
    assert 'tactus-kernel replay NOTEBOOK --answer "Ship it?=VALUE"' in done.stderr


def test_nbclient_reports_the_cell_and_how_to_answer(tmp_path: Path) -> None:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook(tmp_path / "ask.ipynb", 'print("before")', ASK), as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="tactus", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "NoRecordedAnswer"
    error = nb.cells[1].outputs[-1]
    assert error.output_type == "error"
    assert error.evalue.startswith(
        '[cell 2]:2: procedure "release": Human.approve "Ship it?" has no recorded answer, and no '
        "frontend that shows cards is connected"
    )
    assert '%tactus answer "Ship it?" true' in error.evalue


def test_a_terminal_frontend_answers_with_the_magic(tmp_path: Path) -> None:
    driver = KernelDriver(tmp_path, widgets=False)
    try:
        first = driver.execute(ASK, cell_id="c")
        assert [e["ename"] for e in first.errors] == ["NoRecordedAnswer"]
        driver.execute('%tactus answer "Ship it?" true')
        again = driver.execute(ASK, cell_id="c")
        assert again.status == "ok", again.errors
        assert again.result == "{ok = true}"
    finally:
        driver.shutdown()


def test_a_widget_manager_that_only_asks_for_comm_info_counts_too(tmp_path: Path) -> None:
    """Older widget managers ask ``comm_info_request`` instead of opening the control comm."""
    driver = KernelDriver(tmp_path, widgets=False)
    try:
        driver.kc.comm_info(target_name="jupyter.widget")
        run = driver.submit(ASK, cell_id="c")
        driver.wait_until(lambda: driver.widgets_where(_model_name="ButtonModel", description="Approve"))
        driver.click(driver.button("Approve"))
        driver.wait(run)
        assert run.status == "ok", run.errors
        assert run.result == "{ok = true}"
    finally:
        driver.shutdown()
