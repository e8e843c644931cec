"""``Human.*`` and ``System.alert``: asking a person, recording the answer.

The Lua side yields ``{kind = "human", request = "approve", ...}``. Here the
request is completed from the procedure's declared ``hitl`` entry, matched
against the record (a recorded answer returns at once, shown as answered),
answered from pre-supplied answers (``--answer``, ``%tactus answer``), and
otherwise put to the host, which shows a card and waits for a click. The
answer is recorded with the time it was given. Nothing here knows about
widgets: the host decides how to ask.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.bridge import BridgeError
from tactus_kernel.engine.errors import Failure, KernelError
from tactus_kernel.engine.feature import Feature, Prelude
from tactus_kernel.engine.host import NoAnswerer
from tactus_kernel.engine.records import describe_entry, now_iso
from tactus_kernel.engine.values import to_lua, to_plain

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import RunState
    from tactus_kernel.engine.runtime import Runtime

HITL_TYPES = {
    "approval": "approve",
    "approve": "approve",
    "input": "input",
    "review": "review",
    "escalation": "escalate",
    "escalate": "escalate",
}
LEVELS = {"notify": ("info", "warning", "error"), "alert": ("info", "warning", "error", "critical")}


@dataclass
class HumanRequest:
    """One question for a person, as a card shows it."""

    request: str
    name: str
    message: str
    procedure: str  # how a card names it (an unnamed procedure: "cell 3: its first line")
    context: Any = None
    key: str = ""  # the record's key (metadata.tactus.procedures); for an unnamed procedure its cell id
    default: Any = None
    timeout: float | None = None
    on_timeout: str = "default"
    options: list[Any] | None = None
    placeholder: str = ""
    multiline: bool = False
    artifact: Any = None
    artifact_type: str | None = None
    severity: str = "medium"
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``Human.input "Your name?"``: how replay errors name a request."""
        return f"Human.{self.request} {json.dumps(self.message, ensure_ascii=False)}"

    def review_options(self) -> list[str]:
        return [str(o.get("label", o) if isinstance(o, dict) else o) for o in (self.options or ["Approve", "Reject"])]


class HumanError(Exception):
    """Raised to the Lua call site (tagged message)."""


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes", "y", "approve", "approved", "1", "ok"):
            return True
        if v in ("false", "no", "n", "reject", "rejected", "0"):
            return False
        raise HumanError(f"ParamError: cannot read {value!r} as an approval (use true/false)")
    return bool(value)


def coerce_answer(req: HumanRequest, raw: Any) -> Any:
    """Turn an answer given as text (CLI, magic) into the request's value."""
    if req.request == "approve":
        return _bool(raw)
    if req.request == "input":
        return raw if raw is None or isinstance(raw, str) else json.dumps(raw)
    if req.request == "review":
        if isinstance(raw, str):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw
            raw = parsed if isinstance(parsed, dict) else {"decision": raw}
        if not isinstance(raw, dict) or "decision" not in raw:
            raise HumanError('ParamError: a review answer needs a decision, e.g. Approve or {"decision": ...}')
        return {
            "decision": str(raw["decision"]),
            "feedback": raw.get("feedback", ""),
            "edited_artifact": raw.get("edited_artifact", req.artifact if isinstance(req.artifact, str) else None),
            "responded_at": raw.get("responded_at") or now_iso(),
        }
    return True  # escalate: resolved


