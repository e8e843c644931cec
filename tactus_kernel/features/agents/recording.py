"""What a turn leaves in the record, and how a replayed turn is checked against it.

A turn is recorded as a checkpoint (``kind = "agent"``) with its messages
(pydantic-ai's ``ModelMessagesTypeAdapter``, JSON mode), usage, cost, tool
calls, and the request it sent: readable (:meth:`Request.summary`) and
hashed (``request_hash``). Replay compares the hash of the request it is
about to send with the recorded one: a request that differs is a
divergence, reported field by field, never a silent reuse.

The hashes are part of every recorded notebook: the way they are computed
here must not change, or recorded notebooks stop replaying.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_ai.messages import ModelMessage, ModelResponse

from tactus_kernel.engine.records import describe_entry
from tactus_kernel.features.agents import history as hist
from tactus_kernel.features.agents.config import TRANSPORT
from tactus_kernel.features.agents.tools import ToolSpec

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import RunState

NOT_RECORDABLE = "not recordable: "  # what a turn's messages say when they could not be recorded
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "requests", "tool_calls")  # as in agents.lua
# What a changed digest means, for divergence messages.
DIGEST_MEANING = {
    "history": "the message history sent differs",
    "tools": "a tool's description or params differ",
    "output": "the output_type differs",
}
_HASH_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
_UNPRICED: set[tuple[str | None, str | None]] = set()  # (provider, model) genai-prices does not know


def digest(data: Any) -> str:
    """The recorded form of a hash: sha256 of canonical JSON, 16 hex digits."""
    return hashlib.sha256(_HASH_JSON.encode(data).encode("utf-8")).hexdigest()[:16]


def history_digest(messages: list[ModelMessage]) -> str:
    """The digest of a history: of the list of its messages' own digests.

    Each message is hashed by its projection (no times, no ids), so a
    history rebuilt from the record hashes like the live one. Hashing the
    list of per-message digests (rather than the projection at once) is
    the form every recorded notebook holds.
    """
    return digest([digest(hist.projection([m])) for m in messages])


def tools_digest(tools: list[ToolSpec]) -> str:
    """The digest of the tools a turn offers: names, descriptions, params."""
    return digest([t.for_hash() for t in tools])


@dataclass(slots=True)
class Request:
    """What a turn asks the model: hashed for replay, summarised on divergence."""

    model: str
    settings: dict[str, Any]
    instructions: str | None
    message: str | None
    tools: list[ToolSpec]
    history: list[ModelMessage]  # the view sent (a list of its own: the stored history grows after the turn)
    output_digest: str

    def summary(self) -> dict[str, Any]:
        """The readable request, plus digests of its bulky parts, for the record."""
        return {
            "model": self.model,
            # transport settings (retries, timeouts) do not change what is asked
            "settings": {k: v for k, v in self.settings.items() if k not in TRANSPORT},
            "system_prompt": self.instructions,
            "message": self.message,
            "tools": [t.name for t in self.tools],
            "history": len(self.history),
            "digests": {
                "history": history_digest(self.history),
                "tools": tools_digest(self.tools),
                "output": self.output_digest,
            },
        }


def divergence(run: RunState, agent: str, entry: dict[str, Any], now: dict[str, Any]) -> str:
    """Why a turn's request (summary ``now``) differs from the recorded ``entry``, field by field."""
    position = run.log.position  # already advanced past the entry
    lines = [
        f"replay diverged in procedure {run.key!r} at checkpoint #{position}: agent '{agent}' "
        "was sent a different request than the recorded turn"
    ]
    recorded = entry.get("request") or {}
    changed = [k for k in now if k != "digests" and k in recorded and recorded[k] != now[k]]
    for k in changed:
        lines.append(f"  {k}: recorded {json.dumps(recorded[k], ensure_ascii=False)[:200]}")
        lines.append(f"  {' ' * len(k)}  now      {json.dumps(now[k], ensure_ascii=False)[:200]}")
    old_digests = recorded.get("digests") or {}
    for k, meaning in DIGEST_MEANING.items():
        if k in old_digests and old_digests[k] != now["digests"][k] and k not in changed:
            lines.append(f"  {k}: {meaning}")
    if len(lines) == 1:
        lines.append("  the request differs from the recorded one")
    lines.append(f"  (request hash recorded {entry.get('request_hash')}, now {digest(now)})")
    lines.append(f"Run `%tactus reset {run.key}` to record it afresh, or restore the code that made the record.")
    return "\n".join(lines)


