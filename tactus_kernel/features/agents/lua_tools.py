"""Lua tools offered to a pydantic-ai Agent, and the Agent that offers them.

When the model calls a tool, its Lua function runs as a coroutine of its
own, driven by the runtime's effect loop (a Lua yield cannot cross the
Python frames of pydantic-ai), in the calling procedure's context: so
``Tool``, ``State`` and ``Stop`` apply to the right run, and a tool may
wait for a human. Each call is kept in
:class:`~tactus_kernel.features.agents.deps.TurnDeps` for the record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.exceptions import ModelRetry

from tactus_kernel.engine.errors import BridgeError, CellError
from tactus_kernel.engine.fields import ParamError, validate_params
from tactus_kernel.engine.values import NotRecordable, to_json, to_lua
from tactus_kernel.features.agents.deps import TurnDeps
from tactus_kernel.features.agents.errors import PASS_THROUGH, agent_error
from tactus_kernel.features.agents.mcp import McpRef
from tactus_kernel.features.agents.tools import ToolSpec

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime
    from tactus_kernel.features.agents.mcp import McpServers
    from tactus_kernel.features.agents.spec import AgentSpec


def build_agent(
    runtime: Runtime, spec: AgentSpec, tools: list[ToolSpec], mcp: McpServers | None = None
) -> Agent[TurnDeps, Any]:
    """The pydantic-ai Agent for one turn of ``spec`` that offers these tools.

    Built for each live turn: its tools are the turn's (a turn may offer
    others than the agent's), and building one is nothing beside a model call.
    An MCP server's tools come as a toolset of its own (:mod:`.mcp`).
    """
    return Agent(
        None,
        tools=[_tool(runtime, t) for t in tools if not isinstance(t, McpRef)],
        toolsets=mcp.toolsets(tools) if mcp is not None else None,
        **spec.agent_options,
    )


def _tool(runtime: Runtime, spec: ToolSpec) -> Tool[TurnDeps]:
    async def call(ctx: RunContext[TurnDeps], **kwargs: Any) -> Any:
        return await call_tool(runtime, ctx.deps, spec, kwargs)

    # sequential: tool calls run one at a time, in the model's order, so
    # Tool.* order, State and the record are the same on every run.
    return Tool.from_schema(
        call, name=spec.name, description=spec.description, json_schema=spec.schema, takes_ctx=True, sequential=True
    )


async def call_tool(runtime: Runtime, deps: TurnDeps, spec: ToolSpec, kwargs: dict[str, Any]) -> Any:
    """Run the Lua tool ``spec`` with the model's arguments; its JSON-like result goes back to the model.

    Arguments that do not fit the tool's params go back to the model as a
    retry (it can correct itself); a failure inside the tool ends the turn
    as an ``AgentError`` naming the tool, unless it is one of the errors
    that must keep their kind (an interrupt, a divergence, a human timeout).
    """
    try:
        args = validate_params(f"tool '{spec.name}'", spec.fields, kwargs)
    except ParamError as exc:
        raise ModelRetry(str(exc)) from None
    main = runtime.K.agent_tool_main(spec.name, to_lua(runtime.lua, args))
    try:
        values = await runtime.drive(runtime.K.start(main, deps.lua_ctx))
    except CellError as exc:
        if exc.ename in PASS_THROUGH:
            raise BridgeError(f"{exc.ename}: {exc.evalue}") from None
        raise agent_error(deps.agent, f"tool '{spec.name}' failed: {exc.evalue}") from None
    try:
        result = to_json(values[0] if values else None, f"the result of tool '{spec.name}'")
    except NotRecordable as exc:
        raise BridgeError(f"NotRecordableError: {exc} (a tool must return JSON-like values)") from None
    deps.calls.append({"name": spec.name, "args": args, "result": result})
    return result
