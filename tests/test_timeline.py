"""The live step timeline and the audit trail (record["events"] of a run that recorded)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from typing import Any

import pytest

from tactus_kernel.features import timeline
from tactus_kernel.features.timeline.log import latest_events

BUSY = """
function busy(s) local t = os.clock() while os.clock() - t < s do end end
"""

WORK = (
    BUSY
    + """
procedure({name = "helper"}, function()
  Step.run("inner", function() return "ok" end)
  return {fine = true}
end)
procedure({name = "work"}, function()
  local rows = Step.run("fetch", function() busy(0.05); return {rows = 3} end)
  local ok = Human.approve({message = "Ship it?"})
  local child = Procedure.run("helper")
  Sleep(0.02)
  for i = 1, 50 do Step.run("item_" .. i, function() return i end) end
  return {rows = rows.rows, ok = ok, fine = child.fine}
end)
"""
)


def words(html_text: str) -> str:
    """The text of an HTML fragment, tags as spaces, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html_text).split())


def events(cells: Any, key: str) -> list[dict[str, Any]]:
    """The events of the procedure's last run (a replay's stay out of the record: issue 24)."""
    return latest_events(cells.runtime, key)


def shape(evs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["kind"], e["name"], e["state"], e.get("count")) for e in evs]


def test_events_in_order_with_durations_and_previews(cells):
    cells.runtime.answers["Ship it?"] = True
    cells(WORK, key="c1")
    evs = events(cells, "work")
    assert shape(evs) == [
        ("run", "work", "completed", None),
        ("step", "fetch", "completed", None),
        ("human", "Ship it?", "completed", None),
        ("procedure", "helper", "completed", None),
        ("sleep", "sleep 0.02s", "completed", None),
        ("step", "item_1", "completed", 50),
    ]
    assert evs[0]["at"].endswith("Z") and evs[0]["duration"] >= 0.07
    starts = [e["t"] for e in evs]
    assert starts == sorted(starts)
    fetch = evs[1]
    assert fetch["duration"] >= 0.05 and fetch["preview"] == '{"rows":3}'
    assert evs[2]["preview"] == "true" and evs[3]["preview"] == '{"fine":true}'
    assert evs[5]["last"] == "item_50"
    child = cells.runtime.records.procedures["work"]["children"]["helper#1"]["events"]
    assert shape(child) == [("run", "work/helper#1", "completed", None), ("step", "inner", "completed", None)]
    assert json.loads(json.dumps(evs)) == evs


def test_a_preview_is_one_short_line_of_the_start_of_a_value():
    assert timeline.preview("a\n  b\tc") == "a b c"
    assert timeline.preview({"rows": 3}) == '{"rows":3}'
    assert timeline.preview(None) == ""
    long = timeline.preview("word " * 1_000_000)  # looks at the start only
    assert len(long) == timeline.PREVIEW and long.endswith("…") and long.startswith("word word")
    # spaces enough to fill the part looked at still say that more follows
    assert timeline.preview(" " * 10_000 + "tail") == "…"


def test_a_rerun_marks_rows_replayed(cells):
    cells.runtime.answers["Ship it?"] = True
    cells(WORK, key="c1")
    cells(WORK, key="c1")
    evs = events(cells, "work")
    assert shape(evs) == [
        ("run", "work", "completed", None),
        ("step", "fetch", "replayed", None),
        ("human", "Ship it?", "replayed", None),
        ("procedure", "helper", "replayed", None),
        ("sleep", "sleep 0.02s", "replayed", None),
        ("step", "item_1", "replayed", 50),
    ]
    assert all(e["duration"] < 0.05 for e in evs[1:])
    assert evs[2]["preview"] == "true"