def read_turn(entry: dict[str, Any]) -> tuple[list[ModelMessage], int, dict[str, Any]]:
    """A recorded turn's messages, how many stored messages they replace, and its usage.

    Raises ValueError with the first problem (``messages.0.parts: ...``)
    when the entry cannot be read back, e.g. a hand-edited notebook.
    """
    try:
        recorded = entry.get("messages")
        if isinstance(recorded, str) and recorded.startswith(NOT_RECORDABLE):  # see dump_messages
            raise ValueError(f"messages: {recorded}")
        messages = hist.load(recorded)
        replaces, usage = entry.get("replaces") or 0, entry.get("usage") or {}
        for field_name, found, kind in (("replaces", replaces, int), ("usage", usage, dict)):
            if not isinstance(found, kind):
                raise TypeError(
                    f"{field_name}: expected {'a number' if kind is int else 'an object'}, "
                    f"found {json.dumps(found)[:60]}"
                )
    except ValidationError as exc:  # the first problem, not pydantic's multi-line report
        first = exc.errors()[0]
        raise ValueError(".".join(["messages", *map(str, first["loc"])]) + f": {first['msg']}") from None
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return messages, replaces, usage


def unreadable(run: RunState, entry: dict[str, Any], reason: str) -> str:
    """Where an unreadable recorded turn is, for its error message."""
    where = describe_entry(run.key, run.log.position - 1, entry)
    return f"{where}: the recorded turn is unreadable: {reason}"


def dump_messages(new: list[ModelMessage]) -> list[dict[str, Any]] | str:
    """A live turn's new messages as recorded; when they cannot be dumped,
    the reason, written where replay reports it (the turn still counts and
    the rest of its entry is kept)."""
    try:
        return hist.dump(new)
    except Exception as exc:  # noqa: BLE001 - a reader must find a complete entry
        return f"{NOT_RECORDABLE}{type(exc).__name__}: {exc}"


def usage_of(usage: Any) -> dict[str, int]:
    """pydantic-ai's run usage in the recorded form (the reference's key names)."""
    prompt = int(getattr(usage, "input_tokens", 0) or 0)
    completion = int(getattr(usage, "output_tokens", 0) or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "requests": int(getattr(usage, "requests", 0) or 0),
        "tool_calls": int(getattr(usage, "tool_calls", 0) or 0),
    }


def cost_of(messages: list[ModelMessage]) -> float | None:
    """USD cost from genai-prices; None when any response's price is unknown."""
    total = 0.0
    for m in messages:
        if isinstance(m, ModelResponse):
            model = (m.provider_name, m.model_name)
            if model in _UNPRICED:  # looking it up again would fail again, slowly
                return None
            try:
                total += float(m.cost().total_price)
            except LookupError:
                _UNPRICED.add(model)
                return None
            except Exception:  # noqa: BLE001 - missing usage and the like: no price
                return None
    return total


def mark_failed(run: RunState, agent: str, start: int) -> bool:
    """Tag the entries a failed turn recorded (a human's answer in a tool)
    so the turn run again replays them instead of diverging; whether any were."""
    log = run.log
    if log.position <= start:
        return False
    for entry in log.entries[start : log.position]:
        entry["in_turn"] = agent
    log.records.touch(log.key)
    return True
