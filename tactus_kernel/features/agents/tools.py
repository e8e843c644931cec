"""Tool declarations: ``tool(name, {description, params}, fn)``.

Only the declaration lives here (name, description, fields, JSON schema);
the function stays in Lua and is run as its own coroutine when a model
calls it (see :mod:`.service`). Kept free of pydantic-ai so declaring a
tool does not pay for importing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tactus_kernel.engine.fields import FieldSpec, ParamError, parse_fields
from tactus_kernel.features.agents.output import object_json_schema

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DONE = "done"


@dataclass(frozen=True)
class ToolSpec:
    """A declared tool, as the model is told about it."""

    name: str
    description: str
    fields: dict[str, FieldSpec]
    schema: dict[str, Any]

    def for_hash(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "schema": self.schema}


def parse_tool(name: str, spec: Any) -> ToolSpec:
    """Validate a ``tool(...)`` declaration; raises ParamError with the tool's name."""
    if not NAME.match(name):
        raise ParamError(f'tool: name must be an identifier such as "search", got {name!r}')
    if name == DONE:
        raise ParamError("tool 'done' is built in (it sets Stop); give your tool another name")
    if spec is None or spec == []:
        spec = {}
    if not isinstance(spec, dict):
        raise ParamError(f"tool '{name}': the spec must be a table {{description = ..., params = {{...}}}}")
    unknown = sorted(set(spec) - {"description", "params"})
    if unknown:
        raise ParamError(f"tool '{name}': unknown key '{unknown[0]}' (known: description, params)")
    description = spec.get("description") or f"The {name} tool."
    if not isinstance(description, str):
        raise ParamError(f"tool '{name}': description must be a string")
    where = f"tool '{name}': params"
    return ToolSpec(
        name, description, parse_fields(spec.get("params"), where), object_json_schema(spec.get("params"), where)
    )


DONE_TOOL = ToolSpec(
    name=DONE,
    description="Call this when the task is finished. reason: a short summary of the outcome; "
    "success: false if the task could not be completed.",
    fields={
        "reason": FieldSpec(type="string", required=True, description="Why you are done: the outcome."),
        "success": FieldSpec(type="boolean", default=True, description="Whether the task succeeded."),
    },
    schema={
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "Why you are done: the outcome."},
            "success": {"type": "boolean", "description": "Whether the task succeeded.", "default": True},
        },
        "required": ["reason"],
        "additionalProperties": False,
    },
)
