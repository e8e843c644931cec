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

import itertools
import json
import os
import re
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.records import Records
from tactus_kernel.engine.values import NotRecordable, to_json, to_lua, to_plain

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import CellRun, Runtime


class SpecError(ValueError):
    """Gherkin that does not parse, or a specification without a procedure."""


@dataclass
class Spec:
    """The specifications of one procedure."""

    procedure: str
    text: str
    feature: str
    pickles: list[dict[str, Any]]


def parse(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Gherkin text -> (feature name, pickles). Raises SpecError with the parser's message."""
    from gherkin.errors import CompositeParserException, ParserError
    from gherkin.parser import Parser
    from gherkin.pickles.compiler import Compiler

    try:
        document: dict[str, Any] = dict(Parser().parse(text))
    except (CompositeParserException, ParserError) as exc:
        raise SpecError(f"the Gherkin does not parse: {exc}") from None
    feature = document.get("feature")
    if not feature:
        raise SpecError("the Gherkin has no Feature")
    document["uri"] = "specifications"
    pickles: list[dict[str, Any]] = [dict(p) for p in Compiler().compile(document)]  # type: ignore[arg-type]
    if not pickles:
        raise SpecError(f"feature {feature.get('name')!r} has no scenarios")
    return str(feature.get("name", "")), pickles


class SpecRegistry:
    """Specifications declared in this kernel, by procedure."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.specs: dict[str, Spec] = {}
        self.pending: list[tuple[CellRun, str, str, list[dict[str, Any]]]] = []

    def declare(self, text: str, procedure: str | None, cell: CellRun) -> None:
        feature, pickles = parse(text)
        if procedure is not None:
            self.specs[procedure] = Spec(procedure, text, feature, pickles)
        else:
            self.pending.append((cell, text, feature, pickles))

    def resolve(self, cell: CellRun) -> None:
        """Specifications that name no procedure belong to the procedure their
        cell declares, else to the last one declared before."""
        keep = []
        for owner, text, feature, pickles in self.pending:
            if owner is not cell:
                keep.append((owner, text, feature, pickles))
                continue
            target = cell.declared[0] if cell.declared else next(reversed(self.runtime.procedures), None)
            if target is None:
                self.runtime.host.write(
                    "stderr",
                    "Tactus: specifications() found no procedure to belong to; "
                    "declare the procedure first or name it: "
                    'specifications("name", [[...]])\n',
                )
                continue
            self.specs[target] = Spec(target, text, feature, pickles)
        self.pending = keep


_REGISTRIES: weakref.WeakKeyDictionary[Runtime, SpecRegistry] = weakref.WeakKeyDictionary()


def registry(runtime: Runtime) -> SpecRegistry:
    reg = _REGISTRIES.get(runtime)
    if reg is None:
        reg = _REGISTRIES[runtime] = SpecRegistry(runtime)
    return reg


# ---------------------------------------------------------------- results
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
class Outcome:
    """A finished run of the procedure under test."""

    ok: bool
    output: Any
    error: str
    ctx: Any
    stdout: str
    records: Records


class StepFailed(Exception):
    pass


class CaptureHost:
    """Where a scenario's procedure writes: kept, shown only on failure."""

    timeline_widgets = False

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, stream: str, text: str) -> None:
        self.parts.append(text)

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        text = data.get("text/plain")
        if text:
            self.parts.append(str(text) + "\n")

    def records_changed(self) -> None:
        pass


# ------------------------------------------------------------ built-in steps
KEYWORDS = {"Context": "Given", "Action": "When", "Outcome": "Then", "Conjunction": "And", "Unknown": "*"}
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
SETUP = [
    (re.compile(r"^the procedure has started$"), "started"),
    (re.compile(r"^the (\w+) parameter is (.+)$"), "param"),
    (re.compile(rf"^the human approves {_QUOTED}$"), "approve"),
    (re.compile(rf"^the human rejects {_QUOTED}$"), "reject"),
    (re.compile(rf"^the human answers {_QUOTED} with {_QUOTED}$"), "answer"),
    (re.compile(rf"^the human (?:reviews|decides) {_QUOTED} with {_QUOTED}$"), "answer"),
    (re.compile(rf"^the human resolves {_QUOTED}$"), "resolve"),
]
RUN = re.compile(
    r"^(?:the procedure (?:runs?|is run|has run|starts)|"
    r"the (\w+) agent takes (?:a )?turns?)$"
)


