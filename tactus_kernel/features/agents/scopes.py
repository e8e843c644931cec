"""The agent state of one procedure run, and ``MessageHistory`` on it.

Histories, turn counters and mock-script positions belong to a run: a run
started again (or replayed) starts from empty histories and rebuilds them
turn by turn, from the model or from the record. A turn's messages are
kept a while longer (:class:`Snapshots`) for ``result.new_messages()``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage, ModelRequest, SystemPromptPart

from tactus_kernel.engine.runtime import BridgeError
from tactus_kernel.engine.values import to_lua, to_plain
from tactus_kernel.features.agents import history as hist
from tactus_kernel.features.agents.models import ScriptCursor

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import RunState
    from tactus_kernel.features.agents.spec import AgentSpec

SHARED = "\x00shared"  # history key of a run's shared history (not a valid agent name)
KEPT_SNAPSHOTS = 64


@dataclass
class RunScope:
    """The agent state of one procedure run: histories, counters, scripts."""

    histories: dict[str, list[ModelMessage]] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)
    total: int = 0
    scripts: dict[str, ScriptCursor] = field(default_factory=dict)


def history_config(spec: AgentSpec | None, run: RunState) -> dict[str, Any]:
    """Agent-level ``message_history`` over the procedure's."""
    proc = run.spec.config.get("message_history", run.spec.config.get("session")) if run.spec is not None else None
    base = hist.check_config(proc, f"procedure '{run.key}'") if proc else {}
    return {**base, **(spec.history if spec is not None else {})}


def history_key(spec: AgentSpec, run: RunState) -> str:
    """Which of the run's histories the agent's turns extend: its own, or the shared one."""
    return SHARED if history_config(spec, run).get("mode") == "shared" else spec.name


def history_op(
    lua: Any, agents: dict[str, AgentSpec], scope: RunScope, run: RunState, op: str, value: Any, agent: str | None
) -> Any:
    """``MessageHistory.append/inject_system/clear/get``, on the named agent's
    history, or the only one there can be (shared, or a single agent)."""
    where = f"MessageHistory.{op}"
    if agent is not None:
        spec = agents.get(agent)
        if spec is None:
            raise BridgeError(f"AgentError: {where}: unknown agent '{agent}'")
        key = history_key(spec, run)
    elif history_config(None, run).get("mode") == "shared":
        key = SHARED
    elif len(agents) == 1:
        key = history_key(next(iter(agents.values())), run)
    elif not agents:
        raise BridgeError(f"AgentError: {where}: no agent is declared yet")
    else:
        names = ", ".join(sorted(agents))
        raise BridgeError(
            f"AgentError: {where}: several agents ({names}): name one, "
            f"e.g. {where}({'msg, ' if op in ('append', 'inject_system') else ''}"
            f'"{sorted(agents)[0]}")'
        )
    history = scope.histories.setdefault(key, [])
    if op == "append":
        try:
            history.append(hist.from_simple(to_plain(value)))
        except hist.HistoryError as exc:
            raise BridgeError(f"AgentError: {exc}") from None
        return None
    if op == "inject_system":
        history.append(ModelRequest(parts=[SystemPromptPart(str(value))]))
        return None
    if op == "clear":
        history.clear()
        return None
    if op == "get":
        return to_lua(lua, hist.simple(history))
    raise BridgeError(f"AgentError: unknown MessageHistory operation {op!r}")


class Snapshots:
    """The history and new messages of the last turns, by turn id, for
    ``result.new_messages()``/``all_messages()`` (a result may be asked
    after later turns changed the history)."""

    def __init__(self) -> None:
        self.kept: OrderedDict[int, tuple[list[ModelMessage], list[ModelMessage]]] = OrderedDict()
        self.next_turn = 0

    def add(self, history: list[ModelMessage], new: list[ModelMessage]) -> int:
        """Keep a copy of both lists; the new turn's id."""
        self.next_turn += 1
        self.kept[self.next_turn] = (list(history), list(new))
        while len(self.kept) > KEPT_SNAPSHOTS:
            self.kept.popitem(last=False)
        return self.next_turn

    def messages(self, lua: Any, turn_id: int, which: str) -> Any:
        """``new``/``all`` as ``{role, content}`` records, ``raw_new``/``raw_all`` as pydantic-ai's JSON."""
        snap = self.kept.get(turn_id)
        if snap is None:
            raise BridgeError(
                f"AgentError: the messages of this turn are no longer kept (only the last {KEPT_SNAPSHOTS} turns are)"
            )
        messages = snap[0] if which.endswith("all") else snap[1]
        if which.startswith("raw_"):  # pydantic-ai's own JSON form (result.raw_messages())
            return to_lua(lua, hist.dump(messages))
        return to_lua(lua, hist.simple(messages))  # {role, content} records, as the reference
