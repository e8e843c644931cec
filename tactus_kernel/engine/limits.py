"""Run-time limits: ``procedure({timeout = 30}, fn)`` and ``TACTUS_PROCEDURE_TIMEOUT``.

A procedure that runs past its limit ends its cell with a ``ProcedureTimeout``
error, the way an interrupt does (and through the same machinery): its
checkpoints stay recorded, a re-run replays them, and the kernel lives on.

What counts is the machine's work on the cell, as the reference systems'
max execution time is a CPU-time budget: Lua code, steps, sleeps, agent
turns and child procedures. Time spent waiting for a person does not: while
a human request waits for its answer, every clock stops (a card may wait
for hours by design; ``Human.approve({timeout = ...})`` bounds that wait).

One watchdog thread per runtime keeps the deadlines. It must be a thread:
a tight Lua loop holds the event loop, so only another thread can stop it
(it arms the Lua threads as an interrupt does, see interrupts.py). An
effect being awaited (Sleep, an agent turn, a child procedure) is raced
against the watchdog's signal by :meth:`RunLimits.bound`.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tactus_kernel.engine.errors import BridgeError, CellError, ParamError
from tactus_kernel.engine.feature import Observer

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun, RunState

TIMEOUT_ENV = "TACTUS_PROCEDURE_TIMEOUT"
# Effects that wait for a person: their time does not count.
PERSON_KINDS = frozenset({"human"})

T = TypeVar("T")


def parse_timeout(value: Any, where: str) -> float | None:
    """A ``timeout`` given in a procedure's config: a number of seconds > 0.
    Raises ParamError naming the field (`where`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ParamError(f"{where}: timeout must be a number of seconds greater than 0, got {value!r}")
    return float(value)


def default_timeout() -> float | None:
    """``TACTUS_PROCEDURE_TIMEOUT`` in seconds; empty or 0: no limit. A value
    that is not a number is refused with a message naming the variable."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ParamError(f"{TIMEOUT_ENV}={raw!r}: must be a number of seconds (0 or empty: no limit)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ParamError(f"{TIMEOUT_ENV}={raw!r}: must be a number of seconds (0 or empty: no limit)")
    return seconds or None


class Interruptible(Protocol):
    """All the limits need of the runtime: a way to stop the running cell
    (the Runtime is one; limits.py stays below runtime.py)."""

    def interrupt(self) -> None: ...


@dataclass
class _Limit:
    who: str  # the procedure, and its caller when it is a child: "'build' (called by 'deploy')"
    seconds: float
    deadline: float  # on the work clock (see RunLimits.work_clock)
    declared: bool  # by the procedure's config (else the environment's default)


class RunLimits(Observer):
    """A run observer that ends a cell whose procedure runs past its limit."""

    def __init__(self, runtime: Interruptible) -> None:
        self.runtime = runtime
        self._cond = threading.Condition()
        self._limits: dict[int, _Limit] = {}  # run id -> its limit
        self._paused = 0  # person waits in progress
        self._paused_since = 0.0
        self._paused_total = 0.0
        self._thread: threading.Thread | None = None
        self.fired: _Limit | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def check_declared(value: Any, where: str) -> None:
        """A procedure's ``timeout``, checked where it is declared (ParamError if bad)."""
        parse_timeout(value, where)

    # ------------------------------------------------------- the work clock
    def work_clock(self) -> float:
        """Seconds of monotonic time, less the time spent waiting for people."""
        now = time.monotonic()
        paused = self._paused_total + (now - self._paused_since if self._paused else 0.0)
        return now - paused

    # --------------------------------------------------------- the observer
    def run_started(self, run: RunState) -> None:
        if run.spec is None:
            if "/" not in run.key:  # a cell's own code: a new cell begins
                self._new_cell()
            return
        declared = run.spec.config.get("timeout")
        seconds = parse_timeout(declared, f"procedure '{run.spec.key}'") if declared is not None else None
        if seconds is None:
            seconds = default_timeout()
        if seconds is None:
            return
        with self._cond:
            caller = run.key.rpartition("/")[0].rpartition("/")[2].split("#")[0]  # "deploy/build#1" -> deploy
            who = repr(run.spec.key) + (f" (called by {caller!r})" if caller else "")
            self._limits[run.id] = _Limit(who, seconds, self.work_clock() + seconds, declared is not None)
            self._cond.notify()
        self._ensure_thread()

    def run_ended(self, run: RunState, ok: bool, error: Any) -> None:
        with self._cond:
            self._limits.pop(run.id, None)

    def cell_closed(self, cell: CellRun) -> None:
        with self._cond:
            self._clear()
            self._cond.notify()

    def _new_cell(self) -> None:
        with self._cond:
            self._clear()
            self.fired = None
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

    # ------------------------------------------------------------ the effects
    async def bound(self, kind: str, work: Awaitable[T]) -> T:
        """Await an effect's `work`, unless the cell's limit ends it first
        (then the Lua thread, armed, raises at once; see :meth:`error`).
        A person's wait stops the clocks while it lasts."""
        stop = self._stop
        if stop is None or not self._limits:  # no limit in force: no cost
            return await work
        person = kind in PERSON_KINDS
        if person:
            self._pause()
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            raise self._stopped()
        finally:
            waiter.cancel()
            if not task.done():  # we were cancelled ourselves (an interrupt)
                task.cancel()
            if person:
                self._resume()

    def _stopped(self) -> Exception:
        return BridgeError("KeyboardInterrupt: stopped by the procedure's time limit")

    def _clear(self) -> None:
        """No limit in force and no person waited for (a cell ended or begins)."""
        self._limits.clear()
        if self._paused:
            self._paused_total += time.monotonic() - self._paused_since
            self._paused = 0

    def _pause(self) -> None:
        with self._cond:
            if self._paused == 0:
                self._paused_since = time.monotonic()
            self._paused += 1

    def _resume(self) -> None:
        with self._cond:
            if self._paused == 0:
                return
            self._paused -= 1
            if self._paused == 0:
                self._paused_total += time.monotonic() - self._paused_since
                self._cond.notify()

    # ----------------------------------------------------------- the watchdog
    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="tactus-limits", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        with self._cond:
            while True:
                if not self._limits or self._paused or self.fired is not None:
                    self._cond.wait()
                    continue
                first = min(self._limits.values(), key=lambda limit: limit.deadline)
                left = first.deadline - self.work_clock()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._fire(first)

    def _fire(self, limit: _Limit) -> None:
        """On the watchdog thread: stop the cell as an interrupt would."""
        self.fired = limit
        self.runtime.interrupt()  # a tight loop: the armed hook raises at the next instruction
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)  # an awaited effect: bound() ends it

    # -------------------------------------------------------------- the error
    def error(self, where: str | None) -> CellError | None:
        """The cell's error when a limit ended it (else None); `where` is
        the line of cell code that was running."""
        limit = self.fired
        if limit is None:
            return None
        source = "its timeout" if limit.declared else TIMEOUT_ENV
        at = f" at {where}" if where else ""
        return CellError.simple(
            "ProcedureTimeout",
            f"procedure {limit.who} ran past its time limit of {limit.seconds:g}s ({source}){at}; "
            "it was stopped, its checkpoints are kept (a re-run replays them) and the kernel is still running",
        )
