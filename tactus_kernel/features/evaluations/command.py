"""``%tactus eval [procedure] [--runs N]``: run the declared evaluations, show each report.

The cell fails naming every threshold not met and every scenario that
failed or was flaky, so a notebook run (or CI) stops on a regression.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tactus_kernel.engine.errors import CellError
from tactus_kernel.features.evaluations.effects import registry
from tactus_kernel.features.evaluations.running import consistency_rows, run_consistency, run_suite
from tactus_kernel.features.specs.runner import runs_value

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime


# ------------------------------------------------------------------ %tactus eval
USAGE = "%tactus eval [procedure] [--runs N]"


def parse_eval_args(args: list[str]) -> tuple[str | None, int | None]:
    procedure = None
    runs = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--runs":
            if i + 1 >= len(args):
                raise CellError.simple("UsageError", f"--runs needs a value: {USAGE}")
            runs = runs_value(args[i + 1], USAGE)
            i += 2
            continue
        if a.startswith("--") or procedure is not None:
            raise CellError.simple("UsageError", USAGE)
        procedure = a
        i += 1
    return procedure, runs


def selected(runtime: Runtime, procedure: str | None) -> list[tuple[str, str]]:
    """("evaluations" | "evaluation", procedure) pairs to run."""
    reg = registry(runtime)
    pairs = [("evaluations", p) for p in reg.suites] + [("evaluation", p) for p in reg.consistency]
    if procedure is not None:
        pairs = [(k, p) for k, p in pairs if p == procedure]
        if not pairs:
            known = ", ".join(sorted(set(reg.suites) | set(reg.consistency)))
            raise CellError.simple(
                "UsageError",
                f"procedure {procedure!r} declares no evaluations (procedures with evaluations: {known or 'none'})",
            )
    if not pairs:
        raise CellError.simple(
            "UsageError",
            "no evaluations declared yet: add evaluations({...}) or evaluation({...}) in the procedure's cell",
        )
    return pairs


async def eval_command(runtime: Runtime, args: list[str]) -> None:
    """``%tactus eval``: run the evaluations, show each report, fail the cell
    naming every threshold not met."""
    from tactus_kernel.engine.display import bundle, text_table

    procedure, runs = parse_eval_args(args)
    problems: list[str] = []
    for kind, proc in selected(runtime, procedure):
        if kind == "evaluations":
            result = await run_suite(runtime, proc, runs)
            runtime.host.display({"text/plain": result.text(), "text/html": result.html()}, {"tactus": {"eval": proc}})
            problems += [f"{proc}: {p}" for p in result.threshold_failures]
        else:
            report, failed = await run_consistency(runtime, proc, runs)
            rows = consistency_rows(report)
            runtime.host.display(
                {
                    "text/plain": text_table(rows) + "\n" + report.summary(),
                    "text/html": bundle([rows]).get("text/html", ""),
                },
                {"tactus": {"evaluation": proc}},
            )
            details = report.failures()
            if details:
                runtime.host.write("stderr", details + "\n")
            problems += [f"{proc}: {p}" for p in failed]
    if problems:
        raise CellError.simple("EvaluationThresholdError", "; ".join(problems))
