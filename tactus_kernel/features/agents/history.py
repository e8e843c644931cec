"""Message histories: who sees what, what the model is sent, what is hashed.

A procedure run keeps one history per agent (``mode = "isolated"``, the
default) or one history every agent of the run shares (``mode =
"shared"``). The stored history is complete; filters (``last_n``,
``token_budget``, ``by_role``, ``compose``) only shape the view sent to the
model, so a filter can be changed without losing anything. Views are
repaired after filtering: a tool call without its result, or a result
without its call, is rejected by providers, so such orphans are dropped.

The request hash of a turn covers a *projection* of the history (message
kinds, part kinds, text, tool names and args), never timestamps or ids, so
a history rebuilt from the record on replay hashes like the live one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from tactus_kernel.features.agents.config import ConfigError

ROLES = ("user", "assistant", "system", "tool")
MODES = ("isolated", "shared")
SOURCES = {"shared": "shared", "own": "isolated", "isolated": "isolated"}  # session.source -> mode


class HistoryError(ConfigError):
    """A bad history operation or filter (message is for the user)."""


# ----------------------------------------------------------- serialisation
# Parts whose ``content`` is required yet may be None (a tool that returns nothing).
_CONTENT_REQUIRED = frozenset({"tool-return", "builtin-tool-return", "instruction-delta"})


def dump(messages: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """JSON-mode dump by pydantic-ai's ``ModelMessagesTypeAdapter``: the form recorded in checkpoints.

    ``exclude_none``: the record lives in the notebook file, and None is the
    default of nearly every such field; the few required ones are put back.
    """
    dumped: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python(list(messages), mode="json", exclude_none=True)
    for message in dumped:
        for part in message.get("parts", ()):
            if "content" not in part and part.get("part_kind") in _CONTENT_REQUIRED:
                part["content"] = None
    return dumped


def load(data: Any) -> list[ModelMessage]:
    return list(ModelMessagesTypeAdapter.validate_python(data or []))


def role_of(message: ModelMessage) -> str:
    if isinstance(message, ModelResponse):
        return "assistant"
    kinds = {type(p) for p in message.parts}
    if UserPromptPart in kinds:
        return "user"
    if kinds and kinds <= {SystemPromptPart}:
        return "system"
    return "tool"


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def simple(messages: Iterable[ModelMessage]) -> list[dict[str, Any]]:
    """``MessageHistory.get()``: one ``{role, content}`` per part a person reads."""
    out: list[dict[str, Any]] = []
    for m in messages:
        for p in m.parts:
            if isinstance(p, SystemPromptPart):
                out.append({"role": "system", "content": p.content})
            elif isinstance(p, UserPromptPart):
                out.append({"role": "user", "content": _text_of(p.content)})
            elif isinstance(p, TextPart):
                out.append({"role": "assistant", "content": p.content})
            elif isinstance(p, ToolCallPart):
                out.append({"role": "assistant", "tool_call": p.tool_name, "args": p.args_as_dict()})
            elif isinstance(p, ToolReturnPart):
                out.append({"role": "tool", "tool_name": p.tool_name, "content": _text_of(p.content)})
            elif isinstance(p, RetryPromptPart):
                out.append({"role": "tool" if p.tool_name else "user", "content": _text_of(p.content)})
    return out


def from_simple(message: Any) -> ModelMessage:
    """``MessageHistory.append({role, content})`` -> a pydantic-ai message."""
    if not isinstance(message, dict):
        raise HistoryError("MessageHistory.append: expected a table {role = ..., content = ...}")
    role = message.get("role", "user")
    content = message.get("content")
    if not isinstance(content, str):
        content = _text_of(content)
    if role == "user":
        return ModelRequest(parts=[UserPromptPart(content)])
    if role == "system":
        return ModelRequest(parts=[SystemPromptPart(content)])
    if role == "assistant":
        return ModelResponse(parts=[TextPart(content)])
    raise HistoryError(f"MessageHistory.append: role must be user, assistant or system, got {role!r}")


def projection(messages: Iterable[ModelMessage]) -> list[Any]:
    """What of a history goes into a request hash (no times, no ids)."""
    out: list[Any] = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        for p in m.parts:
            item: dict[str, Any] = {"part": p.part_kind}
            for attr in ("content", "tool_name"):
                if hasattr(p, attr):
                    item[attr] = _text_of(getattr(p, attr))
            if isinstance(p, ToolCallPart):
                item["args"] = p.args_as_dict()
            parts.append(item)
        out.append({"kind": m.kind, "parts": parts})
    return out


# ----------------------------------------------------------------- filters
def estimate_tokens(message: ModelMessage) -> int:
    """A provider-independent estimate (about four characters a token)."""
    chars = 0
    for p in message.parts:
        for attr in ("content", "args", "tool_name"):
            value = getattr(p, attr, None)
            if value is not None:
                chars += len(_text_of(value))
    return max(1, chars // 4)


def _repair(messages: list[ModelMessage]) -> list[ModelMessage]:
    """Drop tool calls without results (and results without calls)."""
    call_ids = {p.tool_call_id for m in messages for p in m.parts if isinstance(p, ToolCallPart)}
    return_ids = {
        p.tool_call_id
        for m in messages
        for p in m.parts
        if isinstance(p, (ToolReturnPart, RetryPromptPart)) and p.tool_name
    }
    out: list[ModelMessage] = []
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        if isinstance(m, ModelResponse):
            # the last response may keep open calls: the next request answers them
            parts = [p for p in m.parts if not isinstance(p, ToolCallPart) or p.tool_call_id in return_ids or last]
            if parts:
                out.append(
                    m
                    if len(parts) == len(m.parts)
                    else ModelResponse(parts=parts, model_name=m.model_name, timestamp=m.timestamp, usage=m.usage)
                )
        else:
            req_parts = [
                p
                for p in m.parts
                if not (
                    isinstance(p, (ToolReturnPart, RetryPromptPart)) and p.tool_name and p.tool_call_id not in call_ids
                )
            ]
            if req_parts:
                out.append(
                    m if len(req_parts) == len(m.parts) else ModelRequest(parts=req_parts, instructions=m.instructions)
                )
    return out


def apply_filter(spec: Any, messages: list[ModelMessage]) -> list[ModelMessage]:
    """Apply one filter descriptor (built in Lua by ``filters.*``)."""
    if spec is None or spec == {} or spec == []:
        return messages
    if not isinstance(spec, dict) or "filter" not in spec:
        raise HistoryError("message_history.filter must come from filters.last_n/token_budget/by_role/compose")
    kind = spec["filter"]
    if kind == "last_n":
        n = int(spec.get("n", 0))
        view = messages[-n:] if n > 0 else []
        # never start on tool results whose calls were cut off
        while view and role_of(view[0]) == "tool":
            view = view[1:]
        return _repair(view)
    if kind == "token_budget":
        budget = int(spec.get("tokens", 0))
        kept: list[ModelMessage] = []
        used = 0
        for m in reversed(messages):
            cost = estimate_tokens(m)
            if used + cost > budget and kept:
                break
            kept.append(m)
            used += cost
        kept.reverse()
        while len(kept) > 1 and role_of(kept[0]) == "tool":
            kept = kept[1:]
        return _repair(kept)
    if kind == "by_role":
        roles = spec.get("roles") or spec.get("role")
        wanted = {roles} if isinstance(roles, str) else set(roles or [])
        bad = sorted(wanted - set(ROLES))
        if bad:
            raise HistoryError(f"filters.by_role: unknown role {bad[0]!r} (roles: {', '.join(ROLES)})")
        return _repair([m for m in messages if role_of(m) in wanted])
    if kind == "compose":
        for inner in spec.get("filters") or []:
            messages = apply_filter(inner, messages)
        return messages
    raise HistoryError(f"unknown history filter {kind!r}")


def view(messages: list[ModelMessage], config: dict[str, Any]) -> list[ModelMessage]:
    """The history a turn sends: the configured filter, then ``max_tokens``.

    Always a new list: the stored history grows after the turn, the view
    (part of the recorded request) must not.
    """
    out = list(apply_filter(config.get("filter"), messages))
    max_tokens = config.get("max_tokens")
    if isinstance(max_tokens, (int, float)) and not isinstance(max_tokens, bool) and max_tokens > 0:
        out = apply_filter({"filter": "token_budget", "tokens": int(max_tokens)}, out)
    return out


def check_config(config: Any, where: str) -> dict[str, Any]:
    """Validate a ``message_history = {mode, max_tokens, filter}`` table."""
    if config is None or config == [] or config == {}:
        return {}
    if not isinstance(config, dict):
        raise HistoryError(f"{where}: message_history must be a table {{mode = ..., filter = ...}}")
    config = dict(config)
    if "source" in config:  # the reference's session = {source = "shared" | "own", filter = ...}
        source = config.pop("source")
        if source not in SOURCES:
            raise HistoryError(f"{where}: message_history.source must be shared or own, got {source!r}")
        config.setdefault("mode", SOURCES[source])
    mode = config.get("mode", "isolated")
    if mode not in MODES:
        raise HistoryError(f"{where}: message_history.mode must be isolated or shared, got {mode!r}")
    unknown = sorted(set(config) - {"mode", "max_tokens", "filter"})
    if unknown:
        raise HistoryError(
            f"{where}: unknown message_history key '{unknown[0]}' (known: mode, source, max_tokens, filter)"
        )
    apply_filter(config.get("filter"), [])  # validates the descriptor
    return config
