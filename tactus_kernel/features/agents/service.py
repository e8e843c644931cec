"""Agents of one runtime: what ``agent(...)``, ``Name.turn``, ``MessageHistory``
and ``default_model`` reach once pydantic-ai is loaded.

This is the thin front the effects (:mod:`.effects`) call; the work is in
modules named for what they hold: :mod:`.spec` (declarations), :mod:`.turns`
(one turn, replayed or live), :mod:`.recording` (the record and divergence),
:mod:`.lua_tools` (Lua tools offered to the model), :mod:`.streaming` (what
a turn shows), :mod:`.errors` (provider failures as ``AgentError``) and
:mod:`.scopes` (per-run histories and ``MessageHistory``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_ai.models import Model

from tactus_kernel.engine.errors import BridgeError
from tactus_kernel.engine.values import to_plain
from tactus_kernel.features.agents import scopes
from tactus_kernel.features.agents.config import parse_model
from tactus_kernel.features.agents.errors import agent_error
from tactus_kernel.features.agents.mcp import McpServers
from tactus_kernel.features.agents.models import ScriptCursor
from tactus_kernel.features.agents.scopes import RunScope, Snapshots
from tactus_kernel.features.agents.spec import AgentSpec, parse_agent
from tactus_kernel.features.agents.tools import DONE, DONE_TOOL, ToolSpec
from tactus_kernel.features.agents.turns import prepare, resolve_model

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import RunState
    from tactus_kernel.engine.runtime import Runtime


class AgentService:
    """Agents of one runtime. Tools and the notebook default model are kept
    by the caller (:class:`tactus_kernel.features.agents.effects.AgentHub`).
    A turn sees it as a :class:`~tactus_kernel.features.agents.turns.TurnService`."""

    def __init__(
        self,
        runtime: Runtime,
        tools: dict[str, ToolSpec],
        toolsets: dict[str, list[str]] | None = None,
        mcp: McpServers | None = None,
    ) -> None:
        self.runtime = runtime
        self.tools = tools
        self.toolsets = {} if toolsets is None else toolsets
        self.mcp = mcp  # mcp_server(...) declarations: their tools are named in tools/toolsets too
        self.default_model: tuple[str | None, dict[str, Any]] = (None, {})
        self.default_provider: str | None = None
        self.agents: dict[str, AgentSpec] = {}
        self.scopes: dict[int, RunScope] = {}
        self.snapshots = Snapshots()
        self.models: dict[str, Model] = {}
        self.model_calls = 0  # live turns that reached a model (tests read it)

    # ------------------------------------------------------------ declare
    def declare(self, name: str, raw: Any) -> None:
        """``agent(name, config)``: checked now, so a bad key fails in the declaring cell."""
        self.agents[name] = parse_agent(name, raw)

    def set_default_model(self, decl: Any) -> None:
        self.default_model = parse_model(decl, "default_model")

    def set_default_provider(self, provider: str) -> None:
        """``default_provider("openai")``: the provider of agents that name none."""
        self.default_provider = provider

    # ---------------------------------------------------------------- turn
    async def turn(self, run: RunState, request: Any) -> tuple[Any, ...]:
        """``Name.turn(opts)``: the flat values ``agents.lua`` makes the result from."""
        return await prepare(self, run, request).take()

    def scope(self, run: RunState) -> RunScope:
        """The agent state of this run (made at its first turn)."""
        scope = self.scopes.get(run.id)
        if scope is None:
            live = self.runtime.runs  # the scopes of finished runs go when a new one comes
            for run_id in [r for r in self.scopes if r not in live]:
                del self.scopes[run_id]
            scope = self.scopes[run.id] = RunScope()
        return scope

    def tools_of(self, spec: AgentSpec, names: list[str]) -> list[ToolSpec]:
        """The declarations of these tool and toolset names, in order, each once."""
        tools: list[ToolSpec] = []
        for tool_name in names:
            members = self.toolsets.get(tool_name, [tool_name]) if tool_name not in self.tools else [tool_name]
            for member in members:
                if member == DONE:
                    found = DONE_TOOL
                elif member in self.tools:
                    found = self.tools[member]
                elif self.mcp is not None and (ref := self.mcp.ref(member)) is not None:
                    found = ref  # an MCP server's tools (features/agents/mcp.py)
                else:
                    known = ", ".join(sorted({DONE, *self.tools}))
                    where = f" (in toolset '{tool_name}')" if member != tool_name else ""
                    sets = f"; toolsets: {', '.join(sorted(self.toolsets))}" if self.toolsets else ""
                    if self.mcp is not None and self.mcp.names():
                        sets += f"; MCP servers: {', '.join(self.mcp.names())}"
                    raise agent_error(spec.name, f"unknown tool '{member}'{where} (defined: {known}{sets})")
                if found not in tools:
                    tools.append(found)
        return tools

    def model(self, spec: AgentSpec, name: str, cursor: ScriptCursor) -> tuple[Model, str]:
        """The model a live turn calls, and its label (a provider's model is made once)."""
        return resolve_model(self.models, spec, name, cursor)

    def template_data(self, lua_ctx: Any, key: str) -> dict[str, Any]:
        """``params`` or ``state`` for a template, checked for size first
        (``perform`` hands the context over unwalked)."""
        table = lua_ctx[key]
        if self.runtime.K.too_big(table):
            raise BridgeError(str(self.runtime.K.TOO_BIG))
        value = to_plain(table) if table is not None else {}
        return value if isinstance(value, dict) else {}

    # ------------------------------------------------------------- history
    def messages(self, turn_id: int, which: str) -> Any:
        """``result.new_messages()`` and its kin, for a turn by id."""
        return self.snapshots.messages(self.runtime.lua, turn_id, which)

    def history_op(self, run: RunState, op: str, value: Any, agent: str | None) -> Any:
        """``MessageHistory.append/inject_system/clear/get``."""
        return scopes.history_op(self.runtime.lua, self.agents, self.scope(run), run, op, value, agent)