def parse_value(text: str) -> Any:
    """``"prod"`` or ``prod`` -> "prod", ``3`` -> 3, ``true`` -> True, ``{"a": 1}`` -> dict."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def same(actual: Any, expected: Any) -> bool:
    """Equal, reading the expected text loosely: `true` matches true, `5` matches 5."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected or str(actual).lower() == str(expected).lower()
    if actual == expected:
        return True
    if isinstance(expected, str) and not isinstance(actual, str):
        return json.dumps(actual) == expected
    return False


def _plain(value: Any) -> Any:
    try:
        return to_json(value)
    except NotRecordable:
        return to_plain(value)


def check(text: str, outcome: Outcome) -> bool:
    """Evaluate a built-in check; False when no built-in step matches."""
    if check_reference(text, outcome):
        return True
    ctx = outcome.ctx
    m = re.match(
        r"^the (\w+) tool should (not )?be called(?: (at least|at most|exactly) (\d+ times?|once|twice))?$", text
    )
    if m:
        name, negated, how, n = m.group(1), bool(m.group(2)), m.group(3), m.group(4)
        n = {"once": "1", "twice": "2"}.get(n, n.split()[0]) if n else n
        calls = _plain(ctx["tool_calls"]) or [] if ctx is not None else []
        count = sum(1 for c in calls if isinstance(c, dict) and c.get("name") == name)
        if negated:
            if count:
                raise StepFailed(f"the {name} tool was called {count} time(s)")
        elif how is None:
            if not count:
                raise StepFailed(f"the {name} tool was not called" + _called(calls))
        else:
            want = int(n)
            good = {"at least": count >= want, "at most": count <= want, "exactly": count == want}[how]
            if not good:
                raise StepFailed(f"the {name} tool was called {count} time(s), expected {how} {want}")
        return True
    m = re.match(r"^the stage should be (.+)$", text)
    if m:
        want = parse_value(m.group(1))
        stage = ctx["stage"] if ctx is not None else None
        if stage != want:
            raise StepFailed(f"the stage is {stage!r}, expected {want!r}")
        return True
    m = re.match(r"^the state (\S+) should exist$", text)
    if m:
        key = parse_value(m.group(1))
        if ctx is None or ctx["state"][key] is None:
            raise StepFailed(f"the state has no {key!r}")
        return True
    m = re.match(r"^the state (\S+) should be (.+)$", text)
    if m:
        key, want = parse_value(m.group(1)), parse_value(m.group(2))
        actual = _plain(ctx["state"][key]) if ctx is not None else None
        if not same(actual, want):
            raise StepFailed(
                f"the state {key!r} is {json.dumps(actual, default=str)}, expected {json.dumps(want, default=str)}"
            )
        return True
    m = re.match(r"^the output (\S+) should be (.+)$", text)
    if m:
        key, want = parse_value(m.group(1)), parse_value(m.group(2))
        actual = outcome.output.get(key) if isinstance(outcome.output, dict) else None
        if not same(actual, want):
            raise StepFailed(
                f"the output {key!r} is {json.dumps(actual, default=str)}, expected {json.dumps(want, default=str)}"
            )
        return True
    if re.match(r"^the procedure should (?:complete successfully|succeed|complete)$", text):
        if not outcome.ok:
            raise StepFailed(f"the procedure failed: {outcome.error}")
        return True
    m = re.match(r"^the procedure should fail(?: with (.+))?$", text)
    if m:
        if outcome.ok:
            raise StepFailed("the procedure completed")
        if m.group(1) and str(parse_value(m.group(1))) not in outcome.error:
            raise StepFailed(f"the procedure failed with {outcome.error!r}")
        return True
    m = re.match(r"^iterations should be (less than|at most|at least|more than) (\d+)$", text)
    if m:
        n = int(ctx["iterations"] or 0) if ctx is not None else 0
        how, want = m.group(1), int(m.group(2))
        good = {"less than": n < want, "at most": n <= want, "at least": n >= want, "more than": n > want}[how]
        if not good:
            raise StepFailed(f"iterations are {n}, expected {how} {want}")
        return True
    m = re.match(r"^the stop reason should contain (.+)$", text)
    if m:
        reason = str(ctx["stop"]["reason"] or "") if ctx is not None else ""
        if str(parse_value(m.group(1))) not in reason:
            raise StepFailed(f"the stop reason is {reason!r}")
        return True
    return False


