"""The results of scenario runs and their tables (``%tactus test``,
``pytest --tactus-specs``, ``evaluation({runs = N})``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepResult:
    keyword: str
    text: str
    status: str  # passed, failed, skipped, undefined
    message: str = ""


@dataclass
class ScenarioResult:
    procedure: str
    scenario: str
    steps: list[StepResult]
    duration: float
    output: str = ""  # what the procedure printed
    error: str = ""  # how the procedure failed, if it did

    @property
    def passed(self) -> bool:
        return all(s.status == "passed" for s in self.steps)

    def counts(self) -> tuple[int, int]:
        return (
            sum(s.status == "passed" for s in self.steps),
            sum(s.status in ("failed", "undefined") for s in self.steps),
        )

    def first_failure(self) -> StepResult | None:
        return next((s for s in self.steps if s.status in ("failed", "undefined")), None)


@dataclass
class Report:
    """Every run of every selected scenario."""

    runs: int
    results: dict[tuple[str, str], list[ScenarioResult]] = field(default_factory=dict)

    def add(self, result: ScenarioResult) -> None:
        self.results.setdefault((result.procedure, result.scenario), []).append(result)

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [k for k, rs in self.results.items() if not all(r.passed for r in rs)]

    @property
    def flaky(self) -> list[tuple[str, str]]:
        return [k for k, rs in self.results.items() if any(r.passed for r in rs) and not all(r.passed for r in rs)]

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for (proc, name), rs in self.results.items():
            if self.runs == 1:
                r = rs[0]
                passed, failed = r.counts()
                rows.append(
                    {
                        "procedure": proc,
                        "scenario": name,
                        "steps passed": passed,
                        "steps failed": failed,
                        "duration": f"{r.duration * 1000:.0f} ms",
                        "result": "pass" if r.passed else "FAIL",
                    }
                )
            else:
                ok = sum(r.passed for r in rs)
                mean = sum(r.duration for r in rs) / len(rs)
                verdict = "pass" if ok == len(rs) else ("FLAKY" if ok else "FAIL")
                rows.append(
                    {
                        "procedure": proc,
                        "scenario": name,
                        "runs": len(rs),
                        "passed": ok,
                        "success rate": f"{100 * ok / len(rs):.0f}%",
                        "mean duration": f"{mean * 1000:.0f} ms",
                        "result": verdict,
                    }
                )
        return rows

    def summary(self) -> str:
        total = sum(len(rs) for rs in self.results.values())
        ok = sum(r.passed for rs in self.results.values() for r in rs)
        line = f"{len(self.results)} scenario(s), {total} run(s): {ok} passed, {total - ok} failed"
        if self.runs > 1:
            line += f"; success rate {100 * ok / max(total, 1):.0f}%"
            if self.flaky:
                line += "; flaky: " + ", ".join(name for _, name in self.flaky)
        return line

    def failures(self) -> str:
        lines = []
        for (proc, name), rs in self.results.items():
            bad = next((r for r in rs if not r.passed), None)
            if bad is None:
                continue
            step = bad.first_failure()
            where = f"{step.keyword} {step.text}: {step.message}" if step else "(no step failed)"
            lines.append(f"✗ {proc} · {name}: {where}")
            if bad.error:
                lines.append(f"    the procedure failed: {bad.error}")
            if bad.output.strip():
                lines.extend("    | " + line for line in bad.output.rstrip().splitlines()[-10:])
        return "\n".join(lines)
