"""Turns the engine's notifications into telemetry events for the sinks.

The hub is an observer of the runtime (``runtime.add_observer``: a run
starts and ends, a cell closes), of the run logs of the runs a sink wants
(``RunLog.observers``: each call starts, replays or is recorded) and an
interceptor of its effects (``runtime.add_interceptor``): the human and
agent-turn calls are seen whole, so a wait or a turn that fails is ended
with its error and an agent turn is a scope (its span is current while
pydantic-ai runs). From these the hub makes one call per event on each
sink (:class:`Sink`: OpenTelemetry spans, JSON lines), with plain data
(:class:`RunInfo`, :class:`Call`), so a sink is a thin adapter that knows nothing of the engine.

A run no sink wants (its span is not sampled, say) costs one span and
nothing per call: the hub hooks a run's log only when a sink asks for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tactus_kernel.engine import errors
from tactus_kernel.engine.feature import Interceptor, Observer

if TYPE_CHECKING:
    from tactus_kernel.engine.records import RunLog
    from tactus_kernel.engine.runtime import CellRun, RunState, Runtime

Handler = Callable[["Runtime", "RunState", Any], Awaitable[tuple[Any, ...]]]


@dataclass(frozen=True)
class ErrorInfo:
    """Why a run or call failed: the error's kind (``LuaError``,
    ``NoRecordedAnswer``, ...) and its message, as the cell shows them."""

    kind: str
    message: str


@dataclass
class RunInfo:
    """One run of a procedure (or a cell's own code, ``procedure`` False)."""

    id: int
    key: str  # the record key: "deploy", a child "deploy/build#1", an unnamed procedure its cell id
    name: str  # the procedure's name ("build" for "deploy/build#1"); the cell key for a cell's code
    title: str  # how a person knows it (see RunState.title)
    cell: str  # the cell's label, "[cell 3]"
    cell_id: str
    procedure: bool
    parent: RunInfo | None  # the calling run of a child; the cell's own code for a top-level procedure
    started: float  # time.time()
    clock: float  # time.perf_counter() at the start
    log: RunLog
    recorded_at_start: int = 0
    replayed_at_start: int = 0
    traced: bool = False  # some sink wants its calls
    # filled in at the end
    outcome: str = "running"  # completed | failed | cancelled
    error: ErrorInfo | None = None
    duration: float = 0.0
    replayed: bool = False  # nothing new recorded, something replayed
    recorded: int = 0
    replayed_calls: int = 0
    pending: list[Call] = field(default_factory=list)  # calls started, not yet recorded
    turns: list[Call] = field(default_factory=list)  # agent turns open (innermost last)
    asking: str = ""  # the kind of the human request being made (see human_wrapper)

    @property
    def child(self) -> bool:
        return "/" in self.key


@dataclass(slots=True)
class Call:
    """One recorded call of a run: a step, a human request, an agent turn,
    a child procedure, a sleep or another checkpoint kind."""

    kind: str
    name: str
    started: float  # time.time()
    clock: float  # time.perf_counter()
    replayed: bool = False
    duration: float = 0.0
    error: ErrorInfo | None = None
    entry: dict[str, Any] | None = None  # the checkpoint (recorded or replayed), when there is one
    done: bool = False
    request: str = ""  # a human request's kind: approve, input, review, escalate


class Sink(Protocol):
    """What a telemetry sink is told, one method per event."""

    def run_started(self, run: RunInfo) -> bool:
        """Return whether the sink wants this run's calls."""
        ...

    def run_ended(self, run: RunInfo) -> None: ...

    def step(self, run: RunInfo, call: Call) -> None: ...

    def human_requested(self, run: RunInfo, call: Call) -> None: ...

    def human_answered(self, run: RunInfo, call: Call) -> None: ...

    def agent_turn_started(self, run: RunInfo, call: Call) -> None: ...

    def agent_turn_ended(self, run: RunInfo, call: Call) -> None: ...

    def child_replayed(self, run: RunInfo, call: Call) -> None: ...

    def checkpoint(self, run: RunInfo, call: Call) -> None: ...


def error_of(error: Any) -> ErrorInfo:
    """An ErrorInfo from a run's error (the Lua table K.capture_error makes,
    or a tagged string), an effect's exception, or a CellError."""
    if isinstance(error, errors.CellError):
        return ErrorInfo(error.ename, error.evalue)
    if isinstance(error, asyncio.CancelledError):
        return ErrorInfo("Cancelled", "cancelled")
    if isinstance(error, BaseException):
        from tactus_kernel.engine.runtime import LUA_ERRORS, lua_message

        if isinstance(error, LUA_ERRORS):
            error = lua_message(error)  # tagged text, read below
        else:
            return ErrorInfo(type(error).__name__, str(error))
    if isinstance(error, str):
        cell_error = errors.from_lua(error, None, trusted=True)
        return ErrorInfo(cell_error.ename, cell_error.evalue)
    if error is None:
        return ErrorInfo("LuaError", "")
    # a Lua table: read with items(), never table[key] (this runs inside a coroutine, see timeline.lua_fields)
    fields = dict(error.items()) if hasattr(error, "items") else {}
    message = fields.get("message")
    ename = fields.get("ename")
    cell_error = errors.from_lua(
        str(message if message is not None else error),
        None,
        None if ename is None else str(ename),
        trusted=bool(fields.get("trusted", False)),
    )
    return ErrorInfo(cell_error.ename, cell_error.evalue)


INTERRUPTED = ErrorInfo("KeyboardInterrupt", "interrupted by the user")


class TelemetryHub(Observer, Interceptor):
    """A run observer, run-log observer and effect interceptor that feeds the sinks."""

    def __init__(self, runtime: Runtime, sinks: list[Sink]) -> None:
        self.runtime = runtime
        self.sinks = sinks
        self.runs: dict[int, RunInfo] = {}  # open runs by run id
        self.latest: dict[str, RunInfo] = {}  # the latest run of each record key: a child's caller
        self.cells: dict[int, RunInfo] = {}  # id(cell) -> the run of the cell's own code
        self.by_log: dict[int, list[RunInfo]] = {}  # id(run log) -> its traced open runs, innermost last

    # ------------------------------------------------------- run observer
    def run_started(self, run: RunState) -> None:
        cell = run.cell
        if run.spec is None:
            parent = None
        elif "/" in run.key:
            parent = self.latest.get(run.key.rsplit("/", 1)[0])
        else:
            parent = self.cells.get(id(cell))
        name = run.key.rsplit("/", 1)[-1].split("#", 1)[0] if run.spec is not None else run.key
        log = run.log
        info = RunInfo(
            id=run.id,
            key=run.key,
            name=name,
            title=run.title or run.key,
            cell=cell.label,
            cell_id=cell.key,
            procedure=run.spec is not None,
            parent=parent,
            started=time.time(),
            clock=time.perf_counter(),
            log=log,
            recorded_at_start=log.recorded,
            replayed_at_start=log.replayed,
        )
        self.runs[run.id] = info
        self.latest[run.key] = info
        if run.spec is None:
            self.cells[id(cell)] = info
        wanted = False
        for sink in self.sinks:
            wanted = sink.run_started(info) or wanted
        if wanted:
            info.traced = True
            self.by_log.setdefault(id(log), []).append(info)
            if self not in log.observers:
                log.observers.append(self)

    def run_ended(self, run: RunState, ok: bool, error: Any) -> None:
        info = self.runs.get(run.id)
        if info is not None:
            self._end(info, "completed" if ok else "failed", None if ok else error_of(error))

    def cell_closed(self, cell: CellRun) -> None:
        """The cell is over: runs still open were stopped (an interrupt, an
        error Lua could not catch, a spawned child cancelled); the cell's own
        code ends last."""
        own = self.cells.pop(id(cell), None)
        stopped = (
            INTERRUPTED
            if self._interrupted()
            else ErrorInfo("Cancelled", "the procedure did not finish: its cell ended first")
        )
        for info in sorted(self.runs.values(), key=lambda i: -i.id):
            if info is not own and info.cell_id == cell.key:
                self._end(info, "cancelled", stopped)
        if own is not None:
            self._end(own, "completed", None)
        for key in [k for k, i in self.latest.items() if i.cell_id == cell.key]:
            del self.latest[key]

    def _interrupted(self) -> bool:
        return self.runtime.was_interrupted()

    def _error(self, exc: BaseException) -> ErrorInfo:
        """An effect's exception; a cancellation by the interrupt button is the KeyboardInterrupt the cell shows."""
        if isinstance(exc, asyncio.CancelledError) and self._interrupted():
            return INTERRUPTED
        return error_of(exc)

    def _end(self, info: RunInfo, outcome: str, error: ErrorInfo | None) -> None:
        self.runs.pop(info.id, None)
        if info.traced:
            for call in reversed(info.pending):  # started, never recorded: they failed with the run
                self._finish(info, call, error or ErrorInfo("NotCompleted", f"{call.kind} '{call.name}' did not end"))
            info.pending.clear()
            stack = self.by_log.get(id(info.log), [])
            if info in stack:
                stack.remove(info)
            if not stack:
                self.by_log.pop(id(info.log), None)
                if self in info.log.observers:
                    info.log.observers.remove(self)
        info.outcome, info.error = outcome, error
        info.duration = time.perf_counter() - info.clock
        info.recorded = info.log.recorded - info.recorded_at_start
        info.replayed_calls = info.log.replayed - info.replayed_at_start
        info.replayed = info.recorded == 0 and info.replayed_calls > 0
        for sink in self.sinks:
            sink.run_ended(info)

    # --------------------------------------------------- run-log observer
    def _run_of(self, log: RunLog) -> RunInfo | None:
        stack = self.by_log.get(id(log))
        return stack[-1] if stack else None

    def call_started(self, log: RunLog, kind: str, name: str) -> None:
        info = self._run_of(log)
        if info is None:
            return
        call = Call(kind, name, time.time(), time.perf_counter())
        info.pending.append(call)
        if kind == "human":
            call.request = info.asking
            for sink in self.sinks:
                sink.human_requested(info, call)

    def call_replayed(self, log: RunLog, entry: dict[str, Any]) -> None:
        info = self._run_of(log)
        if info is None:
            return
        if entry["kind"] == "procedure" and entry.get("status", "completed") not in ("completed", "cancelled"):
            return  # a child that did not finish last time runs again: its own run reports it
        call = Call(entry["kind"], entry["name"], time.time(), time.perf_counter(), replayed=True, entry=entry)
        call.request = str(entry.get("request", "")) if call.kind == "human" else ""
        self._finish(info, call, None)

    def call_recorded(self, log: RunLog, entry: dict[str, Any]) -> None:
        info = self._run_of(log)
        if info is None:
            return
        kind, name = entry["kind"], entry["name"]
        call = None
        pending = info.pending
        for i in range(len(pending) - 1, -1, -1):
            if pending[i].kind == kind and pending[i].name == name:
                call = pending[i]
                for inner in pending[i + 1 :]:  # started inside it and never recorded: they failed
                    self._finish(info, inner, ErrorInfo("NotCompleted", f"{inner.kind} '{inner.name}' did not end"))
                del pending[i:]
                break
        if call is None:  # recorded without a look-up first (an agent tool's call, say)
            call = Call(kind, name, time.time(), time.perf_counter())
        if kind == "procedure" and entry.get("status") == "running":
            return  # a child call reserves its checkpoint: the child's own run reports it
        call.entry = entry
        self._finish(info, call, None)

    def _finish(self, info: RunInfo, call: Call, error: ErrorInfo | None) -> None:
        """Tell the sinks a call ended (recorded, replayed or failed)."""
        if call.done:
            return
        call.done = True
        if not call.replayed:
            call.duration = time.perf_counter() - call.clock
        call.error = error
        kind = call.kind
        if kind == "agent":
            turn = next((t for t in reversed(info.turns) if t.name == call.name and not t.done), None)
            if turn is not None:  # the wrapper ends the turn, with these details
                turn.replayed, turn.entry = call.replayed, call.entry
                if error is not None:
                    turn.error = error
                return
        for sink in self.sinks:
            if kind == "step":
                sink.step(info, call)
            elif kind == "human":
                sink.human_answered(info, call)
            elif kind == "procedure":
                sink.child_replayed(info, call)
            else:  # a sleep, a wait, an agent turn the wrapper did not see
                sink.checkpoint(info, call)

    # ---------------------------------------------------------- interceptor
    async def intercept(
        self, kind: str, run: RunState, request: Any, proceed: Callable[[], Awaitable[tuple[Any, ...]]]
    ) -> tuple[Any, ...]:
        info = self.runs.get(run.id)
        if info is None or not info.traced or kind not in ("human", "agent.turn"):
            return await proceed()
        if kind == "human":
            return await self._human(info, request, proceed)
        return await self._turn(info, request, proceed)

    async def _human(
        self, info: RunInfo, request: Any, proceed: Callable[[], Awaitable[tuple[Any, ...]]]
    ) -> tuple[Any, ...]:
        """A human request that fails (no recorded answer, a timeout that
        errors, an interrupt) ends its wait with the error."""
        depth = len(info.pending)
        info.asking = str(request["request"])  # the request's kind, before its answer tells it
        try:
            return await proceed()
        except BaseException as exc:
            self._fail_from(info, depth, self._error(exc))
            raise
        finally:
            info.asking = ""

    async def _turn(
        self, info: RunInfo, request: Any, proceed: Callable[[], Awaitable[tuple[Any, ...]]]
    ) -> tuple[Any, ...]:
        """An agent turn is a scope: started before pydantic-ai runs (the
        OpenTelemetry sink makes its span current, so pydantic-ai's own
        instrumentation nests under it) and ended however it ends."""
        turn = Call("agent", str(request["name"]), time.time(), time.perf_counter())
        info.turns.append(turn)
        depth = len(info.pending)
        for sink in self.sinks:
            sink.agent_turn_started(info, turn)
        try:
            return await proceed()
        except BaseException as exc:
            turn.error = self._error(exc)
            self._fail_from(info, depth, turn.error)
            raise
        finally:
            info.turns.remove(turn)
            turn.done = True
            turn.duration = time.perf_counter() - turn.clock
            for sink in reversed(self.sinks):
                sink.agent_turn_ended(info, turn)

    def _fail_from(self, info: RunInfo, depth: int, error: ErrorInfo) -> None:
        """Calls started by a failed effect (past `depth` in the pending list)."""
        failed = info.pending[depth:]
        del info.pending[depth:]
        for call in reversed(failed):
            self._finish(info, call, error)
