"""Declared params and outputs: parsing the declaration, validating values.

Params are checked before a procedure body runs (nothing runs on a bad
param); outputs after it returns (required fields present, types right,
undeclared keys stripped). Messages name the procedure and the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tactus_kernel.engine.errors import ParamError

__all__ = ["FieldSpec", "ParamError", "check_field", "parse_fields", "validate_outputs", "validate_params"]

FieldType = Literal["string", "number", "integer", "boolean", "array", "object", "any"]


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: FieldType = "any"
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    description: str | None = None


def parse_fields(decl: Any, where: str) -> dict[str, FieldSpec]:
    """Read a ``params = {...}`` / ``outputs = {...}`` declaration."""
    if decl is None or decl == [] or decl == {}:
        return {}
    if not isinstance(decl, dict):
        raise ParamError(f"{where} must be a table of field declarations")
    fields: dict[str, FieldSpec] = {}
    for name, spec in decl.items():
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict):
            raise ParamError(f'{where}.{name} must be a table such as {{type = "string"}}')
        try:
            fields[name] = FieldSpec.model_validate(spec)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ParamError(f"{where}.{name}.{loc}: {err['msg']}") from None
    return fields


def _type_ok(kind: str, value: Any) -> tuple[bool, Any]:
    """Check a JSON value against a declared type; returns (ok, normalised)."""
    if kind == "any":
        return True, value
    if kind == "string":
        return isinstance(value, str), value
    if kind == "boolean":
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if kind == "number":
        return isinstance(value, (int, float)), value
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if kind == "array":
        if value == {}:
            return True, []
        return isinstance(value, list), value
    if kind == "object":
        if value == []:
            return True, {}
        return isinstance(value, dict), value
    return False, value


def _kind_of(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def check_field(owner: str, what: str, name: str, spec: FieldSpec, value: Any) -> Any:
    ok, value = _type_ok(spec.type, value)
    if not ok:
        raise ParamError(f"{owner}: {what} '{name}' must be {spec.type}, got {_kind_of(value)} {value!r:.60}", name)
    if spec.enum is not None and value not in spec.enum:
        choices = ", ".join(repr(c) for c in spec.enum)
        raise ParamError(f"{owner}: {what} '{name}' must be one of {choices}, got {value!r:.60}", name)
    return value


def validate_params(owner: str, fields: dict[str, FieldSpec], given: dict[str, Any]) -> dict[str, Any]:
    """Apply defaults and check every param; unknown params are an error
    (a typo in a param name should not pass silently)."""
    unknown = sorted(set(given) - set(fields))
    if unknown and fields:
        known = ", ".join(sorted(fields)) or "none"
        raise ParamError(f"{owner}: unknown param '{unknown[0]}' (declared: {known})", unknown[0])
    out: dict[str, Any] = dict(given) if not fields else {}
    for name, spec in fields.items():
        if name in given and given[name] is not None:
            out[name] = check_field(owner, "param", name, spec, given[name])
        elif spec.default is not None:  # checked too: a default may come from a global (``-p``)
            out[name] = check_field(owner, "default of param", name, spec, spec.default)
        elif spec.required:
            raise ParamError(f"{owner}: required param '{name}' is missing", name)
    return out


def validate_outputs(owner: str, fields: dict[str, FieldSpec], value: Any) -> Any:
    """Check a procedure's return value against its declared outputs."""
    if not fields:
        return value
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ParamError(f"{owner}: must return a table with {', '.join(sorted(fields))}, got {_kind_of(value)}")
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        if value.get(name) is None:
            if spec.required:
                raise ParamError(f"{owner}: required output '{name}' is missing", name)
            continue
        out[name] = check_field(owner, "output", name, spec, value[name])
    return out
