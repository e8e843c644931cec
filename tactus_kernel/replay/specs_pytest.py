"""A notebook's BDD specifications as pytest items (``pytest --tactus-specs``).

The pytest plugin (pytest_plugin.py) calls :func:`spec_items` for each
notebook it collects. The notebook's code cells run once, in-process, on a
runtime of their own: in batch mode, with the notebook's recorded
checkpoints, so a human request is answered from the record and nothing
waits (magic cells are skipped). Each scenario of each specification then
becomes one test item, run exactly as ``%tactus test`` runs it (fresh
records, offline agents, answers from the scenario).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tactus_kernel.features.specs import runner
from tactus_kernel.features.specs.registry import registry
from tactus_kernel.features.specs.report import Report

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from tactus_kernel.engine.runtime import Runtime


class SpecFailed(Exception):
    """A scenario failed; the message names the step and why."""


def load_notebook(path: Path) -> tuple[Runtime, list[str]]:
    """Run a notebook's code cells in-process; returns the runtime and the cells' errors."""
    import nbformat

    from tactus_kernel.engine.errors import CellError
    from tactus_kernel.engine.runtime import source_key
    from tactus_kernel.features import default_runtime
    from tactus_kernel.jupyter.magics import is_magic
    from tactus_kernel.protocol import parse_metadata

    nb = nbformat.read(str(path), as_version=4)
    runtime = default_runtime(root=path.parent, host=runner.CaptureHost())
    runtime.records.load(parse_metadata(nb.metadata.get("tactus")))
    runtime.batch = True
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip() or is_magic(cell.source):
            continue
        key = cell.get("id") or source_key(cell.source)
        try:
            asyncio.run(runtime.execute(cell.source, f"[cell {index}]", key))
        except CellError as exc:
            problems.append(f"cell {index}: {exc.ename}: {exc.evalue}")
    return runtime, problems


def spec_items(collector: pytest.File) -> Iterator[pytest.Item]:
    """One item per scenario of every specification the notebook declares."""
    runtime, problems = load_notebook(Path(collector.path))
    specs = registry(runtime).specs
    for spec in specs.values():
        for pickle in spec.pickles:
            yield SpecScenario.from_parent(
                collector,
                name=f"spec[{spec.procedure}: {pickle.get('name', '')}]",
                runtime=runtime,
                procedure=spec.procedure,
                pickle=pickle,
                problems=problems,
            )


class SpecScenario(pytest.Item):
    """One scenario of a notebook's specifications."""

    def __init__(
        self, *, runtime: Runtime, procedure: str, pickle: dict[str, Any], problems: list[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.procedure = procedure
        self.pickle = pickle
        self.problems = problems

    def runtest(self) -> None:
        result = asyncio.run(runner.run_scenario(self.runtime, self.procedure, self.pickle))
        if result.passed:
            return
        report = Report(1)
        report.add(result)
        message = report.failures()
        if self.problems:
            message += "\n  (cells of the notebook that failed: " + "; ".join(self.problems) + ")"
        raise SpecFailed(message)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, SpecFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return Path(self.path), None, f"tactus spec {self.procedure}: {self.pickle.get('name', '')}"
