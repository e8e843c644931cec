"""BDD specifications: ``specifications([[Gherkin]])``, ``step(text, fn)`` and
``%tactus test [procedure] [--scenario NAME] [--runs N]``.

Scenarios are parsed with ``gherkin-official`` (imported on first use) and
compiled to pickles, so ``Scenario Outline`` examples and ``Background``
steps work as in any Gherkin runner. A scenario runs its procedure once,
in isolation:

* on fresh, throw-away records (the notebook's checkpoints are never read
  or written), in batch mode, so a human request the scenario does not
  answer fails at once (``NoRecordedAnswer``) instead of showing a card;
* with agents on their offline model (``TACTUS_OFFLINE=1`` while it runs);
* with the params and human answers its ``Given`` steps set up.

The procedure runs when the first step that is not a set-up step is
reached; the remaining steps then check the finished run: its output,
State, Stage, tool calls and iterations, read from the run's own Lua
context. A custom ``step(text, fn)`` runs in that context too, so
``State.get`` inside it sees the run's state; it fails by raising
(``assert``) or returning ``false``. With ``--runs N`` each scenario runs N
times and the report gives each one's success rate and names the flaky
ones (passed some runs, failed others).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.bridge import LUA_ERRORS, lua_message
from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.host import BaseHost
from tactus_kernel.engine.records import Records
from tactus_kernel.engine.runs import CellRun, Session
from tactus_kernel.engine.values import to_lua
from tactus_kernel.features.specs.registry import registry
from tactus_kernel.features.specs.report import Report, ScenarioResult, StepResult
from tactus_kernel.features.specs.steps import (
    KEYWORDS,
    RUN,
    SETUP,
    Outcome,
    StepFailed,
    _setup,
    check,
    coerce_params,
    plain,
)

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime


class CaptureHost(BaseHost):
    """Where a scenario's procedure writes: kept, shown only on failure."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, stream: str, text: str) -> None:
        self.parts.append(text)

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, display_id: str | None = None
    ) -> None:
        text = data.get("text/plain")
        if text:
            self.parts.append(str(text) + "\n")


# ---------------------------------------------------------------- running
async def run_isolated(
    runtime: Runtime, procedure: str, params: dict[str, Any], answers: dict[str, Any], offline: bool = True
) -> Outcome:
    """Run `procedure` on fresh records, in batch mode, offline (``offline=False``:
    agents choose their model as in a cell; evaluations run so), with its
    output captured: an isolated run (``Runtime.isolated``) on a session of
    its own, so the notebook's records, answers and host are never touched."""
    host = CaptureHost()
    records = Records()
    cell = CellRun("[test]", f"test {procedure}", collecting=False)
    session = Session(records=records, host=host, batch=True, answers=dict(answers), offline=offline)
    ctx = None
    async with runtime.isolated(cell, session):
        try:
            run, params_lua = runtime.begin_run(procedure, to_lua(runtime.lua, params), cell, record_key=procedure)
        except LUA_ERRORS as exc:
            return Outcome(False, None, lua_message(exc), None, "".join(host.parts), records)
        ctx = runtime.K.new_ctx(run.id, procedure, params_lua, 1)
        try:
            values = await runtime.drive(runtime.K.start(runtime.K.child_main(procedure, params_lua), ctx))
            output = plain(values[0]) if values else None
            ok, error = True, ""
        except CellError as exc:
            ok, output, error = False, None, f"{exc.ename}: {exc.evalue}"
            request = exc.failure.request
            if exc.failure.kind == "NoRecordedAnswer" and request is not None:
                error = (
                    f'NoRecordedAnswer: procedure "{exc.failure.procedure}": {request.get("text")} was not '
                    'answered by the scenario (add e.g. Given the human approves "<message>")'
                )
    # after the isolated cell stopped what the run left running
    return Outcome(ok, output, error, ctx, "".join(host.parts), records)


async def _custom_step(runtime: Runtime, text: str, outcome: Outcome | None) -> str | None:
    """Run a step(text, fn) in the finished run's context: "passed", or None if none matches."""
    if not runtime.K.has_step(text):
        return None
    ctx = outcome.ctx if outcome is not None and outcome.ctx is not None else runtime.K.new_ctx(0, "[test]", None, 1)
    try:
        status = await runtime.drive(runtime.K.start(runtime.K.step_main(text), ctx))
    except CellError as exc:
        raise StepFailed(exc.evalue if exc.ename in ("LuaError", "") else f"{exc.ename}: {exc.evalue}") from None
    return str(status[0]) if status else "passed"


