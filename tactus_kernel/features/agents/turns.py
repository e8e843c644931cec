"""One turn: ``Researcher.turn(opts)``, replayed from the record or run live.

A turn is one pydantic-ai ``Agent.run``: the model is called until it gives
its final answer, running the tools it asks for on the way
(:mod:`.lua_tools`). The request is built first (:func:`prepare`); when the
record holds this turn, the recorded result is returned, its tool calls are
re-applied to ``Tool.*``/``Stop`` and its messages extend the history, with
no model and no tool called; otherwise the model is called and the turn is
recorded (:mod:`.recording`).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from pydantic import BaseModel
from pydantic_ai import ModelSettings
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse
from pydantic_ai.models import Model
from pydantic_ai.usage import UsageLimits

from tactus_kernel.engine.errors import BridgeError, Failure, KernelError
from tactus_kernel.engine.values import to_lua, to_plain
from tactus_kernel.features.agents import history as hist
from tactus_kernel.features.agents import provider_errors, recording
from tactus_kernel.features.agents.config import (
    DEFAULT_MODEL_ENV,
    TEST_MODEL,
    missing_key,
    model_name,
    offline,
    settings_from,
)
from tactus_kernel.features.agents.deps import TurnDeps
from tactus_kernel.features.agents.endpoints import build_model
from tactus_kernel.features.agents.errors import agent_error, explain
from tactus_kernel.features.agents.lua_tools import build_agent
from tactus_kernel.features.agents.models import MockScript, ScriptCursor, offline_model
from tactus_kernel.features.agents.scopes import SHARED, history_config
from tactus_kernel.features.agents.spec import AgentSpec, tool_names
from tactus_kernel.features.agents.streaming import Streamer, show_text, show_usage
from tactus_kernel.features.agents.templates import render, uses

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import RunState
    from tactus_kernel.engine.runtime import Runtime
    from tactus_kernel.features.agents.mcp import McpServers
    from tactus_kernel.features.agents.scopes import RunScope, Snapshots
    from tactus_kernel.features.agents.tools import ToolSpec

TURN_OPTIONS = frozenset({"inject", "tools", "toolsets", "temperature", "max_tokens", "top_p", "seed"})


class TurnService(Protocol):
    """What a turn uses of the agents of its runtime.
    :class:`~tactus_kernel.features.agents.service.AgentService` is one; it
    calls this module, so this module names it by this Protocol instead of
    importing it back."""

    runtime: Runtime
    agents: dict[str, AgentSpec]
    mcp: McpServers | None
    snapshots: Snapshots
    default_model: tuple[str | None, dict[str, Any]]
    default_provider: str | None
    model_calls: int  # live turns that reached a model

    def scope(self, run: RunState) -> RunScope: ...

    def tools_of(self, spec: AgentSpec, names: list[str]) -> list[ToolSpec]: ...

    def model(self, spec: AgentSpec, name: str, cursor: ScriptCursor) -> tuple[Model, str]: ...

    def template_data(self, lua_ctx: Any, key: str) -> dict[str, Any]: ...


@dataclass
class Turn:
    """One turn of one agent in one run, its request built."""

    service: TurnService
    run: RunState
    spec: AgentSpec
    request: recording.Request
    history: list[ModelMessage]  # the stored history the turn extends
    cursor: ScriptCursor  # where the agent's mock script is
    lua_ctx: Any

    async def take(self) -> tuple[Any, ...]:
        """The turn's answer: replayed when the record holds it, else live."""
        replayed = self.replay()
        if replayed is not None:
            return replayed
        return await self.live()

    # -------------------------------------------------------------- replay
    def replay(self) -> tuple[Any, ...] | None:
        """The recorded answer, or None when the turn must run live."""
        run, spec, service = self.run, self.spec, self.service
        log = run.log
        here = log.entries[log.position] if log.position < len(log.entries) else None
        if here is not None and here.get("kind") != "agent" and here.get("in_turn") == spec.name:
            log.check_live("agent", spec.name)  # strict mode: no live turn, not even to finish one
            return None  # calls recorded by a turn that failed: run it again, they replay inside
        entry = log.replay("agent", spec.name)
        if entry is None:
            return None
        recorded_hash = entry.get("request_hash")
        if recorded_hash is not None:
            now = self.request.summary()
            if recorded_hash != recording.digest(now):
                if log.allow_divergence:
                    log.clear_from(log.position - 1)
                    service.runtime.host.records_changed()
                    return None
                turn = {"kind": "agent", "name": spec.name}
                raise KernelError(
                    Failure(
                        "DivergenceError",
                        recording.divergence(run, spec.name, entry, now),
                        procedure=run.key,
                        divergence="request",
                        position=log.position,  # already past the entry: the 1-based checkpoint
                        recorded=turn,
                        asked=turn,
                    )
                )
        try:
            messages, replaces, usage = recording.read_turn(entry)
        except ValueError as exc:
            raise agent_error(spec.name, recording.unreadable(run, entry, str(exc))) from None
        _extend(self.history, messages, replaces)
        self.cursor.position += sum(1 for m in messages if isinstance(m, ModelResponse))
        value = entry.get("value")
        host = service.runtime.host
        if not spec.quiet:
            show_text(host, value)
            show_usage(host, spec.name, entry.get("model", ""), usage, entry.get("cost"), recorded=True)
        turn_id = service.snapshots.add(self.history, messages)
        cost = entry.get("cost")
        calls = to_lua(service.runtime.lua, entry.get("tool_calls") or [])
        cost = cost if isinstance(cost, (int, float)) else None
        return self._answer(calls, turn_id, value, usage, cost, str(entry.get("model", "")), replayed=True)

    # ---------------------------------------------------------------- live
    async def live(self) -> tuple[Any, ...]:
        """Call the model (and the tools it asks for), record the turn, answer."""
        run, spec, req, service = self.run, self.spec, self.request, self.service
        model, label = service.model(spec, req.model, self.cursor)
        deps = TurnDeps(spec.name, self.lua_ctx)
        host = service.runtime.host
        streamer = None if spec.quiet or not spec.stream else Streamer(host)
        limits = None if spec.request_limit is None else UsageLimits(request_limit=spec.request_limit)
        log = run.log
        start = log.position
        service.model_calls += 1
        try:
            result = await build_agent(service.runtime, spec, req.tools, service.mcp).run(
                req.message,
                model=model,
                instructions=req.instructions,
                message_history=req.history,
                deps=deps,
                model_settings=cast(ModelSettings, req.settings) if req.settings else None,
                event_stream_handler=None if streamer is None else streamer.handle,
                usage_limits=limits,
            )
        except asyncio.CancelledError:
            raise
        except BridgeError:
            self._mark_failed(start)
            raise
        except Exception as exc:  # noqa: BLE001 - every model failure becomes one catchable Lua error
            self._mark_failed(start)
            raise explain(spec, label, exc, provider_errors.base_url_of(model)) from None
        finally:
            if streamer is not None:
                streamer.close()

        new = result.new_messages()
        replaces = _replaced(req.history, self.history, new)
        dumped = recording.dump_messages(new)
        # the stored history holds what replay rebuilds from the record, so
        # the next turn's request hashes the same live and replayed
        messages = new if isinstance(dumped, str) else hist.load(dumped)
        _extend(self.history, messages, replaces)
        output = result.output
        value = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
        run_usage: Any = result.usage
        if not hasattr(run_usage, "input_tokens") and callable(run_usage):  # a method in older pydantic-ai
            run_usage = run_usage()
        usage = recording.usage_of(run_usage)
        cost = recording.cost_of(new)
        nested = log.entries[start : log.position]
        if nested:
            log.clear_from(start)
        summary = req.summary()
        extra: dict[str, Any] = {
            "messages": dumped,
            "usage": usage,
            "cost": cost,
            "tool_calls": deps.calls,
            "request_hash": recording.digest(summary),
            "request": summary,
            "model": label,
        }
        if replaces:
            extra["replaces"] = replaces
        if nested:
            extra["nested"] = nested
        log.append("agent", spec.name, value, **extra)
        host.records_changed()
        if not spec.quiet:
            if not spec.stream:  # disable_streaming: shown at the end
                show_text(host, value)
            show_usage(host, spec.name, label, usage, cost, recorded=False)
        turn_id = service.snapshots.add(self.history, messages)
        return self._answer(None, turn_id, value, usage, cost, label)

    def _mark_failed(self, start: int) -> None:
        if recording.mark_failed(self.run, self.spec.name, start):
            self.service.runtime.host.records_changed()

    def _answer(
        self,
        calls: Any,
        turn_id: int,
        value: Any,
        usage: dict[str, Any],
        cost: float | None,
        model: str,
        replayed: bool = False,
    ) -> tuple[Any, ...]:
        """The answer to ``Name.turn``'s effect, as the flat values that
        ``wrap_result`` in ``agents.lua`` builds the result from."""
        counts = [usage.get(k) for k in recording.USAGE_KEYS]
        return (
            calls,
            to_lua(self.service.runtime.lua, value),
            turn_id,
            self.spec.name,
            model,
            replayed,
            cost,
            *(n if isinstance(n, (int, float)) and not isinstance(n, bool) else 0 for n in counts),
        )


