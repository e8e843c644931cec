"""The live step timeline and the audit trail of each procedure run.

Every recorded call of a procedure (a step, a human request, an agent turn,
a ``Sleep``, a child procedure, a wait) already passes through its
:class:`~tactus_kernel.engine.records.RunLog`: ``replay()`` when it starts (a
miss means "it runs now", a hit means "replayed from the record") and
``append()`` when its value is recorded. A :class:`Trail` hooked to the
log turns those calls into events, so no primitive needs code of its own
and ``Step.run``'s hot path gains only a few list operations:

* a step is kept as a tiny pending entry while it runs and becomes an
  event dict only when it ends (or when the view is drawn meanwhile);
* consecutive replayed steps, and consecutive steps that took less than
  ``FAST`` seconds, merge into one event with a ``count``: replaying or
  recording 10,000 steps costs one event, not 10,000;
* the view (:mod:`.timeline_view`) is redrawn at most every ``INTERVAL``
  seconds (from the event hook itself, so a CPU-bound loop that never
  yields still updates it, plus a timer for the last change), and only
  appears once a run has gone on for ``SHOW_AFTER`` seconds: quick runs
  and replays show nothing.

The events of a run that changes its record become ``record["events"]``
(with its first new checkpoint, or when it ends), so the audit trail of
the last recording run is saved with the notebook (see docs/metadata.md).
A replay that matches its record leaves the record as it was: its own
events stay in the kernel (:func:`latest_events`), for the view and
``%tactus log``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import weakref
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.records import now_iso
from tactus_kernel.features.timeline_view import CellTimeline, duration_text, lua_fields

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import CellRun, RunState, Runtime

FAST = 0.005  # seconds: quicker steps merge into one event
PREVIEW = 60  # characters of a value preview
# A child call's record status -> its event state.
CALL_STATES = {"completed": "completed", "failed": "failed", "cancelled": "cancelled", "interrupted": "cancelled"}


def _secs(seconds: float) -> float:
    """Seconds to a tenth of a millisecond. Not ``round(x, 4)``: that goes
    through decimal formatting, and runs on every recorded call."""
    return int(seconds * 10000 + 0.5) / 10000


def preview(value: Any) -> str:
    """A short one-line rendering of a recorded value."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            text = str(value)
    # only the start is shown: a step returning megabytes of text must not
    # pay for collapsing the whitespace of all of it at every record
    cut = len(text) > 8 * PREVIEW
    text = " ".join(text[: 8 * PREVIEW].split())
    return text if len(text) <= PREVIEW and not cut else text[: PREVIEW - 1] + "…"


def error_text(error: Any) -> str:
    """The message of a run's error: a string, or the Lua table K.capture_error makes."""
    if error is None:
        return ""
    if isinstance(error, str):
        return error
    message = lua_fields(error).get("message")
    return str(message if message is not None else error)


