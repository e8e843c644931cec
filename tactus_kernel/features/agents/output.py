"""Declared fields as JSON schema (tool parameters) and pydantic models
(``output_type``).

Both use the procedure language's field syntax (``{type = "string",
required = true, enum = {...}, description = ..., default = ...}``) so a
user writes params, outputs, tool params and agent outputs the same way.
``output_type`` becomes a real pydantic model because pydantic-ai validates
structured output against it and asks the model to retry when it does not
fit; a plain JSON schema would not be validated.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from tactus_kernel.engine.fields import FieldSpec, ParamError, parse_fields

JSON_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "integer",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}
PY_TYPES: dict[str, Any] = {"string": str, "number": float, "integer": int, "boolean": bool, "any": Any}


def _raw_fields(decl: Any) -> dict[str, Any]:
    """The raw declaration table (keeps ``items``/``fields`` that FieldSpec ignores)."""
    if decl is None or decl == [] or decl == {}:
        return {}
    if not isinstance(decl, dict):
        return {}
    return {k: ({"type": v} if isinstance(v, str) else v) for k, v in decl.items()}


def field_json_schema(spec: FieldSpec, raw: dict[str, Any]) -> dict[str, Any]:
    """JSON schema of one declared field, nested ``items``/``fields`` included."""
    out: dict[str, Any] = {}
    if spec.type in JSON_TYPES:
        out["type"] = JSON_TYPES[spec.type]
    if spec.description:
        out["description"] = spec.description
    if spec.enum is not None:
        out["enum"] = spec.enum
    if spec.default is not None:
        out["default"] = spec.default
    items = raw.get("items")
    if spec.type == "array" and isinstance(items, (dict, str)):
        item_raw = {"type": items} if isinstance(items, str) else items
        out["items"] = field_json_schema(FieldSpec.model_validate(item_raw), item_raw)
    nested = raw.get("fields") or raw.get("properties")
    if spec.type == "object" and isinstance(nested, dict):
        out.update(object_json_schema(nested, "fields"))
    return out


def object_json_schema(decl: Any, where: str) -> dict[str, Any]:
    """``params = {...}`` -> ``{"type": "object", "properties": ..., "required": [...]}``."""
    fields = parse_fields(decl, where)
    raw = _raw_fields(decl)
    props = {name: field_json_schema(spec, raw.get(name, {})) for name, spec in fields.items()}
    required = [name for name, spec in fields.items() if spec.required]
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _annotation(spec: FieldSpec, raw: dict[str, Any], model_name: str) -> Any:
    if spec.enum is not None and spec.enum:
        return Literal[tuple(spec.enum)]
    if spec.type == "array":
        items = raw.get("items")
        if isinstance(items, (dict, str)):
            item_raw = {"type": items} if isinstance(items, str) else items
            return list[_annotation(FieldSpec.model_validate(item_raw), item_raw, model_name + "Item")]  # type: ignore[misc]
        return list[Any]
    if spec.type == "object":
        nested = raw.get("fields") or raw.get("properties")
        if isinstance(nested, dict) and nested:
            return output_model(nested, model_name)
        return dict[str, Any]
    return PY_TYPES.get(spec.type, Any)


def output_model(decl: Any, name: str = "Output") -> type[BaseModel]:
    """A pydantic model for an ``output_type`` declaration.

    Undeclared keys are refused (``extra="forbid"``) so a model that invents
    fields is asked to retry rather than silently trusted.
    """
    if not isinstance(decl, dict) or not decl:
        raise ParamError('output_type must be a table of fields, e.g. {city = {type = "string", required = true}}')
    fields = parse_fields(decl, "output_type")
    raw = _raw_fields(decl)
    definitions: dict[str, Any] = {}
    for field_name, spec in fields.items():
        ann = _annotation(spec, raw.get(field_name, {}), name + field_name.title().replace("_", ""))
        info = Field(description=spec.description) if spec.description else Field()
        if spec.required:
            definitions[field_name] = (ann, info)
        else:
            default = spec.default
            info = Field(default=default, description=spec.description) if spec.description else Field(default=default)
            definitions[field_name] = (ann | None if default is None else ann, info)
    return create_model(name, __config__=ConfigDict(extra="forbid"), **definitions)