def prepare(service: TurnService, run: RunState, request: Any) -> Turn:
    """Check the turn's options and limits, count it, and build its request."""
    name = str(request["name"])
    spec = service.agents.get(name)
    if spec is None:
        raise agent_error(name, "is not declared (declare it with agent(...))")
    lua_ctx, opts = request["ctx"], _options(name, request)
    scope = service.scope(run)
    taken = scope.turns.get(name, 0)
    if spec.max_turns is not None and taken >= spec.max_turns:
        raise agent_error(name, f"reached its max_turns ({spec.max_turns}) in this run")
    proc_max = run.spec.config.get("max_turns") if run.spec is not None else None
    if isinstance(proc_max, int) and scope.total >= proc_max:
        raise agent_error(name, f"procedure '{run.key}' reached its max_turns ({proc_max})")
    scope.turns[name] = taken + 1
    scope.total += 1

    tools = service.tools_of(spec, spec.tools)
    model = spec.model or service.default_model[0]
    provider = spec.provider or service.default_provider
    if provider is not None:
        model = model_name(model, provider)
        if model is None:
            raise agent_error(
                spec.name,
                f"provider '{provider}' has no default model here: name one "
                '(model = "...") or set default_model(...)',
            )
    hconf = history_config(spec, run)
    history = scope.histories.setdefault(SHARED if hconf.get("mode") == "shared" else spec.name, [])
    cursor = scope.scripts.setdefault(spec.name, ScriptCursor())
    settings = {**service.default_model[1], **spec.settings}

    inject = opts.get("inject")
    if inject is not None and not isinstance(inject, str):
        inject = json.dumps(inject, ensure_ascii=False)
    # State may be large: read it from Lua only when a template asks for it.
    templates = [t for t in (spec.system_prompt, spec.initial_message, spec.continue_message, inject) if t]
    params = service.template_data(lua_ctx, "params") if uses(templates, "params", "context") else {}
    state = service.template_data(lua_ctx, "state") if uses(templates, "state", "context") else {}
    if inject is not None:
        message: str | None = render(inject, params, state)
    elif taken == 0 and spec.initial_message is not None:
        message = render(spec.initial_message, params, state)
    elif history and isinstance(history[-1], ModelRequest) and hist.role_of(history[-1]) == "user":
        message = None  # MessageHistory.append(user message) already says what to do
    else:
        message = render(spec.continue_message, params, state)
    if len(opts) > (inject is not None):  # per-turn tools or settings
        where = f"agent '{spec.name}'"
        if "tools" in opts or "toolsets" in opts:  # the reference's per-turn toolsets, the same
            tools = service.tools_of(spec, tool_names(opts, f"{where}: turn", []))
        settings = {**settings, **settings_from(opts, f"{where}: turn")}
    try:
        sent = hist.view(history, hconf)
    except hist.HistoryError as exc:
        raise agent_error(spec.name, str(exc)) from None
    req = recording.Request(
        model=model or os.environ.get(DEFAULT_MODEL_ENV) or TEST_MODEL,
        settings=settings,
        instructions=render(spec.system_prompt, params, state),
        message=message,
        tools=tools,
        history=sent,
        output_digest=spec.output_digest,
    )
    return Turn(service, run, spec, req, history, cursor, lua_ctx)