class Trail:
    """The events of one run of one procedure (hooked to its RunLog)."""

    __slots__ = (
        "calls",
        "depth",
        "events",
        "expected",
        "group",
        "group_count",
        "group_end",
        "group_last",
        "key",
        "label",
        "log",
        "pending",
        "run_id",
        "t0",
        "view",
    )

    def __init__(
        self, run: RunState, events: list[dict[str, Any]], view: CellTimeline | None, depth: int = 0, expected: int = 0
    ) -> None:
        self.key = run.key
        # what the view calls it: a procedure's name, or for a procedure with
        # no name and a cell's own code, the cell ("cell 3: local ok = ...")
        self.label = run.title or run.key
        self.run_id = run.id
        # a proxy: the RunLog holds this trail, and a strong reference back would make a
        # cycle that keeps the log's (possibly large) entries alive until a full gc
        self.log = weakref.proxy(run.log)
        self.events = events
        self.view = view
        self.depth = depth
        self.expected = expected  # checkpoints of the last completed run: the progress bar's total
        self.t0 = time.perf_counter()
        # calls still running: [kind, name, start, event or None]
        self.pending: list[list[Any]] = []
        self.calls: dict[int, dict[str, Any]] = {}  # id(checkpoint entry) -> event of a child call
        # The open group of merged steps (all replayed, or all quick and
        # recorded): its count, last name and end are kept here and written
        # into the event when the group closes (flush), not on every step.
        self.group: dict[str, Any] | None = None
        self.group_count = 0
        self.group_last = ""
        self.group_end = 0.0
        events.clear()
        events.append({"kind": "run", "name": run.key, "state": "running", "at": now_iso(), "t": 0.0})

    # ------------------------------------------------------------ helpers
    def flush(self, close: bool = True) -> None:
        """Write the open group's count, last name and span into its event
        (and close it, unless only a redraw needs them)."""
        group = self.group
        if group is None:
            return
        if close:
            self.group = None
        if self.group_count > 1:
            group["count"] = self.group_count
            group["last"] = self.group_last
            group.pop("preview", None)
        group["duration"] = _secs(self.group_end - self.t0 - group["t"])

    def _event(self, kind: str, name: str, state: str, start: float) -> dict[str, Any]:
        if self.group is not None:
            self.flush()
        ev: dict[str, Any] = {"kind": kind, "name": name, "state": state, "t": _secs(start - self.t0)}
        self.events.append(ev)
        if self.view is not None:
            self.view.add(self, ev)
        return ev

    def _open_group(self, ev: dict[str, Any], name: str, end: float) -> None:
        self.group, self.group_count, self.group_last, self.group_end = ev, 1, name, end

    def _touch(self) -> None:
        if self.view is not None:
            self.view.touch()

    # ------------------------------------------------- RunLog hooks (hot)
    def started(self, kind: str, name: str) -> None:
        """A call found no record: it runs now."""
        if kind == "step":
            # no redraw here: it would draw (and so split off) every step as it starts;
            # a step still running when the timer redraws is drawn then
            self.pending.append([kind, name, time.perf_counter(), None])
            return
        now = time.perf_counter()
        self.pending.append(
            [kind, name, now, self._event(kind, name, "waiting" if kind == "human" else "running", now)]
        )
        if self.view is not None:
            self.view.touch()

    def replayed(self, entry: dict[str, Any]) -> None:
        """A call returned its recorded value without running."""
        kind = entry["kind"]
        if kind == "step":
            group = self.group
            if group is not None and group["state"] == "replayed":
                self.group_count += 1
                self.group_last = entry["name"]
                self.group_end = time.perf_counter()
                if self.view is not None:
                    self.view.touch()
                return
            now = time.perf_counter()
            ev = self._event(kind, entry["name"], "replayed", now)
            self._open_group(ev, entry["name"], now)
        elif kind == "procedure" and entry.get("status", "completed") not in ("completed", "cancelled"):
            # a child that did not finish last time: it runs again, replaying its own record
            ev = self._event(kind, entry["name"], "running", time.perf_counter())
            self.calls[id(entry)] = ev
        else:
            ev = self._event(kind, entry["name"], "replayed", time.perf_counter())
            ev["duration"] = 0.0
            ev["preview"] = preview(entry.get("status") if entry.get("status") == "cancelled" else entry.get("value"))
        self._touch()

    def recorded(self, entry: dict[str, Any]) -> None:
        """A call's value was recorded: it completed."""
        now = time.perf_counter()
        kind = entry["kind"]
        name = entry["name"]
        pending = self.pending
        item = None
        if pending:
            top = pending[-1]
            if top[1] == name and top[0] == kind:
                item = pending.pop()
            else:
                item = self._unwind(kind, name, now)
        if item is not None and item[3] is None:  # a step nobody has drawn yet
            start = item[2]
            if now - start < FAST:
                group = self.group
                if group is not None and group["state"] == "completed":
                    self.group_count += 1
                    self.group_last = name
                    self.group_end = now
                    if self.view is not None:
                        self.view.touch()
                    return
                ev = self._event(kind, name, "completed", start)
                self._open_group(ev, name, now)
                if self.view is not None:
                    self.view.touch()
                return
            ev = self._event(kind, name, "completed", start)
        elif item is not None:
            start, ev = item[2], item[3]
        else:
            start, ev = now, self._event(kind, name, "completed", now)
        if kind == "procedure" and entry.get("status") == "running":
            # a child call reserves its checkpoint when it starts; finish_call ends it
            self.calls[id(entry)] = ev
            ev["state"] = "running"
            self._touch()
            return
        ev["state"] = "completed"
        ev["duration"] = _secs(now - start)
        ev["preview"] = preview(entry.get("value"))
        self._touch()

    def _unwind(self, kind: str, name: str, now: float) -> list[Any] | None:
        """The pending call (kind, name); calls started inside it that never ended failed."""
        pending = self.pending
        for i in range(len(pending) - 1, -1, -1):
            p = pending[i]
            if p[0] == kind and p[1] == name:
                for other in pending[i + 1 :]:
                    self._close(other, "failed", now)
                del pending[i:]
                return p
        return None

    # ----------------------------------------------------------- closing
    def _close(self, item: list[Any], state: str, now: float, error: str = "") -> None:
        ev = item[3]
        if ev is None:
            ev = self._event(item[0], item[1], state, item[2])
        ev["state"] = state
        ev["duration"] = _secs(now - item[2])
        if error:
            ev["error"] = error[:200]

    def fail_open(self, error: str, since: float = 0.0) -> None:
        """Calls started after `since` that will never complete (their effect failed)."""
        now = time.perf_counter()
        keep = []
        for item in self.pending:
            if item[2] >= since:
                self._close(item, "failed", now, error)
            else:
                keep.append(item)
        self.pending = keep
        self._touch()

    def finish_call(self, entry: dict[str, Any]) -> None:
        """A child call's checkpoint got its outcome (see primitives/composition.py)."""
        ev = self.calls.pop(id(entry), None)
        if ev is None:
            return
        state = CALL_STATES.get(str(entry.get("status")), "completed")
        ev["state"] = state
        ev["duration"] = _secs(time.perf_counter() - self.t0 - ev["t"])
        if state == "completed":
            ev["preview"] = preview(entry.get("value"))
        elif entry.get("error"):
            ev["error"] = str(entry["error"])[:200]
        self._touch()

    def set_waiting(self, entry: dict[str, Any], waiting: bool) -> None:
        """A child call's row says when the child waits for a human."""
        ev = self.calls.get(id(entry))
        if ev is not None and ev["state"] in ("running", "waiting"):
            ev["state"] = "waiting" if waiting else "running"
            self._touch()

    def note(self, kind: str, name: str, text: str) -> None:
        """An instant event that records nothing (e.g. Procedure.inject)."""
        ev = self._event(kind, name, "completed", time.perf_counter())
        ev["duration"] = 0.0
        ev["preview"] = preview(text)
        self._touch()

    def end(self, state: str, error: str = "") -> None:
        """The run is over: close what is still open and sort the events by start."""
        now = time.perf_counter()
        self.flush()
        for item in self.pending:
            self._close(item, "failed" if state != "cancelled" else "cancelled", now, error)
        self.pending = []
        # child calls still running (spawned, not waited for) keep their rows
        # open: finish_call ends them when the child does
        head = self.events[0]
        head["state"] = state
        head["duration"] = _secs(now - self.t0)
        if error:
            head["error"] = error[:500]
        self.events.sort(key=_start)
        if self.view is not None:
            self.view.touch(force=True)

    @property
    def running(self) -> bool:
        return self.events[0]["state"] in ("running", "waiting")

    def materialize(self) -> None:
        """Give running steps an event, so the view shows them."""
        self.flush(close=False)
        for item in self.pending:
            if item[3] is None:
                item[3] = self._event(item[0], item[1], "running", item[2])