def _output(outcome: Outcome, key: str) -> tuple[bool, Any]:
    """Whether the run's output has `key`, and its value."""
    out = outcome.output
    if not isinstance(out, dict) or out.get(key) is None:
        return False, None
    return True, out[key]


def _shown(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def check_reference(text: str, outcome: Outcome) -> bool:
    """The reference Tactus's built-in steps this kernel had no form of
    (tactus/testing/steps/builtin.py there), worded as there; False when
    none matches."""
    ctx = outcome.ctx
    m = re.match(r"^the output (\w+) should exist$", text) or re.match(r"^the output should contain (\w+)$", text)
    if m:
        if not _output(outcome, m.group(1))[0]:
            raise StepFailed(f"the output has no {m.group(1)!r}" + _keys(outcome.output))
        return True
    m = re.match(r"^the output (\w+) should not be (.+)$", text)
    if m:
        key, want = m.group(1), parse_value(m.group(2))
        actual = _output(outcome, key)[1]
        if same(actual, want):
            raise StepFailed(f"the output {key!r} is {_shown(actual)}")
        return True
    m = re.match(r"^the output (\w+) should match pattern (.+)$", text)
    if m:
        from tactus_kernel.features.specs.matchers import MatcherError, search

        key, pattern = m.group(1), str(parse_value(m.group(2)))
        present, actual = _output(outcome, key)
        if not present:
            raise StepFailed(f"the output has no {key!r}" + _keys(outcome.output))
        try:
            found = search(pattern, actual if isinstance(actual, str) else _shown(actual))
        except MatcherError as exc:
            raise StepFailed(str(exc)) from None
        if not found:
            raise StepFailed(f"the output {key!r} is {_shown(actual)}, which does not match {pattern!r}")
        return True
    m = re.match(r"^the state should contain (\w+)$", text)
    if m:
        if ctx is None or ctx["state"][m.group(1)] is None:
            raise StepFailed(f"the state has no {m.group(1)!r}")
        return True
    m = re.match(r"^the (\w+) tool should be called with (\w+)=(.+)$", text)
    if m:
        name, param, want = m.group(1), m.group(2), parse_value(m.group(3))
        calls = [
            c
            for c in (_plain(ctx["tool_calls"]) or [] if ctx is not None else [])
            if isinstance(c, dict) and c.get("name") == name
        ]
        if not calls:
            raise StepFailed(f"the {name} tool was not called")
        seen = [(c.get("args") or {}).get(param) if isinstance(c.get("args"), dict) else None for c in calls]
        if not any(same(v, want) for v in seen):
            raise StepFailed(
                f"the {name} tool was called with {param} = "
                f"{', '.join(_shown(v) for v in seen)}, expected {_shown(want)}"
            )
        return True
    m = re.match(r"^(?:the stage is|we are in stage) (.+)$", text)
    if m:
        want, stage = parse_value(m.group(1)), ctx["stage"] if ctx is not None else None
        if stage != want:
            raise StepFailed(f"the stage is {stage!r}, expected {want!r}")
        return True
    m = re.match(r"^the stage should transition from (\S+) to (\S+)$", text)
    if m:
        a, b = parse_value(m.group(1)), parse_value(m.group(2))
        history = [str(s) for s in (_plain(ctx["stage_history"]) or [])] if ctx is not None else []
        if (a, b) not in itertools.pairwise(history):
            path = " -> ".join(history) if history else "no stage was set"
            raise StepFailed(f"the stage did not go from {a!r} to {b!r} (stages: {path})")
        return True
    m = re.match(r"^the stop reason should be (.+)$", text)
    if m:
        want = str(parse_value(m.group(1)))
        reason = ctx["stop"]["reason"] if ctx is not None else None
        if reason != want:
            raise StepFailed(f"the stop reason is {reason!r}, expected {want!r}")
        return True
    m = re.match(r"^the total iterations should be (less than|greater than|more than|at most|at least) (\d+)$", text)
    if m:
        n, how, want = _iterations(ctx), m.group(1), int(m.group(2))
        good = {
            "less than": n < want,
            "greater than": n > want,
            "more than": n > want,
            "at most": n <= want,
            "at least": n >= want,
        }[how]
        if not good:
            raise StepFailed(f"the total iterations are {n}, expected {how} {want}")
        return True
    m = re.match(r"^the total iterations should be between (\d+) and (\d+)$", text)
    if m:
        n, low, high = _iterations(ctx), int(m.group(1)), int(m.group(2))
        if not low <= n <= high:
            raise StepFailed(f"the total iterations are {n}, expected between {low} and {high}")
        return True
    m = re.match(r"^the agent'?s? context should include (.+)$", text)
    if m:
        want, context = str(parse_value(m.group(1))), _agent_context(outcome.records)
        if want not in context:
            raise StepFailed(f"no agent turn was given {want!r}" + ("" if context else " (no agent took a turn)"))
        return True
    m = re.match(r"^the agent should take at least (\d+) turns?$", text)
    if m:
        n, want = _iterations(ctx), int(m.group(1))
        if n < want:
            raise StepFailed(f"the agents took {n} turn(s), expected at least {want}")
        return True
    return False


def _agent_context(records: Records) -> str:
    """What the run's agents were given: each turn's system prompt and message."""
    parts: list[str] = []
    for rec in records.procedures.values():
        for entry in rec.get("checkpoints", []):
            request = entry.get("request") if entry.get("kind") == "agent" else None
            if isinstance(request, dict):
                parts += [str(request.get(k) or "") for k in ("system_prompt", "message")]
    return "\n".join(p for p in parts if p)


def _iterations(ctx: Any) -> int:
    """Agent turns in the run (Iterations.current())."""
    return int(ctx["iterations"] or 0) if ctx is not None else 0


def _keys(output: Any) -> str:
    if isinstance(output, dict) and output:
        return f" (its keys: {', '.join(sorted(map(str, output)))})"
    return " (the procedure returned no table)" if not isinstance(output, dict) else " (the output is empty)"


def _called(calls: list[Any]) -> str:
    names = sorted({str(c.get("name")) for c in calls if isinstance(c, dict)})
    return f" (tools called: {', '.join(names)})" if names else " (no tool was called)"


def _setup(text: str, params: dict[str, str], answers: dict[str, Any]) -> bool:
    for pattern, what in SETUP:
        m = pattern.match(text)
        if not m:
            continue
        if what == "started":
            pass  # the procedure runs at the first step that checks it
        elif what == "param":
            params[m.group(1)] = m.group(2).strip()  # read by coerce_params, by the declared type
        elif what == "approve":
            answers[_unescape(m.group(1))] = True
        elif what == "reject":
            answers[_unescape(m.group(1))] = False
        elif what == "answer":
            answers[_unescape(m.group(1))] = _unescape(m.group(2))
        elif what == "resolve":
            answers[_unescape(m.group(1))] = True
        return True
    return False


def coerce_params(runtime: Runtime, procedure: str, raw: dict[str, str]) -> dict[str, Any]:
    """Scenario text -> param values, by the declared types: ``the version
    parameter is 2.1`` gives "2.1" to a string param and 2.1 to a number."""
    spec = runtime.procedures.get(procedure)
    fields = spec.params if spec is not None else {}
    out: dict[str, Any] = {}
    for name, text in raw.items():
        value = parse_value(text)
        field = fields.get(name)
        if field is not None and field.type == "string" and not isinstance(value, str):
            value = text
        out[name] = value
    return out


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\\\", "\\")


# ---------------------------------------------------------------- running
async def run_isolated(
    runtime: Runtime, procedure: str, params: dict[str, Any], answers: dict[str, Any], offline: bool = True
) -> Outcome:
    """Run `procedure` on fresh records, in batch mode, offline (``offline=False``:
    agents choose their model as in a cell; evaluations run so); the
    notebook's records, answers, host and cell are restored afterwards."""
    from tactus_kernel.engine.runtime import CellRun
    from tactus_kernel.features.composition.effects import hub_of

    rt = runtime
    saved = (rt.records, rt.answers, rt.batch, rt.host, rt._cell, rt.param_overrides, rt.allow_divergence)
    saved_env = os.environ.get("TACTUS_OFFLINE")
    host = CaptureHost()
    records = Records()
    cell = CellRun("[test]", f"test {procedure}", collecting=False)
    rt.records, rt.answers, rt.batch, rt.host, rt._cell = records, dict(answers), True, host, cell
    rt.param_overrides, rt.allow_divergence = {}, False
    if offline:
        os.environ["TACTUS_OFFLINE"] = "1"
    hub = hub_of(rt)
    try:
        top = rt._new_run(cell.key, None, cell)
        ok, *rest = rt._b_begin_run(procedure, to_lua(rt.lua, params), top.id, procedure)
        if not ok:
            return Outcome(False, None, str(rest[0]), None, "".join(host.parts), records)
        run_id, params_lua = rest
        ctx = rt.K.new_ctx(run_id, procedure, params_lua, 1)
        try:
            values = await rt._drive(rt.K.start(rt.K.child_main(procedure, params_lua), ctx))
            output = _plain(values[0]) if values else None
            ok, error = True, ""
        except CellError as exc:
            ok, output, error = False, None, f"{exc.ename}: {exc.evalue}"
            if exc.ename == "NoRecordedAnswer":
                error = (
                    f"NoRecordedAnswer: {exc.evalue.split(' has no recorded answer')[0]} was not answered "
                    'by the scenario (add e.g. Given the human approves "<message>")'
                )
        if hub is not None:
            await hub.shutdown(cell)
        return Outcome(ok, output, error, ctx, "".join(host.parts), records)
    finally:
        for observer in rt.run_observers:
            observer.cell_closed(cell)
        for run_id in [i for i, r in rt.runs.items() if r.cell is cell]:
            del rt.runs[run_id]
        (rt.records, rt.answers, rt.batch, rt.host, rt._cell, rt.param_overrides, rt.allow_divergence) = saved
        if saved_env is None:
            os.environ.pop("TACTUS_OFFLINE", None)
        else:
            os.environ["TACTUS_OFFLINE"] = saved_env


async def _custom_step(runtime: Runtime, text: str, outcome: Outcome | None) -> str | None:
    """Run a step(text, fn) in the finished run's context: "passed", or None if none matches."""
    if not runtime.K.has_step(text):
        return None
    ctx = outcome.ctx if outcome is not None and outcome.ctx is not None else runtime.K.new_ctx(0, "[test]", None, 1)
    try:
        status = await runtime._drive(runtime.K.start(runtime.K.step_main(text), ctx))
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


# ---------------------------------------------------------------- reports
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
    runtime._interrupted = False  # as a cell run does; an interrupt meanwhile cancels this task
    runtime.K.reset_interrupt()
    for proc, pickle in select(runtime, procedure, scenario):
        if proc not in runtime.procedures:
            raise CellError.simple("UsageError", f"procedure {proc!r} is not declared in this kernel")
        for _ in range(runs):
            report.add(await run_scenario(runtime, proc, pickle))
    return report


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
                try:
                    runs = int(args[i + 1])
                except ValueError:
                    raise CellError.simple("UsageError", f"--runs needs a number: {usage}") from None
                if runs < 1:
                    raise CellError.simple("UsageError", f"--runs must be at least 1: {usage}")
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
