"""Composition: child procedures run, spawned, waited for, cancelled, and
recorded (Lua side: ``lua/composition.lua``).

Records. A call ``Procedure.run("build", p)`` (or ``spawn``) made by run
``R`` is one checkpoint of ``R``: ``{"kind": "procedure", "name": "build",
"value": <the output>, "status": ..., "params": ..., "child": "build#1",
"mode": "run" | "spawn"}``. It is reserved when the call starts (so a
spawned child that finishes later does not move the caller's later
checkpoints) and filled in when the child ends. On replay a completed
checkpoint is the answer: the child does not run again. The child's own
checkpoints (steps, human answers, agent turns) live in its own record,
nested in the caller's: ``procedures[R]["children"]["build#1"]``, reached
by the record key ``"R/build#1"`` (see ``Records.lookup``). The ``#n``
counts the calls of that procedure made by that run, so the key is the
same on every run of deterministic code, and a child interrupted half-way
(a kernel restart while it waited for a human) replays its own record and
goes on where it stopped.

Concurrency. Every child runs as its own Lua coroutine (``K.child_main``)
driven by ``Runtime.drive``; a spawned child's driver is an asyncio task
of its own, so a child waiting for a human does not block its siblings and
several cards can wait in one cell, answered in any order. ``wait``,
``wait_any`` and ``wait_all`` are effects that await those tasks. Which
child ``wait_any`` saw first, and whether a wait with a timeout timed out,
are recorded (``kind = "wait"``), so a replay takes the same path.

Injection. ``Procedure.inject(handle, message)`` queues a message on the
child; :func:`apply_injection` (called by the agent turn effect in
``primitives/agents.py``) hands the queue to the child's next agent turn as
its ``inject`` option.

Observers (engine/feature.py) hear of each call (``child_called``,
``child_started``, ``child_ended``, ``message_injected``): the timeline
draws the calls from them. A child waiting for a human is told to this hub
as an observer too (``human_wait_started``), which is how
``Procedure.status`` says ``waiting_for_human``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.bridge import LUA_ERRORS, BridgeError, lua_message
from tactus_kernel.engine.errors import CellError, Failure, KernelError, ParamError
from tactus_kernel.engine.feature import Feature, Observer, Prelude
from tactus_kernel.engine.records import ParamsDivergenceError, now_iso
from tactus_kernel.engine.values import NotRecordable, to_json, to_lua

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun, RunState
    from tactus_kernel.engine.runtime import Runtime

FINISHED = ("completed", "failed", "cancelled")
# Errors of a child that reach the caller under their own name; any other
# failure becomes "ProcedureError: procedure 'x' failed: ...".
# A ProcedureError passes through too: a grandchild's failure is reported
# once, not wrapped again at every level.
PASS_THROUGH = {
    "KeyboardInterrupt",
    "DivergenceError",
    "NoRecordedAnswer",
    "LuaMemoryError",
    "GuardError",
    "DependencyError",
    "ParamError",
    "ProcedureError",
}


def _bridge_error(message: str) -> Exception:
    return BridgeError(message)


@dataclass
class Child:
    """One child procedure call, from its start to its outcome."""

    id: int
    name: str
    key: str  # the child's record key, "<caller key>/<name>#<n>"
    mode: str  # "run" or "spawn"
    parent: RunState
    entry: dict[str, Any]  # the caller's checkpoint for this call
    cell: CellRun
    info: Any = None  # the Lua table the handle reads: status, ctx
    run: RunState | None = None
    ctx: Any = None
    params: Any = None  # validated params (Lua table)
    task: asyncio.Task[None] | None = None
    status: str = "running"
    value: Any = None
    ename: str = ""
    evalue: str = ""
    error: Failure | None = None  # why it failed, as data (see CompositionHub.failure)
    inbox: list[str] = field(default_factory=list)
    explicit_cancel: bool = False
    waited: bool = False  # some wait saw its outcome
    waiting: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: int = 0  # order of finishing (wait_any picks the first)
    # the recorded entry as it was, for a call that did not finish last time and
    # runs again: an identical outcome puts it back (a replay changes no record)
    recorded: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    def set_status(self, status: str) -> None:
        self.status = status
        if self.info is not None:
            self.info["status"] = status


class CompositionHub(Observer):
    """Children of one runtime, their effects, and their records."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.children: dict[int, Child] = {}
        self.by_run: dict[int, Child] = {}
        self.counts: dict[int, dict[str, int]] = {}  # caller run id -> procedure -> calls so far
        self.count_cells: dict[int, CellRun] = {}
        self._next_id = 0
        self._finished = 0

    # ------------------------------------------------------------ starting
    def _begin(self, parent: RunState, request: Any, mode: str) -> Child:
        """Validate the call, match it against the caller's record, and
        (unless the record answers it) start the child's run."""
        rt = self.runtime
        name = str(request["name"])
        spec = rt.procedures.get(name)
        if spec is None:
            raise _bridge_error(f"ProcedureError: unknown procedure '{name}'")
        given = request["params"]
        try:
            given_py = to_json(given, "params") if given is not None else {}
        except NotRecordable as exc:
            raise KernelError(Failure("ParamError", f"procedure '{name}': {exc}")) from None
        if given_py == []:
            given_py = {}
        if not isinstance(given_py, dict):
            problem = f"procedure '{name}': params must be a table of name = value"
            raise KernelError(Failure("ParamError", problem))
        from tactus_kernel.engine.fields import validate_params  # pydantic, loaded by the first declaration

        try:
            validated = validate_params(f"procedure '{name}'", spec.params, given_py)
        except ParamError as exc:
            raise KernelError(exc.failure()) from None

        counts = self.counts.setdefault(parent.id, {})
        self.count_cells[parent.id] = parent.cell
        count = counts[name] = counts.get(name, 0) + 1
        child_key = f"{parent.key}/{name}#{count}"
        log = parent.log
        rt.observers.child_called(parent, name, mode)
        entry = log.replay("procedure", name)
        if entry is not None and entry.get("params", validated) != validated:
            entry = self._params_diverged(parent, name, entry, validated)
        self._next_id += 1
        child = Child(self._next_id, name, child_key, mode, parent, entry or {}, parent.cell)
        child.info = request["info"] if mode == "spawn" else None
        self.children[child.id] = child
        if entry is not None:
            status = entry.get("status", "completed")
            if status == "completed" or (status == "cancelled" and mode == "spawn"):
                child.value = entry.get("value")
                self._finished += 1
                child.finished = self._finished
                child.set_status(status)
                if status == "cancelled":
                    child.explicit_cancel = True
                return child  # replayed: the child does not run
            child.recorded = dict(entry)
            entry.update(status="running", value=None, mode=mode, child=child_key.rsplit("/", 1)[1])
            entry.pop("error", None)
        else:
            entry = log.append(
                "procedure",
                name,
                None,
                status="running",
                mode=mode,
                child=child_key.rsplit("/", 1)[1],
                params=validated,
            )
        child.entry = entry
        try:
            child.run, params_lua = rt.begin_run(name, given, parent.cell, child_key)
        except LUA_ERRORS as exc:
            message = lua_message(exc)
            entry.update(status="failed", error=message)
            log.entry_changed(entry)
            rt.observers.child_ended(parent, None, entry)
            raise _bridge_error(message) from None
        run_id = child.run.id
        child.params = params_lua
        child.ctx = rt.K.new_ctx(run_id, child_key, params_lua, int(request["depth"]))
        if child.info is not None:
            child.info["ctx"] = child.ctx
        child.set_status("running")
        self.by_run[run_id] = child
        rt.observers.child_started(parent, child.run, entry)
        rt.host.records_changed()
        return child

    def _params_diverged(
        self, parent: RunState, name: str, entry: dict[str, Any], validated: dict[str, Any]
    ) -> dict[str, Any] | None:
        log = parent.log
        position = log.position - 1
        if log.allow_divergence:
            log.clear_from(position)
            self.runtime.host.records_changed()
            return log.replay("procedure", name)  # None: record it afresh
        recorded = {"kind": "procedure", "name": name, "params": entry.get("params")}
        asked = {"kind": "procedure", "name": name, "params": validated}
        raise ParamsDivergenceError(parent.key, position, recorded, asked)

    # ------------------------------------------------------------ running
    async def _execute(self, child: Child) -> None:
        """Drive the child's coroutine to its end and record the outcome."""
        rt = self.runtime
        thread = rt.K.start(rt.K.child_main(child.name, child.params), child.ctx)
        try:
            values = await rt.drive(thread)
        except CellError as exc:
            child.error = exc.failure
            self._finish(child, "failed", None, exc.ename, exc.evalue)
            return
        except asyncio.CancelledError:
            self._finish(child, "cancelled", None, "", "")
            raise
        try:
            value = to_json(values[0] if values else None, "the result")
        except NotRecordable as exc:  # end_run validated it already; defensive
            self._finish(child, "failed", None, "NotRecordableError", str(exc))
            return
        self._finish(child, "completed", value, "", "")

    async def _spawned(self, child: Child) -> None:
        try:
            await self._execute(child)
        except asyncio.CancelledError:
            pass  # the outcome is recorded; waiters see "cancelled"

    def _finish(self, child: Child, status: str, value: Any, ename: str, evalue: str) -> None:
        rt = self.runtime
        child.value, child.ename, child.evalue = value, ename, evalue
        self._finished += 1
        child.finished = self._finished
        child.set_status(status)
        run = child.run
        if run is not None:
            # a run that never reached end_run (cancelled, or its cell was
            # interrupted; then the runtime may have dropped it already):
            # close its record (observers close the rest in child_ended)
            rt.runs.pop(run.id, None)
            rec = rt.records.lookup(run.key)
            if rec is not None and rec.get("status") == "running":
                rt.records.set(run.key, status="cancelled")
        if run is not None and status != "completed":
            # its record stays for the next run; it need not have been used up
            child.cell.logs.pop(run.key, None)
        entry = child.entry
        recorded = status
        if status == "cancelled" and not child.explicit_cancel:
            recorded = "interrupted"  # not a decision of the code: the next run tries again
        outcome: dict[str, Any] = {"status": recorded, "value": value if status == "completed" else None}
        if status == "failed":
            outcome["error"] = f"{ename}: {evalue}" if ename and ename != "LuaError" else evalue
        before = child.recorded
        if (
            before is not None
            and all(before.get(k) == v for k, v in outcome.items())
            and ("error" in outcome or "error" not in before)
        ):
            entry.clear()  # the same outcome as recorded: the record stays as it was
            entry.update(before)
        else:
            entry.update(outcome, duration=round(time.perf_counter() - child.started, 4), at=now_iso())
            if "error" not in outcome:
                entry.pop("error", None)
            child.parent.log.entry_changed(entry)
        rt.observers.child_ended(child.parent, run, entry)
        rt.host.records_changed()

    def failure(self, child: Child) -> Failure:
        """The error the caller sees for a child that did not complete: the
        child's own (placed where the caller made the call) when it passes
        through, else a ProcedureError whose cause is the child's."""
        if child.status == "cancelled":
            return Failure("ProcedureError", f"procedure '{child.name}' was cancelled", procedure=child.key)
        error = child.error or CellError(child.ename or "LuaError", child.evalue).failure
        if error.kind in PASS_THROUGH:
            return replace(error, cell=None, line=None, trace=[])
        detail = child.evalue if child.ename in ("", "LuaError") else f"{child.ename}: {child.evalue}"
        return Failure("ProcedureError", f"procedure '{child.name}' failed: {detail}", procedure=child.key, cause=error)

    def _child(self, ident: Any) -> Child:
        child = self.children.get(int(ident)) if ident is not None else None
        if child is None:
            raise _bridge_error("ProcedureError: this handle belongs to an earlier cell run")
        return child

    # ------------------------------------------------------------- effects
    async def run_effect(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        """``Procedure.run``: the child's output, from the record or by running it."""
        child = self._begin(run, request, "run")
        if not child.done:
            await self._execute(child)
        if child.status != "completed":
            raise KernelError(self.failure(child))
        return (to_lua(runtime.lua, child.value),)

    async def spawn_effect(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        """``Procedure.spawn``: start the child's task and return its handle id at once."""
        child = self._begin(run, request, "spawn")
        if not child.done:
            child.task = asyncio.ensure_future(self._spawned(child))
        return child.id, child.key

    async def wait_effect(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        """``wait`` / ``wait_any`` / ``wait_all``: await children's tasks."""
        ids = request["ids"]
        children = [self._child(ids[i]) for i in range(1, len(ids) + 1)]
        mode = str(request["mode"])
        timeout = request["timeout"]
        timeout = float(timeout) if timeout is not None else None
        recorded: dict[str, Any] | None = None
        name = ""
        if mode == "any" or timeout is not None:
            name = f"wait_{mode} " + ", ".join(c.key.rsplit("/", 1)[1] for c in children)
            entry = run.log.replay("wait", name)
            if entry is not None and isinstance(entry.get("value"), dict):
                recorded = entry["value"]
        if recorded is not None:
            if recorded.get("timed_out"):
                return self._timed_out(mode)
            if mode == "any":
                index = int(recorded.get("index") or 1)
                chosen = children[min(max(index, 1), len(children)) - 1]
                await self._join([chosen], None)
                return self._any_result(runtime, children.index(chosen) + 1, chosen)
            await self._join(children, None)
        else:
            if mode == "any":
                await self._join(children, timeout, first=True)
            else:
                await self._join(children, timeout)
            finished = [c for c in children if c.done]
            timed_out = not finished if mode == "any" else len(finished) < len(children)
            if name:
                outcome: dict[str, Any] = {"timed_out": timed_out}
                if mode == "any" and not timed_out:
                    first = min(finished, key=lambda c: c.finished)
                    outcome["index"] = children.index(first) + 1
                run.log.append("wait", name, outcome)
                runtime.host.records_changed()
            if timed_out:
                return self._timed_out(mode)
            if mode == "any":
                first = min(finished, key=lambda c: c.finished)
                return self._any_result(runtime, children.index(first) + 1, first)
        for child in children:
            child.waited = True
            if child.status != "completed":
                raise KernelError(self.failure(child))
        if mode == "one":
            return (to_lua(runtime.lua, children[0].value),)
        return (to_lua(runtime.lua, [c.value for c in children]),)

    def _any_result(self, runtime: Runtime, index: int, child: Child) -> tuple[Any, ...]:
        child.waited = True
        if child.status == "completed":
            return index, to_lua(runtime.lua, child.value)
        return index, None, self.failure(child).text

    @staticmethod
    def _timed_out(mode: str) -> tuple[Any, ...]:
        return (0, None) if mode == "any" else (None, "timeout")

    async def _join(self, children: list[Child], timeout: float | None, first: bool = False) -> None:
        if first and any(c.done for c in children):
            return
        tasks = [c.task for c in children if c.task is not None and not c.done]
        if not tasks:
            return
        await asyncio.wait(
            tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED if first else asyncio.ALL_COMPLETED
        )

    async def cancel_effect(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        """``Procedure.cancel``: stop a running child (its waiting card closes); recorded."""
        child = self._child(request["id"])
        if child.done:
            return (False,)
        child.explicit_cancel = True
        if child.task is not None:
            child.task.cancel()
            await asyncio.wait([child.task])
        if not child.done:
            self._finish(child, "cancelled", None, "", "")
        return (True,)

    async def inject_effect(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        """``Procedure.inject``: queue a message for the child's next agent turn."""
        child = self._child(request["id"])
        if child.done:
            return (False,)
        message = str(request["message"])
        child.inbox.append(message)
        if child.run is not None:
            runtime.observers.message_injected(child.run, message)
        return (True,)

    # ------------------------------------------------------------ observer
    def human_wait_started(self, run: RunState, request: Any) -> None:
        """A child waiting for a human says so (``Procedure.status``)."""
        child = self.by_run.get(run.id)
        if child is None:
            return
        child.waiting += 1
        if not child.done:
            child.set_status("waiting_for_human")

    def human_wait_ended(self, run: RunState, request: Any) -> None:
        child = self.by_run.get(run.id)
        if child is None:
            return
        child.waiting -= 1
        if child.waiting == 0 and not child.done:
            child.set_status("running")

    async def cell_settling(self, cell: CellRun) -> None:
        """The cell's procedures returned: wait for children still running
        (a spawned child nobody waited for still finishes, and its cards can
        still be answered); say which of them failed."""
        while True:
            live = [c for c in self.children.values() if c.cell is cell and c.task is not None and not c.done]
            if not live:
                break
            await asyncio.wait([c.task for c in live if c.task is not None])
        for child in self.children.values():
            if child.cell is cell and child.status == "failed" and not child.waited and child.mode == "spawn":
                self.runtime.host.write(
                    "stderr", f"Tactus: spawned procedure {child.key!r} failed and was not waited for: {child.evalue}\n"
                )

    def cell_closed(self, cell: CellRun) -> None:
        """The cell is over (or was interrupted): cancel what still runs."""
        for child in list(self.children.values()):
            if child.cell is cell and child.task is not None and not child.task.done():
                child.task.cancel()
        for ident in [i for i, c in self.children.items() if c.cell is cell]:
            child = self.children.pop(ident)
            if child.run is not None:
                self.by_run.pop(child.run.id, None)
        for run_id in [r for r, c in self.count_cells.items() if c is cell]:
            self.counts.pop(run_id, None)
            del self.count_cells[run_id]

    async def cell_cancelling(self, cell: CellRun) -> None:
        """Cancel the cell's children and wait until they have stopped (an isolated run ended)."""
        tasks = [c.task for c in self.children.values() if c.cell is cell and c.task is not None and not c.done]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def apply_injection(runtime: Runtime, run: RunState, request: Any) -> None:
    """Hook for the agent turn effect (primitives/agents.py): messages given
    to this run with ``Procedure.inject`` become the turn's ``inject``
    option (before any inject the turn gives itself), once."""
    hub = runtime.state(CompositionFeature) if runtime.has_feature(CompositionFeature) else None
    child = hub.by_run.get(run.id) if hub is not None else None
    if child is None or not child.inbox:
        return
    text = "\n\n".join(child.inbox)
    child.inbox = []
    target = request  # no options, or only an inject text: lua/agents.lua sends that as a field
    given = request["opts"]
    if given is not None:  # a copy: the table is the procedure's own
        target = request["opts"] = runtime.lua.table()
        for k, v in given.items():
            target[k] = v
    own = target["inject"]
    target["inject"] = text if own is None else f"{text}\n\n{own}"


class CompositionFeature(Feature[CompositionHub]):
    """``Procedure.run / spawn / wait / cancel / inject``, dependencies and stages."""

    name = "composition"
    preludes = (Prelude("tactus_kernel.features.composition", "composition.lua"),)

    def new_state(self, runtime: Runtime) -> CompositionHub:
        return CompositionHub(runtime)

    def install(self, runtime: Runtime, state: CompositionHub) -> None:
        runtime.add_observer(state)
        runtime.register_effect("procedure.run", state.run_effect)
        runtime.register_effect("procedure.spawn", state.spawn_effect)
        runtime.register_effect("procedure.wait", state.wait_effect)
        runtime.register_effect("procedure.cancel", state.cancel_effect)
        runtime.register_effect("procedure.inject", state.inject_effect)
