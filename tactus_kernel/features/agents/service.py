"""Agent declarations, turns, and their records.

A turn (``Researcher.turn(opts)``) is one pydantic-ai ``Agent.run``: the
model is called until it gives its final answer, running the tools it asks
for on the way. Lua tools are called back as their own Lua coroutines,
driven by the runtime's effect loop (a yield cannot cross the Python frames
of pydantic-ai), in the calling procedure's context so ``Tool``, ``State``
and ``Stop`` apply to the right run, and so a tool may wait for a human.

Each turn is recorded as a checkpoint (``kind = "agent"``) with its
messages (``ModelMessagesTypeAdapter``, JSON mode), usage, tool calls and a
hash of the request. Replaying a recorded turn calls no model and no tool:
the recorded result is returned, the recorded tool calls are re-applied to
``Tool.*``/``Stop``, and the recorded messages extend the history. A
request that differs from the record is a divergence, never a silent reuse.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from pydantic_ai import Agent, ModelSettings, RunContext, Tool
from pydantic_ai.exceptions import (
    AgentRunError,
    ModelAPIError,
    ModelHTTPError,
    ModelRetry,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
    UserError,
)
from pydantic_ai.messages import (
    AgentStreamEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models import Model, infer_model
from pydantic_ai.usage import UsageLimits

from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.fields import ParamError, validate_params
from tactus_kernel.engine.records import describe_entry
from tactus_kernel.engine.runtime import BridgeError
from tactus_kernel.engine.values import NotRecordable, to_json, to_lua, to_plain
from tactus_kernel.features.agents import history as hist
from tactus_kernel.features.agents.config import (
    DEFAULT_MODEL_ENV,
    SETTINGS,
    TEST_MODEL,
    ConfigError,
    missing_key,
    model_name,
    model_settings_from,
    offline,
    parse_model,
    provider_prefix,
    settings_from,
)
from tactus_kernel.features.agents.models import MockScript, ScriptCursor, offline_model, parse_mock
from tactus_kernel.features.agents.output import output_model
from tactus_kernel.features.agents.templates import render, uses
from tactus_kernel.features.agents.tools import DONE, DONE_TOOL, ToolSpec

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import RunState, Runtime

AGENT_KEYS = (
    "model",
    "system_prompt",
    "instructions",
    "initial_message",
    "continue_message",
    "tools",
    "output_type",
    "max_turns",
    "message_history",
    "mock",
    "retries",
    "quiet",
    "description",
    # the reference Tactus's keys (v0.3 to v0.7)
    "provider",
    "model_type",
    "model_settings",
    "toolsets",
    "request_limit",
    "disable_streaming",
    "session",
    *SETTINGS,
)
SHARED = "\x00shared"  # history key of a run's shared history (not a valid agent name)
# Errors from inside a Lua tool that keep their own name (the rest become AgentError).
PASS_THROUGH = {
    "KeyboardInterrupt",
    "DivergenceError",
    "NoRecordedAnswer",
    "HumanTimeout",
    "LuaMemoryError",
    "NotRecordableError",
    "AgentError",
    "CheckpointError",
}
KEPT_SNAPSHOTS = 64
NOT_RECORDABLE = "not recordable: "  # what a turn's messages say when they could not be recorded
TURN_OPTIONS = frozenset({"inject", "tools", "toolsets", "temperature", "max_tokens", "top_p", "seed"})
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "requests", "tool_calls")  # as in lua/agents.lua
_UNPRICED: set[tuple[str | None, str | None]] = set()  # (provider, model) genai-prices does not know
T = TypeVar("T")
PerTools = dict[tuple[int, ...], tuple[list[ToolSpec], T]]  # what was made once per list of tool declarations


def agent_error(agent: str, message: str) -> BridgeError:
    return BridgeError(f"AgentError: agent '{agent}': {message}")


@dataclass
class AgentSpec:
    """A declared agent, and the pydantic-ai Agents built for it (one per
    set of tools its turns offer)."""

    name: str
    model: str | None
    provider: str | None  # pydantic-ai's prefix for the reference's provider = "..."
    settings: dict[str, Any]
    system_prompt: str | None
    initial_message: str | None
    continue_message: str
    tools: list[str]
    output_schema: dict[str, Any] | None
    max_turns: int | None
    history: dict[str, Any]
    mock: list[dict[str, Any]] | None
    quiet: bool
    agent_options: dict[str, Any]  # for pydantic-ai's Agent(...)
    stream: bool = True  # disable_streaming = true: the text is shown once the turn ends
    request_limit: int | None = None  # UsageLimits(request_limit=...) of each turn
    output_digest: str = ""
    declared: Any = None  # the plain config this spec was made from
    agents: PerTools[Agent[TurnDeps, Any]] = field(default_factory=dict)  # the Agent offering a turn's tools


@dataclass
class RunScope:
    """The agent state of one procedure run: histories, counters, scripts."""

    histories: dict[str, list[ModelMessage]] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)
    total: int = 0
    scripts: dict[str, ScriptCursor] = field(default_factory=dict)
    plans: dict[str, TurnPlan] = field(default_factory=dict)  # by agent name
    # id(message) -> (message, digest of its projection): a history is hashed
    # at every turn, each message only once (the message is held so its id
    # is not reused while cached)
    digests: dict[int, tuple[ModelMessage, str]] = field(default_factory=dict)

    # The history hashed last time and the hash state after it: a history
    # usually grows by a turn's messages, so only the new ones are fed in.
    hashed: list[ModelMessage] = field(default_factory=list)
    hash_state: Any = None

    def history_digest(self, messages: list[ModelMessage]) -> str:
        """``_digest`` of the list of the messages' projection digests (the
        same bytes as ``json.dumps`` of that list, fed in as it grows)."""
        done = self.hashed
        # a prefix compares element by element, identity first (in C); equal
        # messages project, so hash, the same
        if self.hash_state is None or messages[: len(done)] != done:
            done, self.hash_state = [], hashlib.sha256(b"[")
        h = self.hash_state
        for i in range(len(done), len(messages)):
            m = messages[i]
            cached = self.digests.get(id(m))
            if cached is None or cached[0] is not m:
                cached = self.digests[id(m)] = (m, _digest(hist.projection([m])))
            h.update(f'{"," if i else ""}"{cached[1]}"'.encode())
        self.hashed = list(messages)
        final = h.copy()
        final.update(b"]")
        return final.hexdigest()[:16]


@dataclass(slots=True)
class TurnDeps:
    """pydantic-ai deps of a turn: how a tool call finds its way back to Lua."""

    agent: str
    lua_ctx: Any
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TurnPlan:
    """What every turn of one agent in one run shares: the history it
    extends, its tools and their digest, its model and settings. Worked out
    at the agent's first turn of the run (``AgentService._plan``): a turn
    then only reads its own options."""

    spec: AgentSpec
    default_model: tuple[str | None, dict[str, Any]]
    hconf: dict[str, Any]
    history: list[ModelMessage]
    cursor: ScriptCursor
    tools: list[ToolSpec]
    tools_digest: str
    model: str
    settings: dict[str, Any]
    generation: int  # AgentService.generation when made
    uses_params: bool  # the agent's own templates read params (or context)
    uses_state: bool


@dataclass(slots=True)
class Request:
    """What a turn asks the model: hashed for replay, summarised on divergence."""

    model: str
    settings: dict[str, Any]
    instructions: str | None
    message: str | None
    tools: list[ToolSpec]
    history: list[ModelMessage]
    scope: RunScope = field(repr=False)
    tools_digest: str
    output_digest: str
    _summary: dict[str, Any] | None = field(default=None, repr=False)
    _history_digest: str | None = field(default=None, repr=False)

    @property
    def history_digest(self) -> str:
        """Hashed when first needed: to compare with a record at once, to
        record a live turn later (``Records.defer``)."""
        if self._history_digest is None:
            self._history_digest = self.scope.history_digest(self.history)
        return self._history_digest

    def summary(self) -> dict[str, Any]:
        """The readable request, plus digests of its bulky parts, for the record."""
        if self._summary is None:
            self._summary = {
                "model": self.model,
                "settings": self.settings,
                "system_prompt": self.instructions,
                "message": self.message,
                "tools": [t.name for t in self.tools],
                "history": len(self.history),
                "digests": {"history": self.history_digest, "tools": self.tools_digest, "output": self.output_digest},
            }
        return self._summary

    def digest(self) -> str:
        return _digest(self.summary())


_HASH_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def _digest(data: Any) -> str:
    return hashlib.sha256(_HASH_JSON.encode(data).encode("utf-8")).hexdigest()[:16]


def _per_tools(cache: PerTools[T], tools: list[ToolSpec], build: Callable[[], T]) -> T:
    """What ``build`` makes for this list of tool declarations, made once.

    Keyed by the declarations' ids; each entry holds its list, so the ids
    stay theirs. Tools redeclared again and again empty the cache past 64
    entries rather than grow it.
    """
    key = tuple(map(id, tools))
    cached = cache.get(key)
    if cached is None:
        if len(cache) >= 64:
            cache.clear()
        cached = cache[key] = (tools, build())
    return cached[1]


# What a changed digest means, for divergence messages.
DIGEST_MEANING = {
    "history": "the message history sent differs",
    "tools": "a tool's description or params differ",
    "output": "the output_type differs",
}


def _same_agent(old: AgentSpec, new: AgentSpec) -> bool:
    """Whether the pydantic-ai Agents built for ``old`` serve ``new`` as
    well. The output type is a class made at each declaration: compared by
    its schema."""
    if old.output_digest != new.output_digest:
        return False
    a, b = old.agent_options, new.agent_options
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a if k != "output_type")


def _plain_dict(table: Any) -> dict[str, Any]:
    value = to_plain(table) if table is not None else {}
    return value if isinstance(value, dict) else {}


def _int_or_none(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}")
    return int(value)


def _str_or_none(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string, got {type(value).__name__}")


def _names(value: Any, where: str) -> list[str]:
    if value is None or value == {} or value == []:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of tool names such as {{"search", "done"}}')
    return list(value)


def _tool_names(config: dict[str, Any], where: str, default: list[str]) -> list[str]:
    """``tools`` and the reference's ``toolsets`` together (tool and toolset
    names); ``default`` when neither is given. ``{}`` in either means none."""
    if "tools" not in config and "toolsets" not in config:
        return list(default)
    names = _names(config.get("tools"), f"{where}: tools")
    for name in _names(config.get("toolsets"), f"{where}: toolsets"):
        if name not in names:
            names.append(name)
    return names


class AgentService:
    """Agents of one runtime. Tools and the notebook default model are kept
    by the caller (:class:`tactus_kernel.features.agents.effects.AgentHub`)."""

    def __init__(
        self, runtime: Runtime, tools: dict[str, ToolSpec], toolsets: dict[str, list[str]] | None = None
    ) -> None:
        self.runtime = runtime
        self.tools = tools
        self.toolsets = {} if toolsets is None else toolsets
        self.default_model: tuple[str | None, dict[str, Any]] = (None, {})
        self.default_provider: str | None = None
        self.generation = 0  # bumped when a toolset or the default provider changes: plans are remade
        self.agents: dict[str, AgentSpec] = {}
        self.scopes: dict[int, RunScope] = {}
        self.snapshots: OrderedDict[int, tuple[list[ModelMessage], list[ModelMessage]]] = OrderedDict()
        self.next_turn = 0
        self.models: dict[str, Model] = {}
        self.model_calls = 0  # live turns that reached a model (tests and benchmarks read it)
        self.tool_digests: PerTools[str] = {}

    # ------------------------------------------------------------ declare
    def declare(self, name: str, raw: Any) -> None:
        old = self.agents.get(name)
        if old is not None and old.declared == raw:
            return  # a cell run again: the same declaration makes the same spec (nothing else goes in)
        where = f"agent '{name}'"
        config = raw if isinstance(raw, dict) else {}
        unknown = sorted(set(config) - set(AGENT_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(AGENT_KEYS)})")
        model, settings = parse_model(config.get("model"), where)
        # the reference's model_settings, and settings given on the agent itself
        settings = {
            **model_settings_from(config.get("model_settings"), f"{where}: model_settings"),
            **settings_from(config, where),
            **settings,
        }
        provider = config.get("provider")
        if provider is not None:
            provider = provider_prefix(provider, where)
            model_type = _str_or_none(config.get("model_type"), f"{where}: model_type")
            if provider == "openai" and model_type in ("responses", "chat"):
                provider = f"openai-{model_type}"  # the reference's model_type = "responses"
            if model is not None:
                model, provider = model_name(model, provider), None
        output = config.get("output_type")
        out_model: type[BaseModel] | None = None
        if output is not None and output != {}:
            out_model = output_model(output, name.title().replace("_", "") + "Output")
        history = hist.check_config(config.get("message_history", config.get("session")), where)
        retries = _int_or_none(config.get("retries"), f"{where}: retries")
        spec = AgentSpec(
            name=name,
            model=model,
            provider=provider,
            settings=settings,
            system_prompt=_str_or_none(
                config.get("system_prompt", config.get("instructions")), f"{where}: system_prompt"
            ),
            initial_message=_str_or_none(config.get("initial_message"), f"{where}: initial_message"),
            continue_message=_str_or_none(config.get("continue_message"), f"{where}: continue_message") or "Continue.",
            # the reference gives every agent its done tool unless it lists its tools
            tools=_tool_names(config, where, [DONE]),
            output_schema=out_model.model_json_schema() if out_model else None,
            max_turns=_int_or_none(config.get("max_turns"), f"{where}: max_turns"),
            history=history,
            mock=parse_mock(config.get("mock"), where),
            quiet=bool(config.get("quiet", False)),
            stream=not config.get("disable_streaming", False),
            request_limit=_int_or_none(config.get("request_limit"), f"{where}: request_limit"),
            agent_options={
                "output_type": out_model if out_model is not None else str,
                "deps_type": TurnDeps,
                "name": name,
                "retries": retries if retries is not None else 2,
                "description": _str_or_none(config.get("description"), f"{where}: description"),
            },
        )
        spec.output_digest = _digest(spec.output_schema)
        spec.declared = raw
        if old is not None and _same_agent(old, spec):
            # a cell run again declares the same agent: keep the pydantic-ai
            # Agents built for it (about half a millisecond each)
            spec.agents = old.agents
        self.agents[name] = spec

    def set_default_model(self, decl: Any) -> None:
        self.default_model = parse_model(decl, "default_model")

    def set_default_provider(self, provider: str) -> None:
        """``default_provider("openai")``: the provider of agents that name none."""
        if provider != self.default_provider:
            self.default_provider = provider
            self.generation += 1

    # -------------------------------------------------------------- scopes
    def scope(self, run: RunState) -> RunScope:
        scope = self.scopes.get(run.id)
        if scope is None:
            live = self.runtime.runs  # the scopes of finished runs go when a new one comes
            for run_id in [r for r in self.scopes if r not in live]:
                del self.scopes[run_id]
            scope = self.scopes[run.id] = RunScope()
        return scope

    def history_config(self, spec: AgentSpec | None, run: RunState) -> dict[str, Any]:
        """Agent-level ``message_history`` over the procedure's."""
        proc = run.spec.config.get("message_history", run.spec.config.get("session")) if run.spec is not None else None
        base = hist.check_config(proc, f"procedure '{run.key}'") if proc else {}
        return {**base, **(spec.history if spec is not None else {})}

    def history_key(self, spec: AgentSpec, run: RunState) -> str:
        return SHARED if self.history_config(spec, run).get("mode") == "shared" else spec.name

    # ---------------------------------------------------------------- turn
    async def turn(self, run: RunState, request: Any) -> tuple[Any, ...]:
        name = str(request["name"])
        spec = self.agents.get(name)
        if spec is None:
            raise agent_error(name, "is not declared (declare it with agent(...))")
        lua_ctx, raw_opts = request["ctx"], request["opts"]
        if raw_opts is None:  # no options, or only a text to inject (lua/agents.lua)
            inject = request["inject"]
            opts: dict[str, Any] = {} if inject is None else {"inject": inject}
        else:
            opts = _plain_dict(raw_opts)
            if not TURN_OPTIONS.issuperset(opts):
                unknown = sorted(set(opts) - TURN_OPTIONS)
                raise agent_error(
                    name,
                    f"turn: unknown option '{unknown[0]}' (known: inject, tools, temperature, max_tokens, top_p, seed)",
                )
        scope = self.scope(run)
        taken = scope.turns.get(name, 0)
        if spec.max_turns is not None and taken >= spec.max_turns:
            raise agent_error(name, f"reached its max_turns ({spec.max_turns}) in this run")
        proc_max = run.spec.config.get("max_turns") if run.spec is not None else None
        if isinstance(proc_max, int) and scope.total >= proc_max:
            raise agent_error(name, f"procedure '{run.key}' reached its max_turns ({proc_max})")
        scope.turns[name] = taken + 1
        scope.total += 1

        plan = self._plan(spec, run, scope)
        req = self._request(plan, opts, scope, lua_ctx, first=taken == 0)
        replayed = self._replay(run, spec, req, plan.history, plan.cursor)
        if replayed is not None:
            return replayed
        return await self._live(run, spec, req, plan.history, plan.cursor, lua_ctx)

    def _plan(self, spec: AgentSpec, run: RunState, scope: RunScope) -> TurnPlan:
        """What this agent's turns in this run share, worked out at the first
        and kept while the declarations it comes from stay the same objects."""
        plan = scope.plans.get(spec.name)
        if (
            plan is not None
            and plan.spec is spec
            and plan.default_model is self.default_model
            and plan.generation == self.generation
            and all(self.tools.get(t.name) is t for t in plan.tools if t is not DONE_TOOL)
        ):
            return plan
        tools = self._tools(spec, spec.tools)
        model = spec.model or self.default_model[0]
        provider = spec.provider or self.default_provider
        if provider is not None:
            model = model_name(model, provider)
            if model is None:
                raise agent_error(
                    spec.name,
                    f"provider '{provider}' has no default model here: name one "
                    '(model = "...") or set default_model(...)',
                )
        static = [t for t in (spec.system_prompt, spec.initial_message, spec.continue_message) if t]
        plan = scope.plans[spec.name] = TurnPlan(
            spec=spec,
            default_model=self.default_model,
            hconf=self.history_config(spec, run),
            history=scope.histories.setdefault(self.history_key(spec, run), []),
            cursor=scope.scripts.setdefault(spec.name, ScriptCursor()),
            tools=tools,
            tools_digest=self._tools_digest(tools),
            model=model or self._env_default(),
            settings={**self.default_model[1], **spec.settings},
            generation=self.generation,
            uses_params=uses(static, "params", "context"),
            uses_state=uses(static, "state", "context"),
        )
        return plan

    def _tools(self, spec: AgentSpec, names: list[str]) -> list[ToolSpec]:
        """The declarations of these tool and toolset names, in order, each once."""
        tools: list[ToolSpec] = []
        for tool_name in names:
            members = self.toolsets.get(tool_name, [tool_name]) if tool_name not in self.tools else [tool_name]
            for member in members:
                if member == DONE:
                    found = DONE_TOOL
                elif member in self.tools:
                    found = self.tools[member]
                else:
                    known = ", ".join(sorted({DONE, *self.tools}))
                    where = f" (in toolset '{tool_name}')" if member != tool_name else ""
                    sets = f"; toolsets: {', '.join(sorted(self.toolsets))}" if self.toolsets else ""
                    raise agent_error(spec.name, f"unknown tool '{member}'{where} (defined: {known}{sets})")
                if found not in tools:
                    tools.append(found)
        return tools

    def _request(self, plan: TurnPlan, opts: dict[str, Any], scope: RunScope, lua_ctx: Any, first: bool) -> Request:
        spec, history = plan.spec, plan.history
        inject = opts.get("inject")
        if inject is not None and not isinstance(inject, str):
            inject = json.dumps(inject, ensure_ascii=False)
        # State may be large: read it from Lua only when a template asks for it.
        own = [inject] if inject is not None and "{" in inject else []  # the turn's own template
        params = self._template_data(lua_ctx, "params") if plan.uses_params or uses(own, "params", "context") else {}
        state = self._template_data(lua_ctx, "state") if plan.uses_state or uses(own, "state", "context") else {}
        if inject is not None:
            message: str | None = render(inject, params, state)
        elif first and spec.initial_message is not None:
            message = render(spec.initial_message, params, state)
        elif history and isinstance(history[-1], ModelRequest) and hist.role_of(history[-1]) == "user":
            message = None  # MessageHistory.append(user message) already says what to do
        else:
            message = render(spec.continue_message, params, state)
        tools, tools_digest, settings = plan.tools, plan.tools_digest, plan.settings
        if len(opts) > (inject is not None):  # per-turn tools or settings
            where = f"agent '{spec.name}'"
            if "tools" in opts or "toolsets" in opts:  # the reference's per-turn toolsets, the same
                tools = self._tools(spec, _tool_names(opts, f"{where}: turn", []))
                tools_digest = self._tools_digest(tools)
            settings = {**settings, **settings_from(opts, f"{where}: turn")}
        try:
            sent = hist.view(history, plan.hconf)
        except hist.HistoryError as exc:
            raise agent_error(spec.name, str(exc)) from None
        return Request(
            model=plan.model,
            settings=settings,
            instructions=render(spec.system_prompt, params, state),
            message=message,
            tools=tools,
            history=sent,
            scope=scope,
            tools_digest=tools_digest,
            output_digest=spec.output_digest,
        )

    def _tools_digest(self, tools: list[ToolSpec]) -> str:
        """The digest of the tools' declarations, computed once per set of declarations."""
        return _per_tools(self.tool_digests, tools, lambda: _digest([t.for_hash() for t in tools]))

    def _template_data(self, lua_ctx: Any, key: str) -> dict[str, Any]:
        """``params`` or ``state`` for a template, checked for size first
        (``perform`` hands the context over unwalked)."""
        table = lua_ctx[key]
        if self.runtime.K.too_big(table):
            raise BridgeError(str(self.runtime.K.TOO_BIG))
        return _plain_dict(table)

    @staticmethod
    def _env_default() -> str:
        import os

        return os.environ.get(DEFAULT_MODEL_ENV) or TEST_MODEL

    # -------------------------------------------------------------- replay
    def _replay(
        self, run: RunState, spec: AgentSpec, req: Request, history: list[ModelMessage], cursor: ScriptCursor
    ) -> tuple[Any, ...] | None:
        log = run.log
        here = log.entries[log.position] if log.position < len(log.entries) else None
        if here is not None and here.get("kind") != "agent" and here.get("in_turn") == spec.name:
            return None  # calls recorded by a turn that failed: run it again, they replay inside
        entry = log.replay("agent", spec.name)
        if entry is None:
            return None
        recorded_hash = entry.get("request_hash")
        if recorded_hash is not None and recorded_hash != req.digest():
            if log.allow_divergence:
                log.clear_from(log.position - 1)
                self.runtime.host.records_changed()
                return None
            raise BridgeError("DivergenceError: " + self._divergence(run, spec, entry, req))
        try:
            recorded = entry.get("messages")
            if isinstance(recorded, str) and recorded.startswith(NOT_RECORDABLE):  # see _fill_turn
                raise ValueError(f"messages: {recorded}")
            messages = hist.load(recorded)
            replaces, usage = entry.get("replaces") or 0, entry.get("usage") or {}
            for field_name, found, kind in (("replaces", replaces, int), ("usage", usage, dict)):
                if not isinstance(found, kind):
                    raise TypeError(
                        f"{field_name}: expected {'a number' if kind is int else 'an object'}, "
                        f"found {json.dumps(found)[:60]}"
                    )
        except (ValueError, TypeError) as exc:
            reason = str(exc)
            if isinstance(exc, ValidationError):  # the first problem, not pydantic's multi-line report
                first = exc.errors()[0]
                reason = ".".join(["messages", *map(str, first["loc"])]) + f": {first['msg']}"
            where = describe_entry(run.key, log.position - 1, entry)
            raise agent_error(spec.name, f"{where}: the recorded turn is unreadable: {reason}") from None
        self._extend(history, messages, replaces)
        cursor.position += sum(1 for m in messages if isinstance(m, ModelResponse))
        value = entry.get("value")
        if not spec.quiet:
            if isinstance(value, str) and value:
                self.runtime.host.write("stdout", value if value.endswith("\n") else value + "\n")
            self._show_usage(spec.name, entry.get("model", ""), usage, entry.get("cost"), recorded=True)
        turn_id = self._snapshot(history, messages)
        cost = entry.get("cost")
        calls = to_lua(self.runtime.lua, entry.get("tool_calls") or [])
        return self._result(
            calls,
            spec.name,
            turn_id,
            value,
            usage,
            cost if isinstance(cost, (int, float)) else None,
            str(entry.get("model", "")),
            replayed=True,
        )

    def _divergence(self, run: RunState, spec: AgentSpec, entry: dict[str, Any], req: Request) -> str:
        position = run.log.position  # already advanced past the entry
        lines = [
            f"replay diverged in procedure {run.key!r} at checkpoint #{position}: agent '{spec.name}' "
            "was sent a different request than the recorded turn"
        ]
        recorded = entry.get("request") or {}
        now = req.summary()
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
        lines.append(f"  (request hash recorded {entry.get('request_hash')}, now {req.digest()})")
        lines.append(f"Run `%tactus reset {run.key}` to record it afresh, or restore the code that made the record.")
        return "\n".join(lines)

    # ---------------------------------------------------------------- live
    def _model(self, spec: AgentSpec, name: str, cursor: ScriptCursor) -> tuple[Model, str]:
        if name == TEST_MODEL or offline():
            mock = MockScript(spec.name, spec.mock, cursor) if spec.mock is not None else None
            return offline_model(mock)
        var = missing_key(name)
        if var is not None:
            raise agent_error(
                spec.name,
                f"model '{name}' needs the environment variable {var} "
                f'(set {var}, or run offline with TACTUS_OFFLINE=1 or model = "test")',
            )
        model = self.models.get(name)
        if model is None:
            try:
                model = self.models[name] = infer_model(name)
            except (UserError, ValueError, ImportError) as exc:
                raise agent_error(spec.name, f"cannot use model '{name}': {exc}") from None
        return model, name

    async def _live(
        self,
        run: RunState,
        spec: AgentSpec,
        req: Request,
        history: list[ModelMessage],
        cursor: ScriptCursor,
        lua_ctx: Any,
    ) -> tuple[Any, ...]:
        model, label = self._model(spec, req.model, cursor)
        deps = TurnDeps(spec.name, lua_ctx)
        host = self.runtime.host
        # a quiet agent shows nothing as it comes: pydantic-ai's plain path costs less
        streamer = None if spec.quiet or not spec.stream else _Streamer(host)
        limits = None if spec.request_limit is None else UsageLimits(request_limit=spec.request_limit)
        log = run.log
        start = log.position
        self.model_calls += 1
        try:
            result = await self._agent(spec, req.tools).run(
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
            self._mark_failed(run, spec.name, start)
            raise
        except Exception as exc:  # noqa: BLE001 - every model failure becomes one catchable Lua error
            self._mark_failed(run, spec.name, start)
            raise self._explain(spec, label, exc) from None
        finally:
            if streamer is not None:
                streamer.close()

        new = result.new_messages()
        replaces = self._replaced(req.history, history, new)
        # the live history must hash like the one replay rebuilds from the
        # record: the usual parts do; others are taken from their dump
        dumped = None if hist.same_when_loaded(new) else hist.dump(new)
        messages = new if dumped is None else hist.load(dumped)
        self._extend(history, messages, replaces)
        output = result.output
        value = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
        run_usage: Any = result.usage
        if not hasattr(run_usage, "input_tokens") and callable(run_usage):  # a method in older pydantic-ai
            run_usage = run_usage()
        usage = self._usage(run_usage)
        cost = self._cost(new)
        nested = log.entries[start : log.position]
        if nested:
            log.clear_from(start)
        # messages, request_hash and request are filled in later (_fill_turn)
        extra: dict[str, Any] = {
            "messages": dumped,
            "usage": usage,
            "cost": cost,
            "tool_calls": deps.calls,
            "request_hash": None,
            "request": None,
            "model": label,
        }
        if replaces:
            extra["replaces"] = replaces
        if nested:
            extra["nested"] = nested
        entry = log.append("agent", spec.name, value, **extra)
        log.records.defer(functools.partial(_fill_turn, entry, new, req))
        host.records_changed()
        if not spec.quiet:
            if not spec.stream and isinstance(value, str) and value:  # disable_streaming: shown at the end
                host.write("stdout", value if value.endswith("\n") else value + "\n")
            self._show_usage(spec.name, label, usage, cost, recorded=False)
        turn_id = self._snapshot(history, messages)
        return self._result(None, spec.name, turn_id, value, usage, cost, label)

    @staticmethod
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

    def _mark_failed(self, run: RunState, agent: str, start: int) -> None:
        """Entries a failed turn recorded (a human's answer in a tool) stay,
        tagged, so the turn run again replays them instead of diverging."""
        log = run.log
        if log.position > start:
            for entry in log.entries[start : log.position]:
                entry["in_turn"] = agent
            log.records.touch(log.key)
            self.runtime.host.records_changed()

    def _explain(self, spec: AgentSpec, label: str, exc: Exception) -> BridgeError:
        if isinstance(exc, ModelHTTPError):
            body = exc.body
            detail = body.get("error") if isinstance(body, dict) else body
            if exc.status_code == 429:
                return agent_error(spec.name, f"rate limited by model '{label}' (HTTP 429): {detail}")
            if exc.status_code in (401, 403):
                return agent_error(spec.name, f"model '{label}' refused the API key (HTTP {exc.status_code}): {detail}")
            return agent_error(spec.name, f"model '{label}' failed (HTTP {exc.status_code}): {detail}")
        if isinstance(exc, ModelAPIError):
            return agent_error(spec.name, f"model '{label}' failed: {exc}")
        if isinstance(exc, UnexpectedModelBehavior):
            if spec.output_schema is not None and "output" in str(exc):
                cause = f" ({exc.__cause__})" if exc.__cause__ else ""
                return agent_error(
                    spec.name, f"the model's output did not match output_type after the allowed retries: {exc}{cause}"
                )
            return agent_error(spec.name, f"unexpected model behaviour: {exc}")
        if isinstance(exc, UsageLimitExceeded):
            return agent_error(spec.name, f"usage limit exceeded: {exc}")
        if isinstance(exc, (AgentRunError, UserError)):
            return agent_error(spec.name, str(exc))
        if isinstance(exc, RuntimeError) and "ALLOW_MODEL_REQUESTS" in str(exc):
            return agent_error(spec.name, f"model '{label}' may not be called here: {exc}")
        return agent_error(spec.name, f"model '{label}' failed: {type(exc).__name__}: {exc}")

    # --------------------------------------------------------------- tools
    def _agent(self, spec: AgentSpec, tools: list[ToolSpec]) -> Agent[TurnDeps, Any]:
        """The pydantic-ai Agent for a turn that offers these tools, built once.

        Tools are given to the Agent itself, not to each run as a toolset:
        pydantic-ai's per-run toolsets cost about 5% of a TestModel turn, and
        a tool's call finds its way back to Lua through the run's deps, so
        one Agent serves every turn with the same tools.
        """
        return _per_tools(
            spec.agents, tools, lambda: Agent(None, tools=[self._tool(t) for t in tools], **spec.agent_options)
        )

    def _tool(self, spec: ToolSpec) -> Tool[TurnDeps]:
        async def call(ctx: RunContext[TurnDeps], **kwargs: Any) -> Any:
            return await self._call_tool(ctx.deps, spec, kwargs)

        # sequential: tool calls run one at a time, in the model's order, so
        # Tool.* order, State and the record are the same on every run.
        return Tool.from_schema(
            call, name=spec.name, description=spec.description, json_schema=spec.schema, takes_ctx=True, sequential=True
        )

    async def _call_tool(self, deps: TurnDeps, spec: ToolSpec, kwargs: dict[str, Any]) -> Any:
        try:
            args = validate_params(f"tool '{spec.name}'", spec.fields, kwargs)
        except ParamError as exc:
            raise ModelRetry(str(exc)) from None
        runtime = self.runtime
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

    # ------------------------------------------------------------- results
    @staticmethod
    def _extend(history: list[ModelMessage], new: list[ModelMessage], replaces: int) -> None:
        if replaces:
            del history[len(history) - replaces :]
        history.extend(new)

    def _snapshot(self, history: list[ModelMessage], new: list[ModelMessage]) -> int:
        self.next_turn += 1
        self.snapshots[self.next_turn] = (list(history), list(new))
        while len(self.snapshots) > KEPT_SNAPSHOTS:
            self.snapshots.popitem(last=False)
        return self.next_turn

    @staticmethod
    def _usage(usage: Any) -> dict[str, int]:
        prompt = int(getattr(usage, "input_tokens", 0) or 0)
        completion = int(getattr(usage, "output_tokens", 0) or 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "requests": int(getattr(usage, "requests", 0) or 0),
            "tool_calls": int(getattr(usage, "tool_calls", 0) or 0),
        }

    @staticmethod
    def _cost(messages: list[ModelMessage]) -> float | None:
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

    def _result(
        self,
        calls: Any,
        agent: str,
        turn_id: int,
        value: Any,
        usage: dict[str, Any],
        cost: float | None,
        model: str,
        replayed: bool = False,
    ) -> tuple[Any, ...]:
        """The answer to ``Name.turn``'s effect, as flat values that
        ``wrap_result`` in ``lua/agents.lua`` builds the result from (cheaper
        than converting a nested table: this is on every turn's path)."""
        counts = [usage.get(k) for k in USAGE_KEYS]
        return (
            calls,
            to_lua(self.runtime.lua, value),
            turn_id,
            agent,
            model,
            replayed,
            cost,
            *(n if isinstance(n, (int, float)) and not isinstance(n, bool) else 0 for n in counts),
        )

    def _show_usage(self, agent: str, model: str, usage: dict[str, Any], cost: float | None, recorded: bool) -> None:
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
        self.runtime.host.display({"text/plain": line, "text/html": html}, {"tactus": {"agent_usage": True}})

    # ------------------------------------------------------------- history
    def messages(self, turn_id: int, which: str) -> Any:
        snap = self.snapshots.get(turn_id)
        if snap is None:
            raise BridgeError(
                f"AgentError: the messages of this turn are no longer kept (only the last {KEPT_SNAPSHOTS} turns are)"
            )
        messages = snap[0] if which.endswith("all") else snap[1]
        if which.startswith("raw_"):  # pydantic-ai's own JSON form (result.raw_messages())
            return to_lua(self.runtime.lua, hist.dump(messages))
        return to_lua(self.runtime.lua, hist.simple(messages))  # {role, content} records, as the reference

    def history_op(self, run: RunState, op: str, value: Any, agent: str | None) -> Any:
        where = f"MessageHistory.{op}"
        if agent is not None:
            spec = self.agents.get(agent)
            if spec is None:
                raise BridgeError(f"AgentError: {where}: unknown agent '{agent}'")
            key = self.history_key(spec, run)
        elif self.history_config(None, run).get("mode") == "shared":
            key = SHARED
        elif len(self.agents) == 1:
            key = self.history_key(next(iter(self.agents.values())), run)
        elif not self.agents:
            raise BridgeError(f"AgentError: {where}: no agent is declared yet")
        else:
            names = ", ".join(sorted(self.agents))
            raise BridgeError(
                f"AgentError: {where}: several agents ({names}): name one, "
                f"e.g. {where}({'msg, ' if op in ('append', 'inject_system') else ''}"
                f'"{sorted(self.agents)[0]}")'
            )
        history = self.scope(run).histories.setdefault(key, [])
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
            return to_lua(self.runtime.lua, hist.simple(history))
        raise BridgeError(f"AgentError: unknown MessageHistory operation {op!r}")


def _fill_turn(entry: dict[str, Any], new: list[ModelMessage], req: Request) -> None:
    """Complete a live turn's entry (see ``Records.defer``): its messages
    (pydantic-ai message objects are not changed once a turn has returned)
    and its request hash. A failure is written where replay will report it,
    in the messages, since the turn cannot be replayed without them."""
    try:
        entry["request_hash"] = req.digest()
        entry["request"] = req.summary()
        if entry["messages"] is None:
            entry["messages"] = hist.dump(new)
    except Exception as exc:  # noqa: BLE001 - a reader must find a complete entry
        entry["messages"] = f"{NOT_RECORDABLE}{type(exc).__name__}: {exc}"


class _Streamer:
    """Writes a turn's text into the cell as the model streams it."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.flusher = _Flusher(host)
        self.last = ""  # the last chunk written

    async def handle(self, ctx: RunContext[TurnDeps], events: AsyncIterable[AgentStreamEvent]) -> None:
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


class _Flusher:
    """Flush a host's buffered output shortly after streamed text arrives.

    Hosts batch small writes and send them when the *next* write comes; a
    model that pauses mid-answer would leave its last words unseen, so a
    flush is scheduled (at most one pending) a moment after each chunk.
    """

    DELAY = 0.05

    def __init__(self, host: Any) -> None:
        self.flush = getattr(host, "flush", None)
        self.handle: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self.flush is None or self.handle is not None:
            return
        self.handle = asyncio.get_running_loop().call_later(self.DELAY, self._run)

    def _run(self) -> None:
        self.handle = None
        if self.flush is not None:
            self.flush()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