def build_request(runtime: Runtime, run: RunState, lua_req: Any) -> HumanRequest:
    kind = str(lua_req["request"])
    hitl = lua_req["hitl"]
    opts = to_plain(lua_req["opts"]) if lua_req["opts"] is not None else {}
    if not isinstance(opts, dict):
        opts = {}
    declared: dict[str, Any] = {}
    name = None
    if hitl is not None:
        points = (run.spec.config.get("hitl") if run.spec else None) or {}
        if isinstance(points, dict) and hitl in points and isinstance(points[hitl], dict):
            declared = dict(points[hitl])
            name = str(hitl)
            declared_kind = HITL_TYPES.get(str(declared.get("type", kind)))
            if declared_kind and declared_kind != kind:
                raise HumanError(
                    f"ProcedureError: hitl point '{hitl}' is declared as {declared.get('type')}, "
                    f"but Human.{kind} was called"
                )
        else:
            opts.setdefault("message", str(hitl))
    merged = {**declared, **opts}
    message = merged.get("message")
    if message is None:
        raise HumanError(f"ParamError: Human.{kind} needs a message (or the name of a declared hitl point)")
    context = merged.get("context")  # plain data; functions show as "<function>"
    timeout = merged.get("timeout")
    if timeout is not None and (type(timeout) not in (int, float) or not math.isfinite(timeout) or timeout < 0):
        shown = json.dumps(timeout, ensure_ascii=False, default=str)
        raise HumanError(
            f"ParamError: Human.{kind}: timeout must be a finite non-negative number of seconds, got {shown[:60]}"
        )
    on_timeout = str(merged.get("on_timeout", "default"))
    if on_timeout not in ("default", "error", "retry"):
        raise HumanError(f'ParamError: on_timeout must be "default", "error" or "retry", got {on_timeout!r}')
    options = merged.get("options")
    if options is not None and not isinstance(options, list):
        raise HumanError("ParamError: options must be a list")
    return HumanRequest(
        request=kind,
        name=name or str(message),
        message=str(message),
        procedure=run.title or run.key,  # what the card names: a person knows "cell 3: ...", not the cell's UUID
        key=run.key,
        context=context,
        default=merged.get("default"),
        timeout=float(timeout) if timeout is not None else None,
        on_timeout=on_timeout,
        options=options,
        placeholder=str(merged.get("placeholder", "")),
        multiline=bool(merged.get("multiline", False)),
        artifact=merged.get("artifact"),
        artifact_type=merged.get("artifact_type"),
        severity=str(merged.get("severity", "medium")),
    )


def _results(runtime: Runtime, req: HumanRequest, value: Any, timed_out: bool) -> tuple[Any, ...]:
    """What the Lua call returns: approve also says whether it timed out."""
    if req.request == "escalate":
        return ()
    if req.request == "approve":
        return bool(value), timed_out
    return (to_lua(runtime.lua, value),)


def _presupplied(runtime: Runtime, req: HumanRequest) -> tuple[bool, Any]:
    for key in (req.name, req.message):
        if key in runtime.answers:
            return True, runtime.answers.pop(key) if not runtime.batch else runtime.answers[key]
    return False, None


async def human_effect(runtime: Runtime, run: RunState, lua_req: Any) -> tuple[Any, ...]:
    try:
        req = build_request(runtime, run, lua_req)
    except HumanError as exc:
        raise BridgeError(str(exc)) from None
    host = runtime.host
    entry = run.log.replay("human", req.name)
    if entry is not None:
        recorded = entry.get("value")
        if req.request == "approve" and not (recorded is None or isinstance(recorded, bool)):
            # a hand-edited "false" must not approve (bool("false") is True)
            raise BridgeError(
                f"CheckpointError: {describe_entry(run.key, run.log.position - 1, entry)}: a recorded "
                f"Human.approve answer must be true or false, found {json.dumps(recorded)[:60]}; fix it in "
                f"the notebook's metadata.tactus, or run `%tactus reset {run.key}` to be asked again"
            )
        host.show_answered(req, entry, _index(run, entry))
        return _results(runtime, req, entry.get("value"), bool(entry.get("timed_out", False)))

    given, raw = _presupplied(runtime, req)
    if given:
        try:
            value = coerce_answer(req, raw)
        except HumanError as exc:
            raise BridgeError(str(exc)) from None
        return _record(runtime, run, req, value, timed_out=False, source="supplied")

    if runtime.batch:
        raise unanswered(
            req,
            f'procedure "{run.key}": {req.describe()} has no recorded answer '
            f"(record it by running the notebook interactively and saving it, or pass "
            f"--answer {json.dumps(req.name + '=VALUE', ensure_ascii=False)})",
        )
    runtime.observers.human_wait_started(run, req)
    try:
        value, timed_out = await _ask(host, req)
    except NoAnswerer as exc:
        raise unanswered(req, f"{req.describe()}: {exc}") from None
    finally:
        runtime.observers.human_wait_ended(run, req)
    if timed_out:
        return _record(runtime, run, req, req.default, timed_out=True, source="timeout")
    return _record(runtime, run, req, value, timed_out=False, source="human")