def test_failures_are_events_too(cells):
    err = cells.error(
        """
    procedure({name = "shaky"}, function()
      pcall(Step.run, "caught", function() error("first try") end)
      Step.run("fine", function() return 1 end)
      Step.run("fatal", function() Sleep(0.01); error("gave up") end)
    end)""",
        key="c1",
    )
    assert "gave up" in err.evalue
    evs = events(cells, "shaky")
    states = {(e["name"], e["state"]) for e in evs}
    assert {("shaky", "failed"), ("caught", "failed"), ("fine", "completed"), ("fatal", "failed")} <= states
    assert "gave up" in evs[0]["error"]


def test_ten_thousand_steps_make_few_events(cells):
    code = """
    procedure({name = "many"}, function()
      for i = 1, 10000 do Step.run("item_" .. i, function() return i end) end
      return {}
    end)"""
    cells(code, key="c1")
    assert len(events(cells, "many")) < 1000  # quick steps merge (a pause now and then splits a group)
    recorded = sum(e.get("count", 1) for e in events(cells, "many") if e["kind"] == "step")
    assert recorded == 10000
    cells(code, key="c1")
    assert shape(events(cells, "many")) == [("run", "many", "completed", None), ("step", "item_1", "replayed", 10000)]


class FakeWidget:
    def __init__(self, value: str) -> None:
        self._value = value
        self.sets = 0

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, v: str) -> None:
        self._value = v
        self.sets += 1


def test_the_live_view_is_throttled(cells, monkeypatch):
    views: list[timeline.CellTimeline] = []
    real_view_for = timeline.Timeline.view_for

    def view_for(self: timeline.Timeline, cell: Any) -> timeline.CellTimeline:
        view = real_view_for(self, cell)
        if view not in views:
            views.append(view)
        return view

    def show(self: timeline.CellTimeline) -> None:
        self.widget = FakeWidget(self.html())
        self.host.display({"text/plain": "timeline"})
        self.updates += 1

    monkeypatch.setattr(timeline.Timeline, "view_for", view_for)
    monkeypatch.setattr(timeline.CellTimeline, "_show", show)
    cells.host.timeline_widgets = True
    started = time.monotonic()
    cells(
        """
    procedure({name = "busy"}, function()
      Sleep(0.35)
      for i = 1, 10000 do Step.run("item_" .. i, function() return i end) end
      Sleep(0.25)
      for i = 1, 3000 do Step.run("more_" .. i, function() return i end) end
      return {}
    end)""",
        key="c1",
    )
    elapsed = time.monotonic() - started
    [view] = views
    assert view.widget is not None and cells.host.displayed == [{"text/plain": "timeline"}]
    assert view.updates <= elapsed / timeline.INTERVAL + 3
    assert view.widget.sets == view.updates - 1
    # the summary line (layout changed: a line of spans, the rows behind a toggle)
    assert words(view.widget.value).startswith("✓ busy done 13000 steps · ")
    assert " (" in view.rows_html()  # merged rows: "item_1 … item_219 (219)"


def test_the_view_ticks_once_a_second_while_a_run_waits_and_stops_with_the_cell(cells, monkeypatch):
    """A Sleep (like a card) changes nothing for seconds: the view still
    redraws about once a second, by a timer, and the timer ends with the cell."""
    views: list[timeline.CellTimeline] = []
    drawn: list[tuple[float, str]] = []

    def show(self: timeline.CellTimeline) -> None:
        views.append(self)
        self.widget = FakeWidget(self.summary_html())
        self.host.display({"text/plain": "timeline"})
        self.updates += 1

    real_render = timeline.CellTimeline._render

    def render(self: timeline.CellTimeline, now: float) -> None:
        real_render(self, now)
        drawn.append((now, words(self.widget.value)))

    monkeypatch.setattr(timeline.CellTimeline, "_show", show)
    monkeypatch.setattr(timeline.CellTimeline, "_render", render)
    cells.host.timeline_widgets = True
    cells('procedure({name = "nap"}, function() Sleep(3.2) return {} end)', key="c1")
    [view] = views
    ticks = [(t, text) for t, text in drawn if "running" in text]
    assert 2 <= len(ticks) <= 4, ticks  # ~3 s of sleep: about 3 redraws, not a busy loop
    # at 1.3 s, 2.3 s (the timer) and when the Sleep ends (its event), never closer than the throttle
    assert all(later - earlier >= timeline.INTERVAL for (earlier, _), (later, _) in itertools.pairwise(ticks))
    seconds = [float(text.rsplit(" ", 2)[-2]) for _, text in ticks]  # "... 0 steps 1.3 s"
    assert seconds == sorted(seconds) and seconds[-1] - seconds[0] >= 1.0
    assert view._timer is None and not view.live  # stopped with the cell
    assert words(view.widget.value).startswith("✓ nap done 0 steps ")


