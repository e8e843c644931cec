"""What a turn shows in its cell: the model's text as it streams, then a usage line.

The text is written as it arrives, so a person watching a long answer sees
it grow; the usage line (tokens, requests, tool calls, cost) says what the
turn cost, and that a replayed turn called no model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any

from pydantic_ai import RunContext
from pydantic_ai.messages import AgentStreamEvent, PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta

if TYPE_CHECKING:
    from tactus_kernel.engine.host import Host


class Streamer:
    """Writes a turn's text into the cell as the model streams it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.flusher = Flusher(host)
        self.last = ""  # the last chunk written

    async def handle(self, ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
        """pydantic-ai's ``event_stream_handler``: writes each text part and delta."""
        async for event in events:
            text = None
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                text = event.part.content
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                text = event.delta.content_delta
            if text:
                self.last = text
                self.host.write("stdout", text)
                self.flusher.soon()

    def close(self) -> None:
        """Cancel the pending flush; end the streamed text with a newline."""
        self.flusher.cancel()
        if self.last and not self.last.endswith("\n"):
            self.host.write("stdout", "\n")


class Flusher:
    """Flush a host's buffered output shortly after streamed text arrives.

    Hosts batch small writes and send them when the *next* write comes; a
    model that pauses mid-answer would leave its last words unseen, so a
    flush is scheduled (at most one pending) a moment after each chunk.
    """

    DELAY = 0.05

    def __init__(self, host: Host) -> None:
        self.flush = host.flush  # every host has one (engine/host.py); the console's does nothing
        self.handle: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self.handle is not None:
            return
        self.handle = asyncio.get_running_loop().call_later(self.DELAY, self._run)

    def _run(self) -> None:
        self.handle = None
        self.flush()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def show_text(host: Any, value: Any) -> None:
    """A turn's whole text at once (a replayed turn, or ``disable_streaming``)."""
    if isinstance(value, str) and value:
        host.write("stdout", value if value.endswith("\n") else value + "\n")


def show_usage(host: Any, agent: str, model: str, usage: dict[str, Any], cost: float | None, recorded: bool) -> None:
    """The small grey line under a turn: ``agent (model) · tokens · requests · cost``."""
    parts = [
        f"{agent} ({model})" if model else agent,
        f"{usage.get('prompt_tokens', 0)} in / {usage.get('completion_tokens', 0)} out tokens",
    ]
    if usage.get("requests"):
        parts.append(f"{usage['requests']} request{'s' if usage['requests'] != 1 else ''}")
    if usage.get("tool_calls"):
        parts.append(f"{usage['tool_calls']} tool call{'s' if usage['tool_calls'] != 1 else ''}")
    parts.append(f"${cost:.4f}" if cost is not None else "cost n/a")
    if recorded:
        parts.append("recorded, no model call")
    line = " · ".join(parts)
    html = f'<div style="font-size:0.8em;opacity:0.65;font-family:monospace">{_escape(line)}</div>'
    host.display({"text/plain": line, "text/html": html}, {"tactus": {"agent_usage": True}})


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