async def _ask(host: Any, req: HumanRequest) -> tuple[Any, bool]:
    """The host's answer, and whether it timed out (and so is the default)."""
    while True:
        try:
            if req.timeout is not None:
                return await asyncio.wait_for(host.ask_human(req), req.timeout), False
            return await host.ask_human(req), False
        except TimeoutError:
            if req.on_timeout == "retry":
                continue
            if req.on_timeout == "error":
                problem = f"{req.describe()} got no answer within {req.timeout:g}s"
                raise unanswered(req, problem, "HumanTimeout") from None
            return req.default, True


def unanswered(req: HumanRequest, message: str, kind: str = "NoRecordedAnswer") -> KernelError:
    """The error of a request nobody answered, with the request as data
    (the replay names it and says which ``--answer`` key answers it)."""
    request = {"kind": req.request, "name": req.name, "message": req.message, "text": req.describe()}
    failure = Failure(kind, message, procedure=req.key or None, request=request, answer_key=req.name)
    return KernelError(failure)


def _record(
    runtime: Runtime, run: RunState, req: HumanRequest, value: Any, timed_out: bool, source: str
) -> tuple[Any, ...]:
    extra: dict[str, Any] = {"request": req.request, "message": req.message}
    if timed_out:
        extra["timed_out"] = True
    if source != "human":
        extra["source"] = source
    entry = run.log.append("human", req.name, value, **extra)
    runtime.host.records_changed()
    runtime.host.human_recorded(req, entry, _index(run, entry))  # the card turns static, showing the answer
    return _results(runtime, req, value, timed_out)


def _index(run: RunState, entry: dict[str, Any]) -> int | None:
    """Where `entry` sits in its procedure's record (the card says so)."""
    i = run.log.position - 1
    return i if 0 <= i < len(run.log.entries) and run.log.entries[i] is entry else None


async def notice_effect(runtime: Runtime, run: RunState, lua_req: Any) -> tuple[Any, ...]:
    """``Human.notify`` / ``System.alert``: shown, never waited for, not recorded."""
    which = str(lua_req["request"])
    opts = to_plain(lua_req["opts"]) if lua_req["opts"] is not None else {}
    if not isinstance(opts, dict) or opts.get("message") is None:
        raise BridgeError(f"ParamError: {'Human.notify' if which == 'notify' else 'System.alert'} needs a message")
    level = str(opts.get("level", "info"))
    if level not in LEVELS[which]:
        raise BridgeError(f"ParamError: level must be one of {', '.join(LEVELS[which])}, got {level!r}")
    notice = {
        "kind": which,
        "level": level,
        "message": str(opts["message"]),
        "context": opts.get("context"),
        "source": opts.get("source"),
        "procedure": run.key,
        "at": dt.datetime.now(dt.UTC).strftime("%H:%M:%S"),
    }
    runtime.host.notice(notice)
    return ()


class HumanFeature(Feature[None]):
    """``Human.approve / input / review / escalate / notify`` and ``System.alert``."""

    name = "human"
    preludes = (Prelude("tactus_kernel.features.human", "human.lua"),)

    def install(self, runtime: Runtime, state: None) -> None:
        runtime.register_effect("human", human_effect)
        runtime.register_effect("notice", notice_effect)
