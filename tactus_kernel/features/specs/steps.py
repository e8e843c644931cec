"""The built-in steps of a scenario: the set-up steps (params, human
answers) and the checks of a finished run (output, State, Stage, tool
calls, iterations), worded as in the reference Tactus where it has them.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.records import Records
from tactus_kernel.engine.values import NotRecordable, to_json, to_plain
from tactus_kernel.engine.values import parse_value as json_or_text

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime


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
    return json_or_text(text, "the value", lambda t, _what: json.loads(t))


def same(actual: Any, expected: Any) -> bool:
    """Equal, reading the expected text loosely: `true` matches true, `5` matches 5."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected or str(actual).lower() == str(expected).lower()
    if actual == expected:
        return True
    if isinstance(expected, str) and not isinstance(actual, str):
        return json.dumps(actual) == expected
    return False


def plain(value: Any) -> Any:
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
        calls = plain(ctx["tool_calls"]) or [] if ctx is not None else []
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
        actual = plain(ctx["state"][key]) if ctx is not None else None
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
            for c in (plain(ctx["tool_calls"]) or [] if ctx is not None else [])
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
        history = [str(s) for s in (plain(ctx["stage_history"]) or [])] if ctx is not None else []
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
