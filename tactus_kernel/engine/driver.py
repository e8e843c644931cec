"""The driver: runs a Lua coroutine to its end, answering its effects.

Cell code and procedure bodies run as Lua coroutines. Whatever must wait
(Sleep, a human answer, an agent turn) is yielded to :meth:`Driver.drive`
as an effect request ``{kind = ..., run = ...}``; the driver looks the kind
up among the handlers the features registered (engine/feature.py), awaits
it, and resumes the coroutine with the answer, so the event loop stays free
while a procedure waits. A feature that runs Lua code of its own (a child
procedure, an agent's tool, a spec step) starts a thread with ``K.start``
and awaits ``runtime.drive(thread)``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from lupa import lua54

from tactus_kernel.engine import errors
from tactus_kernel.engine.bridge import LUA_ERRORS, internal_message, lua_message
from tactus_kernel.engine.display import lua_repr
from tactus_kernel.engine.errors import CellError, not_utf8, tagged
from tactus_kernel.engine.records import RunLog
from tactus_kernel.engine.runs import CellRun, ProcedureSpec, RunState
from tactus_kernel.engine.values import to_lua

if TYPE_CHECKING:
    from tactus_kernel.engine.feature import EffectHandler, Interceptor, Observers
    from tactus_kernel.engine.interrupts import Interrupter
    from tactus_kernel.engine.limits import RunLimits
    from tactus_kernel.engine.records import Records

log = logging.getLogger("tactus_kernel")


class _CheckpointTap:
    """A run log's observer (records.LogObserver) for observers of checkpoint_recorded. It holds its
    run weakly: the log holds the tap, and a strong reference back to the
    run (which holds the log) would be a cycle keeping the run's entries
    alive until a full collection."""

    __slots__ = ("observers", "run")

    def __init__(self, observers: Observers, run: RunState) -> None:
        self.observers = observers
        self.run = weakref.ref(run)

    def call_started(self, log: RunLog, kind: str, name: str) -> None:
        return None

    def call_replayed(self, log: RunLog, entry: dict[str, Any]) -> None:
        return None

    def call_recorded(self, log: RunLog, entry: dict[str, Any]) -> None:
        run = self.run()
        if run is not None:
            self.observers.checkpoint_recorded(run, entry)


class Driver:
    """The runtime's coroutine driver (a part of :class:`~tactus_kernel.engine.runtime.Runtime`)."""

    K: Any
    lua: lua54.LuaRuntime
    max_memory: int | None
    procedures: dict[str, ProcedureSpec]
    runs: dict[int, RunState]
    effects: dict[str, EffectHandler]
    observers: Observers
    interceptors: list[Interceptor]
    limits: RunLimits
    _next_run: int
    _interrupted: bool
    _interrupter: Interrupter
    _step: Any
    _collectgarbage: Any

    if TYPE_CHECKING:  # provided by Runtime (its session) and the other parts

        @property
        def records(self) -> Records:
            raise NotImplementedError

        @property
        def allow_divergence(self) -> bool:
            raise NotImplementedError

        def show(self, value: Any) -> Any:
            raise NotImplementedError

    def _new_run(self, key: str, spec: ProcedureSpec | None, cell: CellRun) -> RunState:
        log = cell.logs.get(key)
        if log is None:
            log = cell.logs[key] = RunLog(self.records, key, self.allow_divergence)
        self._next_run += 1
        root, slash, rest = key.partition("/")
        declared = self.procedures.get(root)
        named = declared is not None and bool(declared.config.get("name"))
        title = cell.title + slash + rest if root == cell.key and cell.title and not named else key
        run = RunState(self._next_run, key, log, spec, cell, title=title)
        if not slash:  # a child's record is nested in its caller's, which has the title
            log.title = title
        self.runs[run.id] = run
        if self.observers.wants("checkpoint_recorded"):
            log.observers.append(_CheckpointTap(self.observers, run))
        self.observers.run_started(run)
        return run

    async def drive(self, thread: Any) -> list[Any]:
        """Resume the Lua thread `thread` (from ``K.start``) until it finishes,
        answering its effects; returns what it returned. Raises CellError
        when it fails (the Lua error as data: ename, evalue, traceback)."""
        send: tuple[Any, ...] = ()
        self._interrupter.add(thread, self.K.address(thread))
        if self._interrupted:
            self._interrupter.arm()
        try:
            while True:
                try:
                    status, *rest = self._step(thread, *send)
                except lua54.LuaMemoryError:
                    raise self._memory_error() from None
                if status == "done":
                    packed = rest[0]
                    try:
                        return [packed[i] for i in range(1, int(packed["n"]) + 1)]
                    except UnicodeDecodeError:  # text that is not UTF-8: show it with U+FFFD
                        packed = self.K.safe_copy(packed)
                        return [packed[i] for i in range(1, int(packed["n"]) + 1)]
                if status == "error":
                    raise self._lua_error(*rest)
                request = rest[0]
                if request is None:
                    send = ()
                    continue
                send = await self._perform(request, rest[1], rest[2])
        finally:
            self.K.close_thread(thread)  # __close handlers may loop: still interruptible here
            self._interrupter.remove(thread)
            self.K.drop(thread)

    async def _perform(self, request: Any, kind: Any, run_id: Any) -> tuple[Any, ...]:
        """Answer one effect (K.step reads its kind and run in Lua and hands them over with it)."""
        handler = self.effects.get(kind)
        run = self.runs.get(run_id)
        if handler is None or run is None:
            return False, tagged("InternalError", f"no handler for effect {kind!r} of run {run_id!r}")
        since = time.perf_counter()
        try:
            try:
                # self is the Runtime; a procedure's time limit bounds every wait but a person's
                call = handler(self, run, request) if not self.interceptors else self._intercepted(kind, run, request)
                values = await self.limits.bound(kind, call)
            except BaseException as exc:  # told, then handled below as it is
                self.observers.effect_failed(run, str(kind), exc, since)
                raise
            for value in values:  # lupa copies an answer's text into Lua: it must fit under the cap
                if type(value) is str:
                    to_lua(self.lua, value)
        except LUA_ERRORS as exc:
            return False, lua_message(exc)
        except lua54.LuaMemoryError:
            return False, "not enough memory"
        except UnicodeDecodeError as exc:  # lupa reading a string the effect was given
            return False, tagged("SandboxError", not_utf8(exc))
        except Exception as exc:
            log.error("Tactus: internal error in the %s effect", kind, exc_info=exc)
            return False, internal_message(f"the {kind} effect", exc)
        return (True, *values)

    async def _intercepted(self, kind: str, run: RunState, request: Any) -> tuple[Any, ...]:
        """The effect's handler called through the interceptors, the first added outermost."""
        handler, interceptors = self.effects[kind], self.interceptors

        async def proceed(i: int) -> tuple[Any, ...]:
            if i == len(interceptors):
                return await handler(self, run, request)  # self is the Runtime
            return await interceptors[i].intercept(kind, run, request, lambda: proceed(i + 1))

        return await proceed(0)

    def _lua_error(
        self, message: Any, traceback: Any, ename: Any = None, trusted: Any = False, value: Any = None
    ) -> CellError:
        """The CellError of a failed thread. `trusted` says the kernel raised
        the message itself (lua/sandbox.lua: mark_raised), so its "Name: "
        prefix is a kind; a cell's own text never is. `value`: a table raised
        as the error (``error({code = 42})``), shown as a Lua constructor
        rather than its address (see K.step)."""
        message = str(message)
        if self._interrupted or bool(self.K.was_interrupted()):
            return self.interrupted_error()
        if "not enough memory" in message:
            return self._memory_error()
        for prefix in ("[tactus primitives]", "[tactus sandbox]"):
            while message.startswith(prefix):
                message = message.split(": ", 1)[-1]
        tb = None if traceback is None else str(traceback)
        shown = None
        if value is not None:
            with contextlib.suppress(Exception):  # a value that cannot be shown keeps its "table: 0x..."
                shown = lua_repr(self.show(value))
        return errors.from_lua(message, tb, None if ename is None else str(ename), shown, trusted=bool(trusted))

    def interrupted_error(self) -> CellError:
        """The error of an interrupted cell, naming the line of cell code
        that was running when it came (if Lua code was running)."""
        where = self.K.interrupted_at()
        timed_out = self.limits.error(where)  # stopped by a procedure's time limit
        if timed_out is not None:
            return timed_out
        return CellError.simple("KeyboardInterrupt", "interrupted by the user" + (f" at {where}" if where else ""))

    def _memory_error(self) -> CellError:
        self._collectgarbage("collect")
        limit = f"{self.max_memory / 2**20:g} MiB" if self.max_memory else "the machine's"
        msg = f"the cell ran out of memory (limit {limit}); the kernel is still running"
        return CellError.simple("LuaMemoryError", msg)