async def run_scenario(runtime: Runtime, procedure: str, pickle: dict[str, Any]) -> ScenarioResult:
    params: dict[str, str] = {}
    answers: dict[str, Any] = {}
    results: list[StepResult] = []
    outcome: Outcome | None = None
    failed = False
    t0 = time.perf_counter()
    keyword = "Given"
    for step in pickle.get("steps", []):
        text = str(step.get("text", "")).strip()
        kind = KEYWORDS.get(str(step.get("type", "Unknown")), "*")
        if kind not in ("And", "*"):
            keyword = kind
        if failed:
            results.append(StepResult(keyword, text, "skipped"))
            continue
        try:
            if outcome is None and _setup(text, params, answers):
                results.append(StepResult(keyword, text, "passed"))
                continue
            if outcome is None:
                outcome = await run_isolated(runtime, procedure, coerce_params(runtime, procedure, params), answers)
            if RUN.match(text):
                results.append(StepResult(keyword, text, "passed"))
                continue
            status = await _custom_step(runtime, text, outcome)
            if status is None:
                if any(p.match(text) for p, _ in SETUP):
                    raise StepFailed("a set-up step must come before the steps that check the run")
                if not check(text, outcome):
                    results.append(
                        StepResult(keyword, text, "undefined", "no built-in step matches and no step(...) defines it")
                    )
                    failed = True
                    continue
            results.append(StepResult(keyword, text, "passed"))
        except StepFailed as exc:
            results.append(StepResult(keyword, text, "failed", str(exc)))
            failed = True
    if outcome is None:
        outcome = await run_isolated(runtime, procedure, coerce_params(runtime, procedure, params), answers)
    return ScenarioResult(
        procedure, str(pickle.get("name", "")), results, time.perf_counter() - t0, outcome.stdout, outcome.error
    )


def select(runtime: Runtime, procedure: str | None, scenario: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(procedure, pickle) pairs to run; raises CellError naming what exists."""
    specs = registry(runtime).specs
    if procedure is not None:
        if procedure not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise CellError.simple(
                "UsageError", f"procedure {procedure!r} has no specifications (procedures with specifications: {known})"
            )
        chosen = [specs[procedure]]
    else:
        chosen = list(specs.values())
        if not chosen:
            raise CellError.simple(
                "UsageError", "no specifications declared yet: add specifications([[...]]) in the procedure's cell"
            )
    pairs = [
        (spec.procedure, p) for spec in chosen for p in spec.pickles if scenario is None or p.get("name") == scenario
    ]
    if not pairs:
        names = sorted({str(p.get("name")) for spec in chosen for p in spec.pickles})
        raise CellError.simple("UsageError", f"no scenario named {scenario!r} (scenarios: {', '.join(names)})")
    return pairs


async def run_specs(
    runtime: Runtime, procedure: str | None = None, scenario: str | None = None, runs: int = 1
) -> Report:
    report = Report(runs)
    runtime.reset_interrupt()  # as a cell run does; an interrupt meanwhile cancels this task
    for proc, pickle in select(runtime, procedure, scenario):
        if proc not in runtime.procedures:
            raise CellError.simple("UsageError", f"procedure {proc!r} is not declared in this kernel")
        for _ in range(runs):
            report.add(await run_scenario(runtime, proc, pickle))
    return report


def runs_value(text: str, usage: str) -> int:
    """The value of ``--runs`` (``%tactus test`` and ``%tactus eval``): a whole number, at least 1."""
    try:
        runs = int(text)
    except ValueError:
        raise CellError.simple("UsageError", f"--runs needs a number: {usage}") from None
    if runs < 1:
        raise CellError.simple("UsageError", f"--runs must be at least 1: {usage}")
    return runs


def parse_test_args(args: list[str]) -> tuple[str | None, str | None, int]:
    usage = "%tactus test [procedure] [--scenario NAME] [--runs N]"
    procedure = scenario = None
    runs = 1
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--scenario", "--runs"):
            if i + 1 >= len(args):
                raise CellError.simple("UsageError", f"{a} needs a value: {usage}")
            if a == "--scenario":
                scenario = args[i + 1]
            else:
                runs = runs_value(args[i + 1], usage)
            i += 2
            continue
        if a.startswith("--") or procedure is not None:
            raise CellError.simple("UsageError", usage)
        procedure = a
        i += 1
    return procedure, scenario, runs


async def test_command(runtime: Runtime, args: list[str]) -> None:
    """``%tactus test``: run the scenarios, show the table, fail the cell if any failed."""
    from tactus_kernel.engine.display import bundle, text_table

    procedure, scenario, runs = parse_test_args(args)
    report = await run_specs(runtime, procedure, scenario, runs)
    rows = report.rows()
    shown = bundle([rows])
    runtime.host.display(
        {"text/plain": text_table(rows), "text/html": shown.get("text/html", "")}, {"tactus": {"bdd": True}}
    )
    runtime.host.write("stdout", report.summary() + "\n")
    failures = report.failures()
    if failures:
        runtime.host.write("stderr", failures + "\n")
    if report.failed:
        what = "flaky" if report.flaky and len(report.flaky) == len(report.failed) else "failed"
        raise CellError.simple(
            "SpecificationError",
            f"{len(report.failed)} of {len(report.results)} "
            f"scenario(s) {what}: " + ", ".join(name for _, name in report.failed),
        )