def _options(name: str, request: Any) -> dict[str, Any]:
    """The turn's options: ``agents.lua`` sends a lone text to inject as a plain field."""
    raw_opts = request["opts"]
    if raw_opts is None:  # no options, or only a text to inject
        inject = request["inject"]
        return {} if inject is None else {"inject": inject}
    value = to_plain(raw_opts) if raw_opts is not None else {}
    opts = value if isinstance(value, dict) else {}
    if not TURN_OPTIONS.issuperset(opts):
        unknown = sorted(set(opts) - TURN_OPTIONS)
        raise agent_error(
            name, f"turn: unknown option '{unknown[0]}' (known: inject, tools, temperature, max_tokens, top_p, seed)"
        )
    return opts


def resolve_model(models: dict[str, Model], spec: AgentSpec, name: str, cursor: ScriptCursor) -> tuple[Model, str]:
    """The model a live turn calls, and its label: offline (test or mock
    script) or a provider's, whose API key is checked before any call.
    A provider's model is made once (``models``): it holds the HTTP client."""
    if name == TEST_MODEL or offline():
        mock = MockScript(spec.name, spec.mock, cursor) if spec.mock is not None else None
        return offline_model(mock)
    var = missing_key(name) if spec.base_url is None else None
    if var is not None:
        raise agent_error(
            spec.name,
            f"model '{name}' needs the environment variable {var} "
            f'(set {var}, or run offline with TACTUS_OFFLINE=1 or model = "test")',
        )
    key = name if spec.base_url is None else f"{name} @ {spec.base_url}"
    model = models.get(key)
    if model is None:
        try:
            model = models[key] = build_model(name, spec.base_url)
        except (UserError, ValueError, ImportError) as exc:
            raise agent_error(spec.name, f"cannot use model '{name}': {exc}") from None
    return model, name


def _extend(history: list[ModelMessage], new: list[ModelMessage], replaces: int) -> None:
    if replaces:
        del history[len(history) - replaces :]
    history.extend(new)


def _replaced(sent: list[ModelMessage], history: list[ModelMessage], new: list[ModelMessage]) -> int:
    """How many messages at the end of the stored history this turn's new
    messages stand for.

    With no prompt of its own (a user message appended before the turn)
    pydantic-ai takes the trailing requests of the history it was sent as
    the turn's request: consecutive requests are merged into one, and
    that request is re-emitted among the new messages when it is the
    run's first. Only then does it replace those trailing requests; when
    the new messages start with the response, the requests were folded
    into the history pydantic-ai kept and must stay in the stored one
    (counting messages instead lost the user's message after an
    ``inject_system``).
    """
    if not new or not isinstance(new[0], ModelRequest):
        return 0
    replaces = 0
    while replaces < len(sent) and isinstance(sent[len(sent) - 1 - replaces], ModelRequest):
        replaces += 1
    if replaces and sent[-replaces:] != history[-replaces:]:
        return 0  # a filter changed the tail: the view is not the stored history's end
    return replaces
