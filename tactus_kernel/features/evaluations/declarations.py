"""Declarations of evaluations: ``evaluations({...})`` (a :class:`Suite`: its
cases, evaluators and thresholds) and ``evaluation({runs})`` (a
:class:`Consistency` run of the procedure's specifications), checked when
the cell runs. Running them is :mod:`tactus_kernel.features.evaluations.running`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.files import FileError, confined

if TYPE_CHECKING:
    from pydantic_evals import Dataset
    from pydantic_evals.evaluators import Evaluator


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
