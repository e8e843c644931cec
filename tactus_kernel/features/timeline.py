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
* the view is redrawn at most every ``INTERVAL`` seconds (from the event
  hook itself, so a CPU-bound loop that never yields still updates it,
  plus a timer for the last change), and only appears once a run has gone
  on for ``SHOW_AFTER`` seconds: quick runs and replays show nothing.

The events list *is* ``record["events"]`` of the procedure's record, so
the audit trail is saved with the notebook (see docs/metadata.md) and
``%tactus log`` exports it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import time
import weakref
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.feature import Feature, Observer
from tactus_kernel.engine.records import now_iso

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun, RunState
    from tactus_kernel.engine.runtime import Runtime

FAST = 0.005  # seconds: quicker steps merge into one event
INTERVAL = 0.1  # seconds between two redraws of the view (<= 10 updates/s)
SHOW_AFTER = 0.3  # seconds a cell's procedures run before the view appears
MAX_ROWS = 40  # rows drawn (the newest); the record keeps every event
PREVIEW = 60  # characters of a value preview

TICK = 1.0  # seconds between two redraws while nothing changes but the clock (a card waiting)

ICONS = {"running": "›", "waiting": "?", "completed": "✓", "failed": "✗", "replayed": "↺", "cancelled": "⊘"}
LABELS = {
    "running": "running",
    "waiting": "waiting for a human",
    "completed": "done",
    "failed": "failed",
    "replayed": "replayed from record",
    "cancelled": "cancelled",
}
# JupyterLab's theme variables (light, dark and high-contrast themes read
# well), with fallbacks for pages without them (GitHub, nbviewer).
MUTED = "var(--jp-ui-font-color2, #57606a)"
COLORS = {
    "running": "var(--jp-brand-color1, #1976d2)",
    "waiting": "var(--jp-warn-color1, #b7791f)",
    "completed": "var(--jp-success-color1, #2f855a)",
    "failed": "var(--jp-error-color1, #c53030)",
    "replayed": MUTED,
    "cancelled": MUTED,
}
BOX = (
    "font-family:var(--jp-ui-font-family, system-ui, -apple-system, sans-serif);"
    "font-size:var(--jp-ui-font-size1, 13px);color:var(--jp-ui-font-color1, #1f2328);"
    "border:1px solid var(--jp-border-color2, #d0d7de);border-radius:4px;"
    "background:var(--jp-layout-color1, #ffffff);padding:4px 8px;margin:4px 0"
)
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