def _start(ev: dict[str, Any]) -> float:
    return -1.0 if ev["kind"] == "run" else float(ev["t"])


class Timeline:
    """Creates the trails and views as runs start and end (a run observer)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.views: dict[int, CellTimeline] = {}
        self.last_key: str | None = None
        # the events of each procedure's last run in this kernel, by record path
        self.latest: dict[str, list[dict[str, Any]]] = {}
        # Lua tables are fetched here, never inside a coroutine (see lua_fields)
        self.stages = getattr(runtime.K, "STAGE_OF", None)
        self.forget_stages = getattr(runtime.K, "forget_stages", None)

    def view_for(self, cell: CellRun) -> CellTimeline:
        view = self.views.get(id(cell))
        if view is None:
            host = self.runtime.host
            live = bool(getattr(host, "timeline_widgets", type(host).__name__ == "NotebookHost"))
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

    async def cell_settling(self, cell: CellRun) -> None:
        return None

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


# ------------------------------------------------------------ %tactus log
def latest_events(runtime: Runtime, key: str) -> list[dict[str, Any]]:
    """The events of the last run of the procedure at `key`: this kernel's
    (a replay's too), else the ones saved in its record."""
    timeline = next((o for o in runtime.run_observers if isinstance(o, Timeline)), None)
    if timeline is not None and key in timeline.latest:
        return timeline.latest[key]
    rec = runtime.records.lookup(key)
    return list((rec or {}).get("events") or [])


def collect_events(
    rec: dict[str, Any], key: str, latest: dict[str, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """A record's events and its children's, each with its procedure key and
    absolute start/end times (from the run's start and the offsets); a
    run's `latest` events (this kernel's last run, a replay's too) first."""
    out: list[dict[str, Any]] = []
    events = (latest or {}).get(key) or rec.get("events") or []
    base = None
    if events and events[0].get("kind") == "run":
        try:
            base = dt.datetime.fromisoformat(str(events[0]["at"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            base = None
    for ev in events:
        row = {"procedure": key, **ev}
        if base is not None:
            start = base + dt.timedelta(seconds=float(ev.get("t", 0.0)))
            row["started_at"] = _iso(start)
            if ev.get("duration") is not None:
                row["ended_at"] = _iso(start + dt.timedelta(seconds=float(ev["duration"])))
        out.append(row)
    for name, child in (rec.get("children") or {}).items():
        out.extend(collect_events(child, f"{key}/{name}", latest))
    return out


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_command(runtime: Runtime, args: list[str]) -> None:
    """``%tactus log [procedure] [--json]``: the audit trail of a procedure's last run."""
    from tactus_kernel.engine.display import bundle, text_table
    from tactus_kernel.engine.errors import CellError

    as_json = "--json" in args
    names = [a for a in args if a != "--json"]
    records = runtime.records.procedures
    timeline = next((o for o in runtime.run_observers if isinstance(o, Timeline)), None)
    latest = timeline.latest if timeline is not None else {}
    with_events = [k for k, r in records.items() if r.get("events") or latest.get(k)]
    if len(names) > 1:
        raise CellError.simple("UsageError", "%tactus log [procedure] [--json]")
    if names:
        key = names[0]
    else:
        key = (
            timeline.last_key if timeline and timeline.last_key in records else (with_events[-1] if with_events else "")
        )
    rec = runtime.records.lookup(key) if key else None
    if rec is None or not (rec.get("events") or latest.get(key)):
        known = ", ".join(with_events) or "(none yet)"
        raise CellError.simple(
            "UsageError", f"no events recorded for {key or 'any procedure'!r}; procedures with events: {known}"
        )
    events = collect_events(rec, key, latest)
    if as_json:
        runtime.host.write("stdout", json.dumps(events, indent=2, ensure_ascii=False) + "\n")
        return
    rows = [
        {
            "procedure": e["procedure"],
            "kind": e["kind"],
            "name": f"{e['name']} … {e['last']} ({e['count']})" if "count" in e else e["name"],
            "state": e["state"],
            "started": str(e.get("started_at", ""))[11:23],
            "duration": duration_text(e.get("duration")),
            "detail": e.get("error") or e.get("preview", ""),
        }
        for e in events
    ]
    shown = bundle([rows])
    runtime.host.display({"text/plain": text_table(rows), "text/html": shown.get("text/html", "")})