def test_quick_runs_show_no_view(cells):
    cells.host.timeline_widgets = True
    cells('procedure({name = "quick"}, function() Step.run("a", function() return 1 end) return {} end)')
    assert cells.host.displayed == []


def test_progress_from_stages_and_from_the_last_run(cells):
    cells(
        """
    stages({"one", "two", "three", "four"})
    procedure({name = "staged"}, function()
      Stage.set("one")
      Stage.set("two")
      for i = 1, 4 do Step.run("s" .. i, function() return i end) end
      return {}
    end)""",
        key="c1",
    )
    captured: list[Any] = []

    async def run() -> None:
        await cells.runtime.execute(
            """
        procedure({name = "probe"}, function()
          Stage.set("three")
          Step.run("x", function() return 1 end)
          return {}
        end)""",
            "[cell]",
            "c2",
        )

    real = timeline.Timeline.run_ended

    def run_ended(self: timeline.Timeline, run: Any, ok: bool, error: Any) -> None:
        view = self.views.get(id(run.cell))
        if view is not None:
            captured.append(view.progress())
        real(self, run, ok, error)

    timeline.Timeline.run_ended = run_ended  # type: ignore[method-assign]
    try:
        asyncio.run(run())
        cells(
            'procedure({name = "again"}, function() for i = 1, 4 do Step.run("s" .. i, function() return i end) '
            "end return {} end)",
            key="c3",
        )
        cells(
            'procedure({name = "again"}, function() for i = 1, 4 do Step.run("s" .. i, function() return i end) '
            "end return {} end)",
            key="c3",
        )
    finally:
        timeline.Timeline.run_ended = real  # type: ignore[method-assign]
    assert captured[0] == (0.75, "stage 3/4: three")
    assert captured[-1] == (1.0, "4/4 checkpoints (as last run)")


# ---------------------------------------------------------------- kernel
SLOW = (
    BUSY
    + """
procedure({name = "slow"}, function()
  -- 0.6 s of the procedure's own work: over the 0.5 s the summary needs to show a rate
  Step.run("prepare", function() busy(0.6); return "ready" end)
  local ok = Human.approve({message = "Go on?"})
  for i = 1, 10000 do Step.run("item_" .. i, function() return i end) end
  return {ok = ok}
end)
"""
)


def timeline_widgets(kernel: Any) -> list[str]:
    """The summary lines of live timelines (HTML widgets)."""
    return [
        cid
        for cid, st in kernel.widgets.items()
        if st.get("_model_name") == "HTMLModel" and "tactus-timeline-summary" in str(st.get("value", ""))
    ]


def seconds_shown(text: str) -> float:
    """The last duration on a summary line ("950 ms", "3.0 s", "1 min 02 s") in seconds."""
    found = re.findall(r"(\d+(?:\.\d+)?) (ms|s)\b|(\d+) min (\d+) s", text)
    value, unit, minutes, secs = found[-1]
    if minutes:
        return int(minutes) * 60 + int(secs)
    return float(value) / (1000 if unit == "ms" else 1)