class CellTimeline:
    """The live view of one cell's procedure runs, drawn with ipywidgets
    while the cell runs and left as static HTML when it ends.

    One summary line (state, a progress bar or a count and rate, the time
    it has taken) and the rows behind a toggle. The rows are a separate
    widget because a redraw of an HTML output replaces its DOM: a
    ``<details>`` redrawn every second would close under the reader's
    cursor, while the toggle's state lives in the kernel. When the cell
    ends the whole view becomes one static ``<details>`` (an
    ``update_display_data``) and its widgets are closed, so a saved
    notebook, GitHub and nbviewer show it and no dead widget is left.
    """

    def __init__(self, runtime: Runtime, cell: CellRun, live: bool, stages: Any = None) -> None:
        self.runtime = runtime
        self.stages = stages  # K.STAGE_OF, fetched outside any coroutine (see lua_fields)
        self.cell = cell
        self.host = runtime.host
        self.live = live
        self.trails: list[Trail] = []
        self.rows: list[tuple[Trail, dict[str, Any]]] = []
        self.widget: Any = None  # the summary line
        self.toggle: Any = None  # shows and hides the rows
        self.rows_widget: Any = None
        self.box: Any = None
        self.display_id: str | None = None
        self.started = time.monotonic()
        self.last = 0.0
        self.updates = 0  # widget redraws (tests check the throttle)
        self._timer: asyncio.TimerHandle | None = None
        self._html = ""
        self._rows_html = ""

    def add(self, trail: Trail, ev: dict[str, Any]) -> None:
        self.rows.append((trail, ev))

    def attach(self, trail: Trail) -> None:
        self.trails.append(trail)
        if self.live and self.widget is None and self._timer is None:
            self._schedule(SHOW_AFTER)

    def _schedule(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(max(0.0, delay), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.touch(force=True)

    def touch(self, force: bool = False) -> None:
        """Something changed: redraw now if the last redraw is old enough,
        else once the interval is over."""
        if not self.live:
            return
        now = time.monotonic()
        if self.widget is None:
            if now - self.started < SHOW_AFTER or not any(t.running for t in self.trails):
                return
            self._show()
            self._keep_ticking()
            return
        if force or now - self.last >= INTERVAL:
            self._render(now)
            self._keep_ticking()
        elif self._timer is None:
            self._schedule(INTERVAL - (now - self.last))

    def _keep_ticking(self) -> None:
        """While a run goes on, redraw once a second even when nothing else
        changes: the clock of a waiting card, of a long step. A timer, not a
        loop; close() stops it."""
        if self._timer is None and self.live and any(t.running for t in self.trails):
            self._schedule(TICK)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.widget is not None and self.live:
            self._render(time.monotonic())
            self._finish()
        self.live = False

    # ---------------------------------------------------------- drawing
    def _show(self) -> None:
        import uuid

        import ipywidgets

        self._html = self.summary_html()
        self.widget = ipywidgets.HTML(self._html, layout=ipywidgets.Layout(flex="1 1 auto"))
        self.toggle = ipywidgets.ToggleButton(
            value=False,
            description="Show steps",
            icon="list",
            tooltip="Show or hide the timeline's rows",
            layout=ipywidgets.Layout(width="auto", flex="0 0 auto"),
        )
        self.rows_widget = ipywidgets.HTML("", layout=ipywidgets.Layout(display="none"))
        self.toggle.observe(self._toggled, "value")
        self.box = ipywidgets.VBox(
            [
                ipywidgets.HBox([self.widget, self.toggle], layout=ipywidgets.Layout(align_items="center")),
                self.rows_widget,
            ],
            layout=ipywidgets.Layout(
                border="1px solid var(--jp-border-color2, #d0d7de)", padding="0 4px 0 8px", margin="4px 0"
            ),
        )
        bundle = self.box._repr_mimebundle_()
        bundle["text/plain"] = self.plain_text()
        if self.host.updates_displays:  # it can be replaced by a static view at the end
            self.display_id = uuid.uuid4().hex
            self.host.display(bundle, {"tactus": {"timeline": True}}, display_id=self.display_id)
        else:
            self.host.display(bundle, {"tactus": {"timeline": True}})
        self.last = time.monotonic()
        self.updates += 1

    def _toggled(self, change: dict[str, Any]) -> None:
        shown = bool(change["new"])
        self.toggle.description = "Hide steps" if shown else "Show steps"
        self.rows_widget.layout.display = "" if shown else "none"
        self._render(time.monotonic())

    def _render(self, now: float) -> None:
        self.last = now
        text = self.summary_html()
        if text != self._html:
            self._html = text
            self.widget.value = text
            self.updates += 1
        if self.toggle is not None and self.toggle.value:  # rows are drawn only while shown
            rows = self.rows_html()
            if rows != self._rows_html:
                self._rows_html = rows
                self.rows_widget.value = rows

    def _finish(self) -> None:
        """The cell ended: the view becomes static HTML and its widgets go."""
        if not self.host.updates_displays or self.display_id is None:
            return
        self.host.update_display(
            {"text/html": self.html(), "text/plain": self.plain_text()},
            self.display_id,
            metadata={"tactus": {"timeline": True}},
        )
        for w in (self.box, *self.box.children, self.widget, self.toggle, self.rows_widget):
            for part in (getattr(w, "layout", None), getattr(w, "style", None), w):
                if part is not None:
                    part.close()

    def progress(self) -> tuple[float, str] | None:
        """(fraction, label) for the main run, from its stages or the size of its last record."""
        if not self.trails:
            return None
        main = self.trails[0]
        stage = lua_fields(lua_fields(self.stages).get(main.run_id))
        if int(stage.get("count") or 0) > 0:
            index, count = int(stage.get("index") or 0), int(stage["count"])
            return index / count, f"stage {index}/{count}: {stage.get('name')}"
        if main.expected > 0:
            done = min(main.log.position, main.expected)
            return done / main.expected, f"{done}/{main.expected} checkpoints (as last run)"
        return None

    def _materialize(self) -> None:
        for trail in self.trails:
            if trail.running:
                trail.materialize()

    def _state(self) -> tuple[str, float]:
        """The view's state and how long it has lasted: a waiting card's
        wait, else the main run's time."""
        main = self.trails[0] if self.trails else None
        if main is None:
            return "running", 0.0
        now = time.perf_counter()
        for trail, ev in self.rows:
            if ev["state"] == "waiting" and trail.running:
                return "waiting", now - trail.t0 - ev["t"]
        head = main.events[0]
        state = head["state"]
        if main.running:
            return state, now - main.t0
        if state == "completed" and main.log.recorded == 0 and main.log.replayed > 0:
            state = "replayed"
        return state, float(head.get("duration") or 0.0)

    def _steps(self) -> int:
        return sum(
            int(ev.get("count", 1))
            for _, ev in self.rows
            if ev["kind"] == "step" and ev["state"] in ("completed", "replayed")
        )

    def _waited(self) -> float:
        """Seconds spent waiting for people: not part of a rate of steps."""
        now = time.perf_counter()
        return sum(
            float(ev["duration"]) if ev.get("duration") is not None else now - trail.t0 - ev["t"]
            for trail, ev in self.rows
            if ev["kind"] == "human" and trail.depth == 0
        )

    def summary_html(self) -> str:
        """The one line: state, name, progress (or count and rate), time."""
        self._materialize()
        main = self.trails[0] if self.trails else None
        state, seconds = self._state()
        color = COLORS.get(state, MUTED)
        parts = [
            f"<span style='color:{color};font-weight:600'>{ICONS.get(state, '·')}</span>",
            f"<span style='font-weight:600'>{html.escape(main.label if main else '?')}</span>",
            f"<span style='color:{color}'>{html.escape(LABELS.get(state, state))}</span>",
        ]
        prog = self.progress()
        if prog is not None:
            fraction, label = prog
            pct = max(0.0, min(1.0, fraction)) * 100
            parts.append(
                "<span style='display:inline-block;vertical-align:middle;width:120px;height:6px;border-radius:3px;"
                "background:var(--jp-layout-color3, #d0d7de);overflow:hidden'>"
                f"<span style='display:block;width:{pct:.0f}%;height:6px;"
                f"background:{COLORS['failed' if state == 'failed' else 'completed']}'></span></span>"
                f"<span style='color:{MUTED}'>{html.escape(label)}</span>"
            )
        else:
            steps = self._steps()
            if main is None:
                elapsed = 0.0
            elif main.running:
                elapsed = time.perf_counter() - main.t0
            else:
                elapsed = float(main.events[0].get("duration") or 0.0)
            elapsed -= self._waited()  # a rate of the procedure's own work
            text = f"{steps} step{'s' if steps != 1 else ''}"
            if steps and elapsed >= 0.5:
                rate = steps / elapsed
                text += f" · {rate:.0f}/s" if rate >= 10 else f" · {rate:.1f}/s"
            parts.append(f"<span style='color:{MUTED}'>{text}</span>")
        parts.append(f"<span style='color:{MUTED};font-variant-numeric:tabular-nums'>{_duration(seconds)}</span>")
        return (
            "<div class='tactus-timeline-summary' style='display:inline-flex;flex-wrap:wrap;"
            "align-items:center;gap:8px'>" + "".join(parts) + "</div>"
        )

    def rows_html(self) -> str:
        """The rows, newest MAX_ROWS of them."""
        self._materialize()
        rows = sorted(self.rows, key=lambda r: r[0].t0 + r[1]["t"])
        hidden = max(0, len(rows) - MAX_ROWS)
        parts = []
        if hidden:
            parts.append(
                f"<div style='color:{MUTED};margin:2px 0'>… {hidden} earlier rows "
                "(<code>%tactus log</code> lists them all)</div>"
            )
        parts.append("<table style='border-collapse:collapse;margin-top:2px;line-height:1.5'>")
        parts.extend(_row(trail, ev) for trail, ev in rows[hidden:])
        parts.append("</table>")
        # a few rows tall at most, the rest scrolls; column-reverse keeps it
        # scrolled to the newest row (the one inner div keeps their order)
        return (
            "<div class='tactus-timeline-rows' style='max-height:16em;overflow-y:auto;margin-bottom:4px;"
            "display:flex;flex-direction:column-reverse'><div>" + "".join(parts) + "</div></div>"
        )

    def html(self) -> str:
        """The whole view as static HTML: the summary line opening to the rows."""
        return (
            f"<details class='tactus-timeline' style='{BOX}'>"
            f"<summary style='cursor:pointer'>{self.summary_html()}</summary>{self.rows_html()}</details>"
        )

    def plain_text(self) -> str:
        main = self.trails[0] if self.trails else None
        state, seconds = self._state()
        key = main.key.split("/", 1)[0] if main else "?"
        return (
            f"[Tactus timeline] {main.label if main else '?'}: {LABELS.get(state, state)}, "
            f"{_duration(seconds)} (`%tactus log {key}` lists its events)"
        )


def _row(trail: Trail, ev: dict[str, Any]) -> str:
    state = ev["state"]
    name = str(ev["name"])
    if "count" in ev:
        name = f"{name} … {ev.get('last', '')} ({ev['count']})"
    label = f"{ev['kind']} · {name}"
    dur = ev.get("duration")
    if dur is None and state in ("running", "waiting"):
        dur = time.perf_counter() - trail.t0 - ev["t"]
    detail = ev.get("error") or ev.get("preview") or ""
    indent = 4 + trail.depth * 14
    color = COLORS.get(state, MUTED)
    return (
        f"<tr><td style='color:{color};padding:1px 4px;text-align:center'>{ICONS.get(state, '·')}</td>"
        f"<td style='padding:1px 8px 1px {indent}px'>{html.escape(label)}</td>"
        f"<td style='color:{color};padding:1px 8px'>{html.escape(LABELS.get(state, state))}</td>"
        "<td style='text-align:right;padding:1px 8px;font-variant-numeric:tabular-nums'>"
        f"{_duration(dur)}</td>"
        f"<td style='color:{MUTED};padding:1px 4px'>{html.escape(str(detail))}</td></tr>"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


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
        rec = self.runtime.records.record(run.key)
        expected = len(run.log.entries) if rec.get("status") == "completed" else 0
        events: list[dict[str, Any]] = []
        rec["events"] = events
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


# ------------------------------------------------------------ %tactus log
def collect_events(rec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A record's events and its children's, each with its procedure key and
    absolute start/end times (from the run's start and the offsets)."""
    out: list[dict[str, Any]] = []
    events = rec.get("events") or []
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
        out.extend(collect_events(child, f"{key}/{name}"))
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
    with_events = [k for k, r in records.items() if r.get("events")]
    if len(names) > 1:
        raise CellError.simple("UsageError", "%tactus log [procedure] [--json]")
    if names:
        key = names[0]
    else:
        timeline = runtime.state(TimelineFeature) if runtime.has_feature(TimelineFeature) else None
        key = (
            timeline.last_key if timeline and timeline.last_key in records else (with_events[-1] if with_events else "")
        )
    rec = runtime.records.lookup(key) if key else None
    if rec is None or not rec.get("events"):
        known = ", ".join(with_events) or "(none yet)"
        raise CellError.simple(
            "UsageError", f"no events recorded for {key or 'any procedure'!r}; procedures with events: {known}"
        )
    events = collect_events(rec, key)
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
            "duration": _duration(e.get("duration")),
            "detail": e.get("error") or e.get("preview", ""),
        }
        for e in events
    ]
    shown = bundle([rows])
    runtime.host.display({"text/plain": text_table(rows), "text/html": shown.get("text/html", "")})
