"""Evaluations on pydantic-evals: ``evaluations({...})``, ``evaluation({...})``
and ``%tactus eval [NAME] [--runs N]``.

``evaluations({dataset, dataset_file, evaluators, runs, parallel, thresholds})``
becomes a ``pydantic_evals.Dataset`` of ``Case``s (one per dataset entry:
its ``inputs`` are the procedure's params), with one pydantic-evals
evaluator per entry of ``evaluators`` (the reference Tactus's types; the
built-in ``Contains``, ``EqualsExpected``, ``IsInstance`` and ``LLMJudge``
where they fit, small ``Evaluator`` subclasses for the rest). The task
pydantic-evals runs for each case runs the procedure on the kernel's own
machinery, exactly as a specification scenario does (``bdd.run_isolated``):
a fresh run on throw-away records in batch mode, so an evaluation never
replays, reads or writes the notebook's checkpoints. What the run did (tool
calls, state, stage, iterations, agent turns, tokens, cost) is handed to the
evaluators as the case's attributes and metrics.

``evaluation({runs, parallel})`` asks for consistency runs of the
procedure's specifications: each scenario runs ``runs`` times and the
report gives each one's success rate, consistency and flakiness.

Cases run one at a time whatever ``parallel`` says: every run shares the
kernel's one Lua state.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.files import FileError, confined

if TYPE_CHECKING:
    from pydantic_evals import Dataset
    from pydantic_evals.evaluators import Evaluator
    from pydantic_evals.reporting import EvaluationReport

    from tactus_kernel.engine.runtime import Runtime


class EvalConfigError(ValueError):
    """A declaration that cannot be used; the message names the field."""


SUITE_KEYS = ("dataset", "dataset_file", "evaluators", "runs", "parallel", "thresholds")
CASE_KEYS = ("name", "inputs", "expected_output", "metadata")
THRESHOLDS = ("min_success_rate", "max_cost_per_run", "max_duration", "max_tokens_per_run")
EVALUATOR_KEYS = (
    "type",
    "name",
    "field",
    "value",
    "check_expected",
    "rubric",
    "model",
    "include_expected",
    "include_input",
    "pattern",
    "case_sensitive",
    "json_schema",
    "min_value",
    "max_value",
)
DEFAULT_JUDGE_MODEL = "openai:gpt-4o"


@dataclass
class CaseSpec:
    name: str
    inputs: dict[str, Any]
    expected_output: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    """The evaluations of one procedure (``procedure`` is None until the
    cell that declared them ends, when it names no procedure)."""

    procedure: str | None
    cases: list[CaseSpec]
    evaluators: list[dict[str, Any]]
    runs: int = 1
    parallel: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    what: str = "evaluations"

    def dataset(self) -> Dataset[Any, Any, Any]:
        """A fresh pydantic-evals Dataset for this suite."""
        from pydantic_evals import Case, Dataset

        cases = [
            Case(name=c.name, inputs=c.inputs, expected_output=c.expected_output, metadata=c.metadata)
            for c in self.cases
        ]
        return Dataset(name=str(self.procedure), cases=cases, evaluators=[build_evaluator(e) for e in self.evaluators])


@dataclass
class Consistency:
    """``evaluation({runs, parallel})``: run the specifications N times."""

    procedure: str | None
    runs: int = 1
    parallel: bool = False
    what: str = "evaluation"


# ------------------------------------------------------------- declaration
def _unknown(what: str, given: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise EvalConfigError(f"unknown {what} {', '.join(map(repr, extra))} (known: {', '.join(known)})")


def _runs(config: Mapping[str, Any]) -> int:
    runs = config.get("runs", 1)
    if isinstance(runs, float) and runs.is_integer():
        runs = int(runs)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise EvalConfigError(f"runs must be a whole number of at least 1, got {json.dumps(runs)}")
    return runs


def _parallel(config: Mapping[str, Any]) -> bool:
    parallel = config.get("parallel", False)
    if not isinstance(parallel, bool):
        raise EvalConfigError(f"parallel must be true or false, got {json.dumps(parallel)}")
    return parallel


def parse_suite(config: Any, procedure: str | None, root: Path) -> Suite:
    """Check an ``evaluations({...})`` table and build its cases and evaluators."""
    if not isinstance(config, dict):
        raise EvalConfigError("expected a table with dataset and evaluators")
    _unknown("key", config, SUITE_KEYS)
    cases: list[CaseSpec] = []
    if config.get("dataset_file") is not None:
        cases.extend(load_cases(str(config["dataset_file"]), root))
    inline = config.get("dataset", [])
    if inline == {}:
        inline = []
    if not isinstance(inline, list):
        raise EvalConfigError('dataset must be a list of cases, e.g. dataset = {{name = "a", inputs = {...}}}')
    cases.extend(_case(c, f"dataset[{i + 1}]", len(cases) + 1) for i, c in enumerate(inline))
    if not cases:
        raise EvalConfigError('no cases: give dataset = {...} or dataset_file = "cases.jsonl"')
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EvalConfigError(f"case names must be unique: {', '.join(map(repr, dupes))} appear more than once")
    evaluators = config.get("evaluators", [])
    if evaluators == {}:
        evaluators = []
    if not isinstance(evaluators, list) or not evaluators:
        raise EvalConfigError(
            'evaluators must be a non-empty list, e.g. evaluators = {{type = "contains", value = "Hello"}}'
        )
    labels: list[str] = []
    checked = []
    for i, ev in enumerate(evaluators):
        ev = _evaluator_config(ev, f"evaluators[{i + 1}]")
        label = ev["name"]
        n = 2
        while label in labels:
            label = f"{ev['name']} #{n}"
            n += 1
        labels.append(label)
        checked.append({**ev, "name": label})
        build_evaluator(checked[-1])  # fails here, at the declaration, not when it runs
    thresholds = config.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise EvalConfigError("thresholds must be a table, e.g. thresholds = {min_success_rate = 0.9}")
    _unknown("threshold", thresholds, THRESHOLDS)
    for key, value in thresholds.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise EvalConfigError(f"thresholds.{key} must be a number of at least 0, got {json.dumps(value)}")
    if "min_success_rate" in thresholds and thresholds["min_success_rate"] > 1:
        raise EvalConfigError(
            f"thresholds.min_success_rate is a fraction from 0 to 1, got {thresholds['min_success_rate']}"
        )
    return Suite(
        procedure, cases, checked, _runs(config), _parallel(config), {k: float(v) for k, v in thresholds.items()}
    )


def parse_consistency(config: Any, procedure: str | None, root: Path) -> Suite | Consistency:
    """Check an ``evaluation({runs, parallel})`` table. One that carries a
    dataset or evaluators (the reference's later spelling) is an
    ``evaluations`` declaration."""
    if not isinstance(config, dict):
        raise EvalConfigError("expected a table, e.g. evaluation({runs = 5})")
    if "dataset" in config or "evaluators" in config or "dataset_file" in config:
        return parse_suite(config, procedure, root)
    _unknown("key", config, ("runs", "parallel"))
    return Consistency(procedure, _runs(config), _parallel(config))


def _case(raw: Any, where: str, number: int) -> CaseSpec:
    if not isinstance(raw, dict):
        raise EvalConfigError(f"{where} must be a table with name and inputs, got {json.dumps(raw, default=str)}")
    _unknown(f"key in {where}:", raw, CASE_KEYS)
    inputs = raw.get("inputs", {})
    if inputs == []:
        inputs = {}
    if not isinstance(inputs, dict):
        raise EvalConfigError(
            f"{where}.inputs must be a table of the procedure's params, got {json.dumps(inputs, default=str)}"
        )
    metadata = raw.get("metadata", {})
    if metadata == []:
        metadata = {}
    if not isinstance(metadata, dict):
        raise EvalConfigError(f"{where}.metadata must be a table, got {json.dumps(metadata, default=str)}")
    name = raw.get("name", f"case {number}")
    return CaseSpec(str(name), inputs, raw.get("expected_output"), metadata)


def load_cases(path: str, root: Path) -> list[CaseSpec]:
    """Cases from a JSONL, JSON or CSV file in the notebook's folder.

    JSONL: one case object per line. JSON: a list of cases, or
    ``{"cases": [...]}``. CSV: a header row; ``name`` names the case,
    ``expected_output`` is the expected output (JSON when it parses),
    ``expected_output.F``, ``metadata.K`` and ``inputs.P`` fill those tables,
    every other column is an input too (JSON when it parses as a number,
    boolean or null).
    """
    where = f"dataset_file {path!r}"
    try:
        target = confined(root, path)
    except FileError as exc:
        raise EvalConfigError(f"{where}: {exc}") from None
    if not target.is_file():
        raise EvalConfigError(f"{where}: no such file in the notebook's folder")
    try:
        text = target.read_text("utf-8")
    except UnicodeDecodeError:
        raise EvalConfigError(f"{where}: not UTF-8 text") from None
    suffix = target.suffix.lower()
    raws: list[Any]
    if suffix == ".jsonl":
        raws = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                raws.append(_json(line, f"{where}, line {n}"))
    elif suffix == ".json":
        data = _json(text, where)
        listed = data.get("cases") if isinstance(data, dict) else data
        if not isinstance(listed, list):
            raise EvalConfigError(f'{where}: expected a list of cases or {{"cases": [...]}}')
        raws = listed
    elif suffix == ".csv":
        raws = [_csv_case(row) for row in csv.DictReader(io.StringIO(text))]
    else:
        raise EvalConfigError(f"{where}: expected a .jsonl, .json or .csv file")
    return [_case(raw, f"{where}, case {i + 1}", i + 1) for i, raw in enumerate(raws)]


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise EvalConfigError(f"{where}: not JSON: {exc}") from None


def _cell_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, (bool, int, float)) else text


def _csv_case(row: dict[str, str]) -> dict[str, Any]:
    case: dict[str, Any] = {"inputs": {}}
    for column, text in row.items():
        if column is None:
            continue
        if column == "name":
            case["name"] = text
        elif column == "expected_output":
            try:
                case["expected_output"] = json.loads(text)
            except ValueError:
                case["expected_output"] = text
        elif column.startswith("expected_output."):
            case.setdefault("expected_output", {})[column.split(".", 1)[1]] = _cell_value(text)
        elif column.startswith("metadata."):
            case.setdefault("metadata", {})[column.split(".", 1)[1]] = _cell_value(text)
        elif column.startswith("inputs."):
            case["inputs"][column.split(".", 1)[1]] = _cell_value(text)
        else:
            case["inputs"][column] = _cell_value(text)
    return case


# -------------------------------------------------------------- evaluators
EVALUATOR_TYPES = (
    "equals_expected",
    "exact_match",
    "contains",
    "contains_any",
    "is_instance",
    "min_length",
    "max_length",
    "regex",
    "json_schema",
    "range",
    "tool_called",
    "state_check",
    "agent_turns",
    "max_iterations",
    "max_tokens",
    "max_cost",
    "llm_judge",
)


def _evaluator_config(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise EvalConfigError(f'{where} must be a table with a type, e.g. {{type = "contains", value = "Hi"}}')
    _unknown(f"key in {where}:", raw, EVALUATOR_KEYS)
    kind = raw["type"]
    raw = dict(raw)
    # the reference also takes these from `value`: a regex's pattern, a
    # schema, a range's {min = ..., max = ...}
    if kind == "regex" and raw.get("pattern") is None and isinstance(raw.get("value"), str):
        raw["pattern"] = raw.pop("value")
    if kind == "json_schema" and raw.get("json_schema") is None and isinstance(raw.get("value"), dict):
        raw["json_schema"] = raw.pop("value")
    if kind == "range" and isinstance(raw.get("value"), dict):
        bounds = raw.pop("value")
        raw.setdefault("min_value", bounds.get("min"))
        raw.setdefault("max_value", bounds.get("max"))
    if kind not in EVALUATOR_TYPES:
        raise EvalConfigError(f"{where}: unknown evaluator type {kind!r} (known: {', '.join(EVALUATOR_TYPES)})")

    def need(key: str, types: tuple[type, ...], example: str) -> None:
        value = raw.get(key)
        if value is None or not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise EvalConfigError(f"{where} ({kind}) needs {key}, e.g. {example}")

    if kind in ("contains",):
        need("value", (str, int, float, dict, list), 'value = "Hello"')
    if kind in ("min_length", "max_length", "max_iterations", "max_tokens"):
        if raw.get("value") is None and not (kind == "min_length" and raw.get("check_expected")):
            need("value", (int,), "value = 10")
        elif raw.get("value") is not None:
            need("value", (int,), "value = 10")
    if kind == "max_cost":
        need("value", (int, float), "value = 0.05")
    if kind == "contains_any" and not raw.get("check_expected"):
        need("value", (list,), 'value = {"yes", "no"}')
    if kind == "is_instance":
        need("value", (str,), 'value = "dict"')
    if kind == "regex":
        need("pattern", (str,), 'pattern = "^Hello"')
        try:
            re.compile(raw["pattern"], 0 if raw.get("case_sensitive", True) else re.IGNORECASE)
        except re.error as exc:
            raise EvalConfigError(f"{where} (regex): the pattern {raw['pattern']!r} does not compile: {exc}") from None
    if kind == "json_schema":
        need("json_schema", (dict,), 'json_schema = {type = "object", required = {"greeting"}}')
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(raw["json_schema"])
        except SchemaError as exc:
            raise EvalConfigError(f"{where} (json_schema): not a valid JSON schema: {exc.message}") from None
    if kind == "range" and raw.get("min_value") is None and raw.get("max_value") is None:
        raise EvalConfigError(f"{where} (range) needs min_value or max_value, e.g. min_value = 0, max_value = 100")
    if kind == "tool_called":
        need("value", (str,), 'value = "search"')
    if kind == "state_check":
        need("field", (str,), 'field = "status"')
    if kind == "llm_judge":
        need("rubric", (str,), 'rubric = "The greeting is friendly"')
    for key in ("min_value", "max_value"):
        if raw.get(key) is not None and (not isinstance(raw[key], (int, float)) or isinstance(raw[key], bool)):
            raise EvalConfigError(f"{where} ({kind}): {key} must be a number, got {json.dumps(raw[key])}")
    if raw.get("field") is not None and not isinstance(raw["field"], str):
        raise EvalConfigError(f"{where} ({kind}): field must be a name, got {json.dumps(raw['field'])}")
    default = kind if raw.get("field") is None else f"{kind}({raw['field']})"
    if kind == "tool_called":
        default = f"tool_called({raw['value']})"
    return {**raw, "name": str(raw.get("name") or default)}


def build_evaluator(config: dict[str, Any]) -> Evaluator[Any, Any, Any]:
    """One checked evaluator config -> a pydantic-evals evaluator whose
    results carry the config's name."""
    from tactus_kernel.features.evaluations import evaluators as ev

    return ev.build(config)


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
    from tactus_kernel.features.specs.bdd import _plain

    ctx = outcome.ctx
    calls = (_plain(ctx["tool_calls"]) or []) if ctx is not None else []
    state = (_plain(ctx["state"]) or {}) if ctx is not None else {}
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
        "stage": _plain(ctx["stage"]) if ctx is not None else None,
        "agent_turns": turns,
    }
    iterations = int(ctx["iterations"] or 0) if ctx is not None else 0
    return attributes, {"iterations": iterations, "tokens": tokens, "cost": cost}


