"""Running evaluations: a suite through pydantic-evals, consistency runs through the specifications runner.

The task pydantic-evals runs for each case runs the procedure on the
kernel's own machinery, exactly as a specification scenario does
(``specs.runner.run_isolated``): a fresh run on throw-away records in batch mode, so
an evaluation never replays, reads or writes the notebook's checkpoints.
What the run did (tool calls, state, stage, iterations, agent turns,
tokens, cost) is handed to the evaluators as the case's attributes and
metrics; the report's rows are then checked against the thresholds.

Cases run one at a time whatever ``parallel`` says: every run shares the
kernel's one Lua state.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.errors import CellError
from tactus_kernel.features.evaluations.effects import registry
from tactus_kernel.features.specs.registry import registry as spec_registry
from tactus_kernel.features.specs.runner import run_isolated, run_specs
from tactus_kernel.features.specs.steps import plain

if TYPE_CHECKING:
    from pydantic_evals.reporting import EvaluationReport

    from tactus_kernel.engine.runtime import Runtime


# ------------------------------------------------------------------ running
@dataclass
class RunRow:
    """One run of one case, as the report table shows it."""

    case: str
    run: int
    passed: bool
    assertions: int
    failed: list[str]
    duration: float
    tokens: int
    cost: float
    error: str = ""


@dataclass
class SuiteResult:
    procedure: str
    runs: int
    report: EvaluationReport[Any, Any, Any]
    rows: list[RunRow]
    threshold_failures: list[str]
    thresholds: dict[str, float]

    @property
    def success_rate(self) -> float:
        return sum(r.passed for r in self.rows) / max(len(self.rows), 1)

    def table(self) -> list[dict[str, Any]]:
        out = []
        for r in self.rows:
            row: dict[str, Any] = {"case": r.case}
            if self.runs > 1:
                row["run"] = r.run
            row.update(
                {
                    "result": "pass" if r.passed else "FAIL",
                    "assertions": "error" if r.error else f"{r.assertions - len(r.failed)}/{r.assertions}",
                    "duration": f"{r.duration * 1000:.0f} ms",
                    "tokens": r.tokens,
                }
            )
            row["why"] = r.error or "; ".join(r.failed)
            out.append(row)
        return out

    def summary(self) -> str:
        ok = sum(r.passed for r in self.rows)
        cases = len({r.case for r in self.rows})
        return (
            f"evaluations of {self.procedure!r}: {cases} case(s) x {self.runs} run(s): {ok} of {len(self.rows)} "
            f"passed, success rate {self.success_rate:.0%}"
        )

    def text(self) -> str:
        from tactus_kernel.engine.display import text_table

        return text_table(self.table()) + "\n" + self.summary()

    def html(self) -> str:
        """pydantic-evals' own report table, rendered to HTML by rich."""
        from rich.console import Console

        console = Console(record=True, width=160, file=io.StringIO(), force_terminal=False)
        console.print(
            self.report.console_table(
                include_input=True, include_output=True, include_durations=True, include_reasons=True
            )
        )
        return console.export_html(inline_styles=True)


class EvaluationRunError(RuntimeError):
    """The procedure failed in one run of a case; pydantic-evals reports it as a failure."""


