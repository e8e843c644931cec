"""Effects behind ``agent``, ``tool``, ``mcp_server``, ``Name.turn``,
``MessageHistory`` and ``default_model`` (Lua side: ``agents.lua``).

This module is imported when the kernel starts, so it must stay light:
pydantic-ai (more than a second to import) is loaded only when a cell
first declares an agent, through :attr:`AgentHub.service`. Tool
declarations and the default model are kept here so that declaring them
costs nothing either.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.errors import ParamError
from tactus_kernel.engine.feature import Feature, Prelude
from tactus_kernel.engine.values import to_plain
from tactus_kernel.features.composition.effects import apply_injection

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import RunState
    from tactus_kernel.engine.runtime import Runtime
    from tactus_kernel.features.agents.mcp import McpServers
    from tactus_kernel.features.agents.service import AgentService
    from tactus_kernel.features.agents.tools import ToolSpec

Handler = Callable[["Runtime", "RunState", Any], Awaitable[tuple[Any, ...]]]


def _guarded(method: Callable[..., Awaitable[tuple[Any, ...]]]) -> Callable[..., Awaitable[tuple[Any, ...]]]:
    """Turn any failure of a handler into a tagged Lua error.

    The driver only converts BridgeError, KernelError (a divergence, strict
    mode's refusal) and NotRecordable; anything else escaping an effect would end the cell
    with an internal error instead of an ``AgentError`` a procedure can ``pcall``.
    """

    @functools.wraps(method)
    async def wrapper(self: AgentHub, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        try:
            return await method(self, runtime, run, request)
        except Exception as exc:  # every failure is reported to the cell, never raised past the driver
            error = _as_lua_error(exc)
            if error is exc:
                raise
            raise error from None

    return wrapper


def _as_lua_error(exc: Exception) -> Exception:
    """The error the driver reports for a failed agent effect (imports here:
    the hot path of a turn should not pay for them)."""
    from tactus_kernel.engine.bridge import BridgeError
    from tactus_kernel.engine.errors import KernelError
    from tactus_kernel.engine.values import NotRecordable
    from tactus_kernel.features.agents.config import ConfigError

    if isinstance(exc, (BridgeError, KernelError, NotRecordable)):  # KernelError: divergences, strict mode
        return exc
    if isinstance(exc, (ConfigError, ParamError)):
        return BridgeError(f"AgentError: {exc}")
    if isinstance(exc, UnicodeDecodeError):
        from tactus_kernel.engine.errors import not_utf8

        return BridgeError(f"AgentError: {not_utf8(exc)}")
    if isinstance(exc, ImportError):
        return BridgeError(f"AgentError: agents need pydantic-ai, a dependency of tactus-kernel: reinstall it ({exc})")
    return BridgeError(f"AgentError: internal error: {type(exc).__name__}: {exc}")


class AgentHub:
    """The agent effects of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tools: dict[str, ToolSpec] = {}
        self.toolsets: dict[str, list[str]] = {}  # toolset(name, {...}) -> its tools' names
        self._service: AgentService | None = None
        self._mcp: McpServers | None = None
        self._default_model: Any = None
        self._default_provider: str | None = None

    @property
    def service(self) -> AgentService:
        """The pydantic-ai side, imported and built on first use."""
        if self._service is None:
            from tactus_kernel.features.agents.service import AgentService

            self._service = AgentService(self.runtime, self.tools, self.toolsets, self.mcp)
            if self._default_model is not None:
                self._service.set_default_model(self._default_model)
            if self._default_provider is not None:
                self._service.set_default_provider(self._default_provider)
        return self._service

    @property
    def mcp(self) -> McpServers:
        """The declared MCP servers (none is started before a live turn needs it)."""
        if self._mcp is None:
            from tactus_kernel.features.agents.mcp import McpServers

            self._mcp = McpServers(self.runtime)
        return self._mcp

    @_guarded
    async def declare_mcp_server(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        spec = to_plain(request["spec"]) if request["spec"] is not None else None
        self.mcp.declare(str(request["name"]), spec)  # each live turn builds its Agent afresh: nothing goes stale
        return ()

    @_guarded
    async def declare_tool(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        from tactus_kernel.features.agents.tools import parse_tool

        name = str(request["name"])
        spec = to_plain(request["spec"]) if request["spec"] is not None else {}
        self.tools[name] = parse_tool(name, spec)
        return ()

    @_guarded
    async def declare_toolset(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        names = to_plain(request["tools"]) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ParamError(f"toolset '{request['name']}': tools must be a list of tool names")
        self.toolsets[str(request["name"])] = names
        return ()

    @_guarded
    async def default_provider(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        from tactus_kernel.features.agents.config import provider_prefix

        provider = provider_prefix(request["provider"], "default_provider")
        if self._service is not None:
            self._service.set_default_provider(provider)
        self._default_provider = provider
        return ()

    @_guarded
    async def declare_agent(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        config = to_plain(request["config"]) if request["config"] is not None else {}
        self.service.declare(str(request["name"]), config)
        return ()

    @_guarded
    async def default_model(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        decl = to_plain(request["model"])
        if self._service is not None:
            self._service.set_default_model(decl)
        else:
            # validates now, without pydantic-ai's agent machinery
            from tactus_kernel.features.agents.config import parse_model

            parse_model(decl, "default_model")
        self._default_model = decl
        return ()

    @_guarded
    async def turn(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        apply_injection(runtime, run, request)  # messages sent with Procedure.inject(handle, message)
        agent = str(request["name"])
        runtime.observers.agent_turn_started(run, agent)
        ok = False
        try:
            values = await self.service.turn(run, request)
            ok = True
            return values
        finally:
            runtime.observers.agent_turn_ended(run, agent, ok)

    @_guarded
    async def history(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        agent = request["agent"]
        value = self.service.history_op(
            run, str(request["op"]), request["value"], None if agent is None else str(agent)
        )
        return () if value is None else (value,)

    @_guarded
    async def messages(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        return (self.service.messages(int(request["turn"]), str(request["which"])),)


class AgentsFeature(Feature[AgentHub]):
    """``agent``, ``tool``, ``toolset``, ``Name.turn``, ``MessageHistory``, ``default_model``."""

    name = "agents"
    preludes = (Prelude("tactus_kernel.features.agents", "agents.lua"),)

    def new_state(self, runtime: Runtime) -> AgentHub:
        return AgentHub(runtime)

    def install(self, runtime: Runtime, state: AgentHub) -> None:
        for kind, handler in _effects(state).items():
            runtime.register_effect(kind, handler)


def _effects(hub: AgentHub) -> dict[str, Handler]:
    return {
        "agent.tool": hub.declare_tool,
        "agent.declare": hub.declare_agent,
        "agent.default_model": hub.default_model,
        "agent.default_provider": hub.default_provider,
        "agent.toolset": hub.declare_toolset,
        "agent.mcp_server": hub.declare_mcp_server,
        "agent.turn": hub.turn,
        "agent.history": hub.history,
        "agent.messages": hub.messages,
    }
