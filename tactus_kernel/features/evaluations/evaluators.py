"""The reference Tactus's evaluator types as pydantic-evals evaluators.

Imported only when a cell declares evaluations (it imports pydantic-evals).
Where pydantic-evals has the check built in (``Contains``, ``EqualsExpected``,
``IsInstance``, ``LLMJudge``) that evaluator does the work; :class:`Named`
gives its result the name the declaration chose. The rest are small
``Evaluator`` subclasses that read the output, the expected output, or the
run's trace (the attributes and metrics the evaluation task set, see
``evaluations._trace``), and say why they failed.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from pydantic_evals.evaluators import (
    Contains,
    EqualsExpected,
    EvaluationReason,
    Evaluator,
    EvaluatorContext,
    IsInstance,
    LLMJudge,
)

Result = dict[str, EvaluationReason]


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _pick(output: Any, field: str | None) -> tuple[bool, Any]:
    """(found, value) of ``output`` or of ``output.field`` (dotted for nested tables)."""
    if field is None:
        return True, output
    value = output
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _where(field: str | None) -> str:
    return "the output" if field is None else f"output.{field}"


@dataclass(repr=False)
class Named(Evaluator[Any, Any, Any]):
    """A pydantic-evals evaluator whose result is reported under ``label``."""

    inner: Evaluator[Any, Any, Any]
    label: str

    async def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> Any:
        out = self.inner.evaluate(ctx)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, dict):
            if len(out) == 1:
                return {self.label: next(iter(out.values()))}
            return {f"{self.label}.{k}": v for k, v in out.items()}
        return {self.label: out}


@dataclass(repr=False)
class Check(Evaluator[Any, Any, Any]):
    """Base of the evaluators written here: one named pass/fail with a reason."""

    label: str

    def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> Result:
        problem = self.problem(ctx)
        if problem is _SKIP:
            return {}
        return {self.label: EvaluationReason(value=problem is None, reason=problem)}

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> Any:
        """None when the check passes, else why it failed."""
        raise NotImplementedError


_SKIP = object()  # nothing to check (a case without the expected output)


@dataclass(repr=False)
class FieldContains(Check):
    field: str | None
    value: Any
    case_sensitive: bool = True

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        found, actual = _pick(ctx.output, self.field)
        if not found:
            return f"{_where(self.field)} is missing"
        text = actual if isinstance(actual, str) else _show(actual)
        want = str(self.value)
        if (want in text) if self.case_sensitive else (want.lower() in text.lower()):
            return None
        return f"{_where(self.field)} {_show(actual)} does not contain {_show(self.value)}"


@dataclass(repr=False)
class FieldEquals(Check):
    field: str

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> Any:
        found_e, expected = _pick(ctx.expected_output, self.field)
        if ctx.expected_output is None or not found_e:
            return _SKIP
        found, actual = _pick(ctx.output, self.field)
        if found and actual == expected:
            return None
        return f"{_where(self.field)} is {_show(actual) if found else 'missing'}, expected {_show(expected)}"


@dataclass(repr=False)
class ContainsAny(Check):
    field: str | None
    values: list[Any] | None
    check_expected: str | None

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> Any:
        values = self.values
        if values is None:
            found_e, values = _pick(ctx.expected_output, self.check_expected)
            if not found_e:
                return _SKIP
            if not isinstance(values, list):
                values = [values]
        found, actual = _pick(ctx.output, self.field)
        text = (actual if isinstance(actual, str) else _show(actual)).lower()
        if found and any(str(v).lower() in text for v in values):
            return None
        return f"{_where(self.field)} {_show(actual)} contains none of {_show(values)}"


@dataclass(repr=False)
class Length(Check):
    field: str | None
    limit: int | None
    most: bool
    check_expected: str | None = None

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        limit = self.limit
        if self.check_expected is not None:
            found_e, value = _pick(ctx.expected_output, self.check_expected)
            if found_e and isinstance(value, int):
                limit = value
        found, actual = _pick(ctx.output, self.field)
        if not found or actual is None:
            return f"{_where(self.field)} is missing"
        n = len(actual) if isinstance(actual, (str, list, dict)) else len(str(actual))
        assert limit is not None
        if (n <= limit) if self.most else (n >= limit):
            return None
        return (
            f"{_where(self.field)} has length {n}, {'above the maximum' if self.most else 'below the minimum'} {limit}"
        )


@dataclass(repr=False)
class Regex(Check):
    field: str | None
    pattern: str
    case_sensitive: bool = True

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        found, actual = _pick(ctx.output, self.field)
        if not found:
            return f"{_where(self.field)} is missing"
        text = actual if isinstance(actual, str) else _show(actual)
        if re.search(self.pattern, text, 0 if self.case_sensitive else re.IGNORECASE):
            return None
        return f"{_where(self.field)} {_show(actual)} does not match /{self.pattern}/"


@dataclass(repr=False)
class JsonSchema(Check):
    field: str | None
    schema: dict[str, Any]

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        from jsonschema import Draft202012Validator

        found, actual = _pick(ctx.output, self.field)
        if not found:
            return f"{_where(self.field)} is missing"
        errors = sorted(Draft202012Validator(self.schema).iter_errors(actual), key=lambda e: list(e.path))
        if not errors:
            return None
        first = errors[0]
        at = "/".join(str(p) for p in first.path)
        return f"{_where(self.field)} does not match the JSON schema: {first.message}" + (f" (at {at})" if at else "")


@dataclass(repr=False)
class Range(Check):
    field: str | None
    low: float | None
    high: float | None

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        found, actual = _pick(ctx.output, self.field)
        if isinstance(actual, str):  # "42" counts, as in the reference
            try:
                actual = float(actual)
            except ValueError:
                pass
        if not isinstance(actual, (int, float)) or isinstance(actual, bool):
            return f"{_where(self.field)} is {_show(actual) if found else 'missing'}, not a number"
        if (self.low is None or actual >= self.low) and (self.high is None or actual <= self.high):
            return None
        low = "-inf" if self.low is None else _show(self.low)
        high = "inf" if self.high is None else _show(self.high)
        return f"{_where(self.field)} is {_show(actual)}, outside [{low}, {high}]"


def _count_problem(what: str, n: int, low: float | None, high: float | None) -> str | None:
    """``what`` holds ``{n}``: "the tool 'x' was called {n} time(s)"."""
    if low is not None and n < low:
        return f"{what.format(n=n)}, expected at least {_show(low)}"
    if high is not None and n > high:
        return f"{what.format(n=n)}, expected at most {_show(high)}"
    return None


@dataclass(repr=False)
class ToolCalled(Check):
    tool: str
    low: float | None
    high: float | None

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        calls = list(ctx.attributes.get("tool_calls") or [])
        problem = _count_problem(
            f"the tool {self.tool!r} was called {{n}} time(s)", calls.count(self.tool), self.low, self.high
        )
        if problem is None:
            return None
        names = sorted({str(c) for c in calls})
        return problem + (f" (tools called: {', '.join(names)})" if names else " (no tool was called)")


@dataclass(repr=False)
class AgentTurns(Check):
    agent: str | None
    low: float | None
    high: float | None

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        turns: dict[str, int] = dict(ctx.attributes.get("agent_turns") or {})
        n = sum(turns.values()) if self.agent is None else turns.get(self.agent, 0)
        who = "the agents" if self.agent is None else f"the agent {self.agent!r}"
        return _count_problem(f"{who} took {{n}} turn(s)", n, self.low, self.high)


@dataclass(repr=False)
class StateCheck(Check):
    key: str
    value: Any

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        state = ctx.attributes.get("state") or {}
        if self.key not in state:
            return f"the state has no {self.key!r}"
        if self.value is None or state[self.key] == self.value:
            return None
        return f"the state {self.key!r} is {_show(state[self.key])}, expected {_show(self.value)}"


@dataclass(repr=False)
class MetricAtMost(Check):
    metric: str
    limit: float

    def problem(self, ctx: EvaluatorContext[Any, Any, Any]) -> str | None:
        value = ctx.metrics.get(self.metric, 0)
        if value <= self.limit:
            return None
        return f"{self.metric} {_show(value)}, above the maximum {_show(self.limit)}"


def judge_model(name: str | None) -> tuple[Any, str]:
    """The judge's model: the named one when it can be used, else pydantic-ai's
    offline ``TestModel``, answering a pass with a reason that says it judged
    nothing (``TACTUS_OFFLINE=1``, ``model = "test"``, or no API key)."""
    from pydantic_ai.models.test import TestModel

    from tactus_kernel.features.agents.config import DEFAULT_MODEL_ENV, TEST_MODEL, missing_key, offline

    chosen = name or os.environ.get(DEFAULT_MODEL_ENV) or DEFAULT_JUDGE
    why = None
    if chosen == TEST_MODEL:
        why = 'model = "test"'
    elif offline():
        why = "TACTUS_OFFLINE=1"
    else:
        var = missing_key(chosen)
        if var is not None:
            why = f"{var} is not set for {chosen}"
    if why is None:
        return chosen, chosen
    reason = f"offline judge (pydantic-ai TestModel; {why}): not a real judgement"
    return TestModel(custom_output_args={"reason": reason, "pass": True, "score": 1.0}), "test"


DEFAULT_JUDGE = "openai:gpt-4o"


def build(config: dict[str, Any]) -> Evaluator[Any, Any, Any]:
    kind, label, field = config["type"], config["name"], config.get("field")
    case_sensitive = bool(config.get("case_sensitive", True))
    low, high = config.get("min_value"), config.get("max_value")
    if kind == "contains":
        if field is None:
            return Named(Contains(value=config["value"], case_sensitive=case_sensitive), label)
        return FieldContains(label, field, config["value"], case_sensitive)
    if kind in ("equals_expected", "exact_match"):
        return Named(EqualsExpected(), label) if field is None else FieldEquals(label, field)
    if kind == "contains_any":
        return ContainsAny(label, field, config.get("value"), config.get("check_expected"))
    if kind == "is_instance":
        return Named(IsInstance(type_name=config["value"]), label)
    if kind in ("min_length", "max_length"):
        return Length(label, field, config.get("value"), kind == "max_length", config.get("check_expected"))
    if kind == "regex":
        return Regex(label, field, config["pattern"], case_sensitive)
    if kind == "json_schema":
        return JsonSchema(label, field, config["json_schema"])
    if kind == "range":
        return Range(label, field, low, high)
    if kind == "tool_called":
        return ToolCalled(label, config["value"], 1 if low is None else low, high)
    if kind == "agent_turns":
        return AgentTurns(label, field, 1 if low is None else low, high)
    if kind == "state_check":
        return StateCheck(label, str(field), config.get("value"))
    if kind in ("max_iterations", "max_tokens", "max_cost"):
        metric = {"max_iterations": "iterations", "max_tokens": "tokens", "max_cost": "cost"}[kind]
        return MetricAtMost(label, metric, config["value"])
    if kind == "llm_judge":
        model, _ = judge_model(config.get("model"))
        return Named(
            LLMJudge(
                rubric=config["rubric"],
                model=model,
                include_input=bool(config.get("include_input", True)),
                include_expected_output=bool(config.get("include_expected", False)),
            ),
            label,
        )
    raise ValueError(f"unknown evaluator type {kind!r}")