def test_kernel_shows_a_live_timeline_updated_in_place(kernel):
    """Layout changed: one summary line and the rows behind a toggle (read
    from the rows widget once shown), static HTML once the cell ends."""
    kernel.open_tactus(None)
    run = kernel.submit(SLOW, cell_id="slow")
    kernel.wait_until(
        lambda: kernel.widgets_where(_model_name="ButtonModel", description="Approve", disabled=False), timeout=30
    )
    kernel.wait_until(lambda: bool(timeline_widgets(kernel)), timeout=10)
    [tl] = timeline_widgets(kernel)
    kernel.wait_until(lambda: "waiting for a human" in str(kernel.widgets[tl]["value"]), timeout=10)
    assert words(kernel.widgets[tl]["value"]).startswith("? slow waiting for a human 1 step ")

    # while the card waits, its wait advances on the summary line, about once a second
    first = seconds_shown(words(kernel.widgets[tl]["value"]))
    kernel.wait_until(lambda: seconds_shown(words(kernel.widgets[tl]["value"])) >= first + 2.0, timeout=10)
    ticks = [m for m in kernel.comm_msgs if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == tl]
    assert 2 <= len(ticks) <= 6, len(ticks)  # a timer, not a busy loop

    # the toggle opens the rows; they tick too
    [toggle] = kernel.widgets_where(_model_name="ToggleButtonModel", description="Show steps")
    kernel.set_value(toggle, True)
    kernel.wait_until(
        lambda: any("tactus-timeline-rows" in str(st.get("value", "")) for st in kernel.widgets.values()), timeout=10
    )
    [rows] = [cid for cid, st in kernel.widgets.items() if "tactus-timeline-rows" in str(st.get("value", ""))]
    value = words(kernel.widgets[rows]["value"])
    assert "step · prepare done" in value and "ready" in value and "human · Go on? waiting for a human" in value
    kernel.click(kernel.button("Approve"))
    kernel.wait(run)
    assert run.status == "ok", run.errors
    updates = [m for m in kernel.comm_msgs if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == tl]
    assert len(updates) < 100  # throttled: not one per step
    shown = [m for m in run.of_type("display_data") if "Tactus timeline" in m["content"]["data"]["text/plain"]]
    assert len(shown) == 1
    # the cell ended: the view is static HTML that opens to the rows, its widgets closed
    display_id = shown[0]["content"]["transient"]["display_id"]
    [final] = [
        m["content"]
        for m in run.of_type("update_display_data")
        if m["content"]["transient"]["display_id"] == display_id
    ]
    assert "application/vnd.jupyter.widget-view+json" not in final["data"]
    static = final["data"]["text/html"]
    assert static.startswith("<details class='tactus-timeline'") and "<summary" in static
    assert words(static).startswith("✓ slow done 10001 steps · ")
    assert "step · item_" in static and " … " in static
    assert final["data"]["text/plain"].startswith("[Tactus timeline] slow: done, ")
    closed = {m["content"]["comm_id"] for m in kernel.comm_msgs if m["msg_type"] == "comm_close"}
    assert {tl, toggle, rows} <= closed

    log = kernel.execute("%tactus log slow --json")
    events = json.loads(log.stdout)
    assert [e["kind"] for e in events[:3]] == ["run", "step", "human"]
    assert all(e["procedure"] == "slow" and e["started_at"].endswith("Z") for e in events)
    assert events[2]["state"] == "completed" and events[2]["duration"] > 2.0
    table = kernel.execute("%tactus log")
    assert "prepare" in table.of_type("display_data")[0]["content"]["data"]["text/plain"]
    bad = kernel.execute("%tactus log nothing")
    assert bad.errors[0]["ename"] == "UsageError"


@pytest.mark.parametrize("code", ["x = 1", 'procedure({name = "fast"}, function() return {} end)'])
def test_kernel_quick_cells_show_no_timeline(kernel, code):
    run = kernel.execute(code)
    assert run.status == "ok" and not run.of_type("display_data")
