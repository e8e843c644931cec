"""``%tactus log [procedure] [--json]``: a record's events, with absolute times."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from tactus_kernel.features.timeline.observer import TimelineFeature
from tactus_kernel.features.timeline.view import _duration

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime


def latest_events(runtime: Runtime, key: str) -> list[dict[str, Any]]:
    """The events of the last run of the procedure at `key`: this kernel's
    (a replay's too), else the ones saved in its record."""
    latest = _latest(runtime)
    if key in latest:
        return latest[key]
    rec = runtime.records.lookup(key)
    return list((rec or {}).get("events") or [])


def _latest(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    return runtime.state(TimelineFeature).latest if runtime.has_feature(TimelineFeature) else {}


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
    latest = _latest(runtime)
    with_events = [k for k, r in records.items() if r.get("events") or latest.get(k)]
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
            "duration": _duration(e.get("duration")),
            "detail": e.get("error") or e.get("preview", ""),
        }
        for e in events
    ]
    shown = bundle([rows])
    runtime.host.display({"text/plain": text_table(rows), "text/html": shown.get("text/html", "")})
