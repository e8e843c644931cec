"""A notebook's evaluations as pytest items (``pytest --tactus-evals``).

The pytest plugin (pytest_plugin.py) calls :func:`eval_items` for each
notebook it collects. The notebook's code cells run once, in-process, as
for ``--tactus-specs`` (bdd_pytest.load_notebook: batch mode, the
notebook's recorded checkpoints, magic cells skipped). Each
``evaluations({...})`` declaration then becomes one item that runs its
dataset as ``%tactus eval`` does and fails on a threshold not met, with the
report in the failure message; each ``evaluation({runs})`` declaration
becomes one item that runs the specifications that many times and fails
on a failed or flaky scenario.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from tactus_kernel.engine.runtime import Runtime


class EvalFailed(Exception):
    """Thresholds not met; the message holds them and the report."""


def eval_items(collector: pytest.File) -> Iterator[pytest.Item]:
    """One item per evaluations / evaluation declaration of the notebook."""
    from tactus_kernel.features.evaluations.effects import registry
    from tactus_kernel.replay.specs_pytest import load_notebook

    runtime, problems = load_notebook(Path(collector.path))
    reg = registry(runtime)
    for proc in reg.suites:
        yield EvalItem.from_parent(
            collector,
            name=f"evaluations[{proc}]",
            runtime=runtime,
            procedure=proc,
            kind="evaluations",
            problems=problems,
        )
    for proc in reg.consistency:
        yield EvalItem.from_parent(
            collector, name=f"evaluation[{proc}]", runtime=runtime, procedure=proc, kind="evaluation", problems=problems
        )


class EvalItem(pytest.Item):
    """One procedure's evaluations (or consistency runs) in a notebook."""

    def __init__(self, *, runtime: Runtime, procedure: str, kind: str, problems: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.procedure = procedure
        self.kind = kind
        self.problems = problems

    def runtest(self) -> None:
        from tactus_kernel.features.evaluations.running import consistency_rows, run_consistency, run_suite

        if self.kind == "evaluations":
            result = asyncio.run(run_suite(self.runtime, self.procedure))
            failures, report = result.threshold_failures, result.text()
            self.user_properties.append(("tactus-success-rate", result.success_rate))
        else:
            from tactus_kernel.engine.display import text_table

            bdd_report, failures = asyncio.run(run_consistency(self.runtime, self.procedure))
            report = text_table(consistency_rows(bdd_report)) + "\n" + bdd_report.summary()
            if bdd_report.failures():
                report += "\n" + bdd_report.failures()
        if not failures:
            return
        message = f"{self.kind} of {self.procedure!r} failed: " + "; ".join(failures) + "\n\n" + report
        if self.problems:
            message += "\n  (cells of the notebook that failed: " + "; ".join(self.problems) + ")"
        raise EvalFailed(message)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, EvalFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return Path(self.path), None, f"tactus {self.kind} {self.procedure}"
