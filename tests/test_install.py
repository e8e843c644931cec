"""What `pip install tactus-kernel` promises: agents work with no extra, the
kernel starts without paying for pydantic-ai, and the replay summary reads
right. The wheel and sdist themselves are built, installed without node and
run by scripts/check_dist.sh (part of scripts/test.sh)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import metadata, requires
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

from tactus_kernel.cli import main


def test_pydantic_ai_is_a_dependency_and_the_agents_extra_still_resolves():
    reqs = [Requirement(r) for r in requires("tactus-kernel") or []]
    plain = {r.name: r for r in reqs if r.marker is None}
    assert {"openai", "anthropic"} <= plain["pydantic-ai-slim"].extras
    # `pip install "tactus-kernel[agents]"` in old instructions: the extra exists, and adds nothing
    agents_only = [r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "agents"})]
    assert agents_only == []
    assert "agents" in (metadata("tactus-kernel").get_all("Provides-Extra") or [])


def test_starting_the_kernel_does_not_import_pydantic_ai():
    # Everything `python -m tactus_kernel -f CONN` imports before the first cell, and the runtime it builds.
    code = (
        "import sys, asyncio\n"
        "import tactus_kernel.__main__, tactus_kernel.jupyter.kernel, tactus_kernel.cli\n"
        "from tactus_kernel.features import default_runtime\n"
        "asyncio.run(default_runtime().execute('procedure({name = \"p\"}, function() return {} end)'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic_ai', 'openai', 'anthropic')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]"]


@pytest.mark.parametrize(("sources", "summary"), [(["1 + 2"], "1 cell ran in"), (["1", "2"], "2 cells ran in")])
def test_replay_summary_counts_cells_in_words(tmp_path: Path, capsys, sources: list[str], summary: str):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    path = tmp_path / "one.ipynb"
    nbformat.write(nb, path)
    assert main(["replay", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"tactus-kernel replay: {path}: {summary}" in err
