"""Measure 6: batch replay of a 50-cell recorded notebook vs nbclient on python3.

Both run in this process, alternately (which goes first alternates from
round to round), each starting its own kernel, so
the ratio compares `tactus_kernel.replay_file` (nbclient plus the comm,
cell ids and answers from the record) with plain nbclient executing an
equivalent Python notebook.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

CELLS = 50


def lua_notebook() -> Any:
    cells = []
    for i in range(CELLS):
        if i % 5 == 0:
            cells.append(
                new_code_cell(
                    f'procedure({{name = "p{i}"}}, function()\n'
                    f'  local v = Step.run("s", function() return {{n = {i}}} end)\n'
                    f"  return {{n = v.n * 2}}\nend)"
                )
            )
        else:
            cells.append(new_code_cell(f"x{i} = {i} * 2\nx{i}"))
    return new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}}
    )


def python_notebook() -> Any:
    cells = []
    for i in range(CELLS):
        if i % 5 == 0:
            cells.append(new_code_cell(f"def p{i}():\n    v = {{'n': {i}}}\n    return {{'n': v['n'] * 2}}\np{i}()"))
        else:
            cells.append(new_code_cell(f"x{i} = {i} * 2\nx{i}"))
    return new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )


def measure(quick: bool = False) -> dict[str, Any]:
    from tactus_kernel.replay.command import replay_file
    from tactus_kernel.replay.outcome import ReplayOptions

    rounds = 2 if quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = root / "fresh.ipynb"
        recorded = root / "recorded.ipynb"
        nbformat.write(lua_notebook(), first)
        # record it (no humans involved, so a replay run records the steps)
        assert replay_file(str(first), str(recorded), ReplayOptions(), quiet=True, stderr=io.StringIO()) == 0
        tactus_s: list[float] = []
        python_s: list[float] = []

        def tactus() -> None:
            t0 = time.perf_counter()
            code = replay_file(
                str(recorded), str(root / "out.ipynb"), ReplayOptions(), quiet=True, stderr=io.StringIO()
            )
            tactus_s.append(time.perf_counter() - t0)
            assert code == 0

        def python() -> None:
            nb = python_notebook()
            t0 = time.perf_counter()
            NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
            python_s.append(time.perf_counter() - t0)

        # which goes first alternates, so neither side always meets the
        # machine as the other left it (as start-up does, measure 2)
        for i in range(rounds):
            for run in (tactus, python) if i % 2 == 0 else (python, tactus):
                run()
    t, p = statistics.median(tactus_s), statistics.median(python_s)
    return {"cells": CELLS, "tactus_replay_s": t, "nbclient_python3_s": p, "ratio": t / p, "target": "<= 1.2x"}


if __name__ == "__main__":
    print(measure())