def _trace(outcome: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """The run's attributes (what the trace evaluators read) and metrics."""
    ctx = outcome.ctx
    calls = (plain(ctx["tool_calls"]) or []) if ctx is not None else []
    state = (plain(ctx["state"]) or {}) if ctx is not None else {}
    turns: dict[str, int] = {}
    tokens = 0
    cost = 0.0

    def walk(entries: list[Any]) -> None:
        nonlocal tokens, cost
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if entry.get("kind") == "agent":
                turns[str(entry.get("name"))] = turns.get(str(entry.get("name")), 0) + 1
                tokens += int((entry.get("usage") or {}).get("total_tokens") or 0)
                if isinstance(entry.get("cost"), (int, float)):
                    cost += float(entry["cost"])
            walk(entry.get("nested") or [])

    for rec in outcome.records.procedures.values():
        walk(rec.get("checkpoints") or [])
    attributes = {
        "tool_calls": [c.get("name") for c in calls if isinstance(c, dict)],
        "state": state if isinstance(state, dict) else {},
        "stage": plain(ctx["stage"]) if ctx is not None else None,
        "agent_turns": turns,
    }
    iterations = int(ctx["iterations"] or 0) if ctx is not None else 0
    return attributes, {"iterations": iterations, "tokens": tokens, "cost": cost}


async def run_suite(runtime: Runtime, procedure: str, runs: int | None = None) -> SuiteResult:
    """Run one procedure's evaluations with pydantic-evals and check the thresholds."""
    from pydantic_evals.dataset import increment_eval_metric, set_eval_attribute

    suite = registry(runtime).suites[procedure]
    if procedure not in runtime.procedures:
        raise CellError.simple("UsageError", f"procedure {procedure!r} is not declared in this kernel")
    runs = runs or suite.runs
    runtime.reset_interrupt()  # as a cell run does; an interrupt meanwhile cancels this task

    async def task(inputs: dict[str, Any]) -> Any:
        outcome = await run_isolated(runtime, procedure, dict(inputs), {}, offline=False)
        attributes, metrics = _trace(outcome)
        for key, value in attributes.items():
            set_eval_attribute(key, value)
        for key, amount in metrics.items():
            increment_eval_metric(key, amount)
        if not outcome.ok:
            raise EvaluationRunError(outcome.error)
        return outcome.output

    report = await suite.dataset().evaluate(task, name=procedure, max_concurrency=1, progress=False, repeat=runs)
    rows = _rows(report, runs)
    return SuiteResult(procedure, runs, report, rows, check_thresholds(suite.thresholds, rows), suite.thresholds)


def _split(name: str, runs: int) -> tuple[str, int]:
    m = re.match(r"^(.*) \[(\d+)/\d+\]$", name)
    if runs > 1 and m:
        return m.group(1), int(m.group(2))
    return name, 1


def _rows(report: EvaluationReport[Any, Any, Any], runs: int) -> list[RunRow]:
    rows = []
    for case in report.cases:
        name, run = _split(case.name, runs)
        failed = [
            f"{label}: {res.reason}" if res.reason else label
            for label, res in case.assertions.items()
            if res.value is not True
        ]
        failed += [f"{f.name}: evaluator error: {f.error_message}" for f in case.evaluator_failures]
        rows.append(
            RunRow(
                name,
                run,
                not failed,
                len(case.assertions) + len(case.evaluator_failures),
                failed,
                case.task_duration,
                int(case.metrics.get("tokens", 0)),
                float(case.metrics.get("cost", 0)),
            )
        )
    for failure in report.failures:
        name, run = _split(failure.name, runs)
        message = (
            failure.error_message.split(": ", 1)[1]
            if failure.error_message.startswith("EvaluationRunError: ")
            else failure.error_message
        )
        rows.append(RunRow(name, run, False, 0, [], 0.0, 0, 0.0, f"the procedure failed: {message}"))
    order: dict[str, int] = {}
    for c in report.cases:
        order.setdefault(_split(c.name, runs)[0], len(order))
    rows.sort(key=lambda r: (order.get(r.case, len(order)), r.case, r.run))
    return rows


def check_thresholds(thresholds: dict[str, float], rows: list[RunRow]) -> list[str]:
    """Each threshold not met, as "name limit: what was measured". With no
    thresholds, every run must pass (min_success_rate 1)."""
    limits = dict(thresholds) or {"min_success_rate": 1.0}
    problems = []
    total = len(rows)
    ok = sum(r.passed for r in rows)
    rate = ok / max(total, 1)
    default = "" if thresholds else " (the default when no thresholds are declared)"
    if "min_success_rate" in limits and rate + 1e-9 < limits["min_success_rate"]:
        problems.append(
            f"min_success_rate {_num(limits['min_success_rate'])}{default}: the success rate is "
            f"{_num(round(rate, 4))} ({ok} of {total} runs passed)"
        )
    for key, attr, unit in (
        ("max_duration", "duration", " s"),
        ("max_tokens_per_run", "tokens", ""),
        ("max_cost_per_run", "cost", ""),
    ):
        if key not in limits or not rows:
            continue
        worst = max(rows, key=lambda r: getattr(r, attr))
        value = getattr(worst, attr)
        if value > limits[key]:
            shown = f"{value:.3f}" if attr == "duration" else _num(value)
            problems.append(
                f"{key} {_num(limits[key])}{unit}: run {worst.run} of case {worst.case!r} measured {shown}{unit}"
            )
    return problems


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and not math.isinf(value) else str(value)


# ------------------------------------------------------ consistency (evaluation)
def consistency_rows(report: Any) -> list[dict[str, Any]]:
    """bdd's rows for a --runs report, with each scenario's consistency: the
    share of its runs that agree with its most common result."""
    rows = []
    for (proc, name), results in report.results.items():
        ok = sum(r.passed for r in results)
        n = len(results)
        verdict = "pass" if ok == n else ("FLAKY" if ok else "FAIL")
        rows.append(
            {
                "procedure": proc,
                "scenario": name,
                "runs": n,
                "passed": ok,
                "success rate": f"{ok / n:.0%}",
                "consistency": f"{max(ok, n - ok) / n:.0%}",
                "mean duration": f"{sum(r.duration for r in results) / n * 1000:.0f} ms",
                "result": verdict,
            }
        )
    return rows


async def run_consistency(runtime: Runtime, procedure: str, runs: int | None = None) -> tuple[Any, list[str]]:
    """Run the procedure's specifications N times; (bdd report, problems)."""
    decl = registry(runtime).consistency[procedure]
    if procedure not in spec_registry(runtime).specs:
        raise CellError.simple(
            "EvaluationError",
            f"evaluation({{runs = {decl.runs}}}) of {procedure!r} needs "
            "specifications([[...]]) to run; the procedure has none",
        )
    report = await run_specs(runtime, procedure, None, runs or decl.runs)
    problems = []
    for proc, name in report.failed:
        kind = "flaky" if (proc, name) in report.flaky else "failed"
        problems.append(f"scenario {name!r} {kind}")
    return report, problems
