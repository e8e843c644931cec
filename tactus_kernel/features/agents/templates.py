"""Prompt templates: ``{params.topic}``, ``{state.count}``, ``{env.USER}``.

Rendered at each turn (not at declaration), so a prompt sees the params of
the procedure that takes the turn and the state as it is now. Only the
four known namespaces are placeholders: any other brace text (JSON examples
in a prompt) is left alone. A missing value renders as an empty string,
because state that is not set yet is normal on a first turn. ``{env.X}``
refuses names that look like secrets (``OPENAI_API_KEY``, ``*_TOKEN``...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from tactus_kernel.features.agents.config import ConfigError

# Environment variables a template may not read: a prompt is sent to the
# provider and recorded in the notebook, and a key must end up in neither.
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)

PLACEHOLDER = re.compile(r"\{(params|state|context|env)\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")


def _lookup(root: Any, path: list[str]) -> Any:
    value = root
    for part in path:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and 0 < int(part) <= len(value):
            value = value[int(part) - 1]
        else:
            return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def uses(templates: list[str], *spaces: str) -> bool:
    """Does any template have a placeholder in one of these namespaces?"""
    return any("{" in t and any("{" + space + "." in t for space in spaces) for t in templates)


def render(
    template: str | None, params: Mapping[str, Any], state: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> str | None:
    """Fill a template's placeholders; ``context.x`` means state x, else param x."""
    if template is None or "{" not in template:
        return template
    environ = os.environ if env is None else env

    def fill(match: re.Match[str]) -> str:
        space, path = match.group(1), match.group(2).split(".")
        if space == "env":
            if SECRET.search(match.group(2)):
                raise ConfigError(
                    f"{{env.{match.group(2)}}}: a template may not read a secret-looking variable "
                    "(prompts are sent to the model and recorded in the notebook)"
                )
            return environ.get(match.group(2), "")
        if space == "params":
            return _text(_lookup(params, path))
        if space == "state":
            return _text(_lookup(state, path))
        value = _lookup(state, path)
        return _text(value if value is not None else _lookup(params, path))

    return PLACEHOLDER.sub(fill, template)
