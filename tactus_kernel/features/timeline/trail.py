"""A run's audit trail: the events of its calls, as its RunLog sees them
(see the package's docstring for how they merge and when they draw)."""

from __future__ import annotations

import json
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from tactus_kernel.engine.records import now_iso

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import RunState

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


def lua_fields(table: Any) -> dict[Any, Any]:
    """A Lua table's fields as a dict.

    Read with ``items()``, never ``table[key]``: this code runs inside Lua
    coroutines (RunLog hooks are called from bridge functions), where lupa
    2.8's ``__getitem__`` on a table made elsewhere returns the coroutine
    object along with the value.
    """
    if table is None or not hasattr(table, "items"):
        return {}
    try:
        return dict(table.items())
    except (TypeError, ValueError):
        return {}


def error_text(error: Any) -> str:
    """The message of a run's error: a string, or the Lua table K.capture_error makes."""
    if error is None:
        return ""
    if isinstance(error, str):
        return error
    message = lua_fields(error).get("message")
    return str(message if message is not None else error)


class TrailView(Protocol):
    """What a trail tells the view that draws it (view.py's CellTimeline is
    one; it reads the trails, so the trail names it only by this Protocol)."""

    def add(self, trail: Trail, ev: dict[str, Any]) -> None:
        """A new event row of `trail`."""

    def touch(self, force: bool = False) -> None:
        """Something changed: redraw when the view's interval allows (now if `force`)."""


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
        self, run: RunState, events: list[dict[str, Any]], view: TrailView | None, depth: int = 0, expected: int = 0
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
