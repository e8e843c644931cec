"""The timeline as an observer of runs (engine/feature.py), and its feature."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.feature import Feature, Observer
from tactus_kernel.features.timeline.trail import Trail, error_text
from tactus_kernel.features.timeline.view import CellTimeline

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun, RunState
    from tactus_kernel.engine.runtime import Runtime

# Effects whose calls still open in the trail fail with them (the others
# close their own calls, or leave them to the run's end).
FAIL_OPEN = frozenset({"human", "sleep"})


class Timeline(Observer):
    """Creates the trails and views as runs start and end, and follows child
    calls and human waits (an observer: engine/feature.py)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.views: dict[int, CellTimeline] = {}
        self.last_key: str | None = None
        # the events of each procedure's last run in this kernel, by record path
        self.latest: dict[str, list[dict[str, Any]]] = {}
        # Lua tables are fetched here, never inside a coroutine (see lua_fields);
        # the stages are composition.lua's
        self.stages = getattr(runtime.K, "STAGE_OF", None)
        self.forget_stages = getattr(runtime.K, "forget_stages", None)
        # a child run's id -> (its caller's run, the caller's checkpoint of the call)
        self.callers: dict[int, tuple[RunState, dict[str, Any]]] = {}
        self.waiting: dict[int, int] = {}  # a child run's id -> human requests it waits for

    def view_for(self, cell: CellRun) -> CellTimeline:
        view = self.views.get(id(cell))
        if view is None:
            live = self.runtime.host.timeline_widgets
            view = self.views[id(cell)] = CellTimeline(self.runtime, cell, live and not self.runtime.batch, self.stages)
        return view

    def trail_for(self, run: RunState, depth: int = 0) -> Trail:
        """The run's trail, made now if it has none (a cell's own code that calls a procedure)."""
        trail = run.log.trail
        if trail is not None and trail.run_id == run.id:
            return trail
        rec = self.runtime.records.lookup(run.key)
        expected = len(run.log.entries) if rec is not None and rec.get("status") == "completed" else 0
        events: list[dict[str, Any]] = []
        run.log.first["events"] = events  # into the record with the run's first new checkpoint
        self.latest[run.key] = events
        view = self.view_for(run.cell)
        trail = Trail(run, events, view if view.live else None, depth, expected)
        run.log.trail = trail
        view.attach(trail)
        self.last_key = run.key.split("/", 1)[0]
        return trail

    def depth(self, run: RunState) -> int:
        """How deep a run is in the call tree (its own cell's procedures are 0)."""
        depth = 0
        link = self.callers.get(run.id)
        while link is not None:
            depth += 1
            link = self.callers.get(link[0].id)
        return depth

    # ------------------------------------------------------ run observer
    def run_started(self, run: RunState) -> None:
        if run.spec is not None:
            self.trail_for(run)

    def run_ended(self, run: RunState, ok: bool, error: Any) -> None:
        trail = run.log.trail
        if trail is None or trail.run_id != run.id or not trail.running:
            return
        trail.end("completed" if ok else "failed", "" if ok else error_text(error))
        self._keep(run.log, trail)

    def _keep(self, log: Any, trail: Trail) -> None:
        """A run that changed its record (new checkpoints, dropped ones, a
        new status or output) saves its events there; a matching replay does not."""
        records = self.runtime.records
        if log.changed_record or records.pending(log.key):
            records.set(log.key, events=trail.events)

    def effect_failed(self, run: RunState, kind: str, error: BaseException, since: float) -> None:
        """Calls the effect started can no longer complete: failed at once."""
        if kind not in FAIL_OPEN:
            return
        trail = run.log.trail
        if isinstance(trail, Trail) and trail.run_id == run.id:
            trail.fail_open(str(error) if not isinstance(error, asyncio.CancelledError) else "cancelled", since)

    def child_called(self, parent: RunState, name: str, mode: str) -> None:
        self.trail_for(parent, self.depth(parent))  # the call is a row of the caller's trail

    def child_started(self, parent: RunState, child: RunState, entry: dict[str, Any]) -> None:
        self.callers[child.id] = (parent, entry)
        trail = child.log.trail
        if trail is not None:
            trail.depth = self.depth(parent) + 1

    def child_ended(self, parent: RunState, child: RunState | None, entry: dict[str, Any]) -> None:
        if child is not None:
            # a run that never reached end_run (cancelled, or its cell was interrupted)
            trail = child.log.trail
            if trail is not None and trail.run_id == child.id and trail.running:
                trail.end("cancelled", "cancelled")
        trail = parent.log.trail
        if isinstance(trail, Trail):
            trail.finish_call(entry)

    def message_injected(self, run: RunState, message: str) -> None:
        if isinstance(run.log.trail, Trail):
            run.log.trail.note("inject", "message", message)

    def human_wait_started(self, run: RunState, request: Any) -> None:
        if run.id in self.callers:
            self.waiting[run.id] = self.waiting.get(run.id, 0) + 1
            self._mark_waiting(run, True)

    def human_wait_ended(self, run: RunState, request: Any) -> None:
        count = self.waiting.get(run.id)
        if count is None:  # not a child, or its cell closed meanwhile
            return
        if count > 1:
            self.waiting[run.id] = count - 1
            return
        del self.waiting[run.id]
        self._mark_waiting(run, False)

    def _mark_waiting(self, run: RunState, waiting: bool) -> None:
        """The rows of the calls that led to `run`, up to its cell's procedure,
        say that it waits for a human."""
        link = self.callers.get(run.id)
        while link is not None:
            caller, entry = link
            trail = caller.log.trail
            if isinstance(trail, Trail):
                trail.set_waiting(entry, waiting)
            link = self.callers.get(caller.id)

    def cell_closed(self, cell: CellRun) -> None:
        view = self.views.pop(id(cell), None)
        trails = [log.trail for log in cell.logs.values() if log.trail is not None]
        for trail in [*(view.trails if view is not None else []), *trails]:
            if trail.running:  # interrupted: nothing else will end it
                trail.end("cancelled", "the cell stopped")
                with contextlib.suppress(ReferenceError):  # the trail's log went with its cell
                    self._keep(trail.log, trail)
        if view is not None:
            view.close()
        if self.forget_stages is not None:
            self.forget_stages()
        for run_id in [i for i, (caller, _) in self.callers.items() if caller.cell is cell]:
            del self.callers[run_id]
            self.waiting.pop(run_id, None)


class TimelineFeature(Feature[Timeline]):
    """The live step timeline and each run's audit trail (``%tactus log``)."""

    name = "timeline"

    def new_state(self, runtime: Runtime) -> Timeline:
        return Timeline(runtime)

    def install(self, runtime: Runtime, state: Timeline) -> None:
        runtime.add_observer(state)
