"""The live view of a cell's runs: ipywidgets while it runs, static HTML after."""

from __future__ import annotations

import asyncio
import html
import time
from typing import TYPE_CHECKING, Any

from tactus_kernel.features.timeline.style import (
    BOX,
    COLORS,
    ICONS,
    INTERVAL,
    LABELS,
    MAX_ROWS,
    MUTED,
    SHOW_AFTER,
    TICK,
)
from tactus_kernel.features.timeline.trail import Trail, lua_fields

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun
    from tactus_kernel.engine.runtime import Runtime


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