async def run_suite(runtime: Runtime, procedure: str, runs: int | None = None) -> SuiteResult:
    """Run one procedure's evaluations with pydantic-evals and check the thresholds."""
    from pydantic_evals.dataset import increment_eval_metric, set_eval_attribute

    from tactus_kernel.features.specs.bdd import run_isolated

    suite = _registry(runtime).suites[procedure]
    if procedure not in runtime.procedures:
        raise CellError.simple("UsageError", f"procedure {procedure!r} is not declared in this kernel")
    runs = runs or suite.runs
    runtime._interrupted = False  # as a cell run does; an interrupt meanwhile cancels this task
    runtime.K.reset_interrupt()

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


def _registry(runtime: Runtime) -> Any:
    from tactus_kernel.features.evaluations.effects import registry

    return registry(runtime)


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
    from tactus_kernel.features.specs.bdd import registry as spec_registry
    from tactus_kernel.features.specs.bdd import run_specs

    decl = _registry(runtime).consistency[procedure]
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
            try:
                runs = int(args[i + 1])
            except ValueError:
                raise CellError.simple("UsageError", f"--runs needs a number: {USAGE}") from None
            if runs < 1:
                raise CellError.simple("UsageError", f"--runs must be at least 1: {USAGE}")
            i += 2
            continue
        if a.startswith("--") or procedure is not None:
            raise CellError.simple("UsageError", USAGE)
        procedure = a
        i += 1
    return procedure, runs


def selected(runtime: Runtime, procedure: str | None) -> list[tuple[str, str]]:
    """("evaluations" | "evaluation", procedure) pairs to run."""
    reg = _registry(runtime)
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
