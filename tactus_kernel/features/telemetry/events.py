"""The audit trail as JSON lines: one object per event, appended to a file
(``TACTUS_EVENTS=/path/events.jsonl``, or ``tactus-kernel replay --events``).

Each line is written with one ``write`` on a file opened for appending, so
lines from several kernels appending to the same file do not interleave and
a line is on disk (in the OS's hands) as soon as its event happened. A
write that fails (a full disk, a folder removed) never breaks a cell: it is
reported once, as a warning on the cell's stderr, and the events after it
are dropped. The schema is in docs/telemetry.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from tactus_kernel.features.telemetry.hub import Call, ErrorInfo, RunInfo

log = logging.getLogger("tactus_kernel")

ENV = "TACTUS_EVENTS"
SCHEMA = 1  # the "v" of every line; raised when a field changes meaning


def iso(seconds: float) -> str:
    """An epoch time as ISO 8601 UTC, to the millisecond: ``2026-12-05T09:31:02.123Z``."""
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _secs(seconds: float) -> float:
    return round(seconds, 6)


def _error(error: ErrorInfo | None) -> dict[str, str] | None:
    return None if error is None else {"kind": error.kind, "message": error.message}


class EventsSink:
    """A telemetry sink that appends one JSON line per event to a file."""

    def __init__(self, path: str | os.PathLike[str], warn: Callable[[str], None] | None = None) -> None:
        self.path = os.fspath(path)
        self.warn = warn
        self.fd: int | None = None
        self.broken = False

    # ------------------------------------------------------------ writing
    def write(self, event: str, run: RunInfo, at: float, **fields: Any) -> None:
        """One line: the event, its time, the run it belongs to, its fields."""
        if self.broken:
            return
        line: dict[str, Any] = {
            "v": SCHEMA,
            "event": event,
            "at": iso(at),
            "procedure": run.key,
            "cell": run.cell,
            "cell_id": run.cell_id,
            "run": run.id,
        }
        line.update((k, v) for k, v in fields.items() if v is not None)
        try:
            data = (json.dumps(line, ensure_ascii=False, default=str) + "\n").encode("utf-8")
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            written = os.write(self.fd, data)
            if written != len(data):  # a full disk: the line is cut, and no later line may follow it
                raise OSError(f"only {written} of {len(data)} bytes of a line were written")
        except (OSError, ValueError) as exc:
            self.broken = True
            message = f"Tactus: warning: cannot write the events file {self.path}: {exc}; no more events are written\n"
            log.warning(message.strip())
            if self.warn is not None:
                self.warn(message)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    # --------------------------------------------------------------- runs
    def run_started(self, run: RunInfo) -> bool:
        if run.procedure:
            parent = run.parent.key if run.child and run.parent is not None else None
            title = run.title if run.title != run.key else None
            self.write("run.started", run, run.started, name=run.name, title=title, parent=parent)
        return True

    def run_ended(self, run: RunInfo) -> None:
        if not run.procedure:
            return
        end = run.started + run.duration
        fields: dict[str, Any] = {
            "name": run.name,
            "duration": _secs(run.duration),
            "replayed": run.replayed,
            "checkpoints": {"recorded": run.recorded, "replayed": run.replayed_calls},
        }
        caller = run.parent if run.child else None
        parent = caller.key if caller is not None else None
        if run.outcome == "completed":
            self.write("run.completed", run, end, parent=parent, **fields)
        else:
            self.write("run.failed", run, end, parent=parent, status=run.outcome, error=_error(run.error), **fields)
        if caller is not None:  # the caller's view of the call: a child procedure ran
            self.write(
                "child",
                caller,
                end,
                name=run.name,
                child=run.key,
                replayed=False,
                status=run.outcome,
                duration=_secs(run.duration),
                error=_error(run.error),
            )

    # -------------------------------------------------------------- calls
    def _call(self, event: str, run: RunInfo, call: Call, **fields: Any) -> None:
        self.write(
            event,
            run,
            call.started + call.duration,
            name=call.name,
            replayed=call.replayed,
            duration=_secs(call.duration),
            error=_error(call.error),
            **fields,
        )

    def step(self, run: RunInfo, call: Call) -> None:
        self._call("step", run, call)

    def human_requested(self, run: RunInfo, call: Call) -> None:
        self.write("human.requested", run, call.started, name=call.name, request=call.request or None)

    def human_answered(self, run: RunInfo, call: Call) -> None:
        entry = call.entry or {}
        source = None
        if call.entry is not None:
            source = "record" if call.replayed else str(entry.get("source", "human"))
        self.write(
            "human.answered" if call.error is None else "human.failed",
            run,
            call.started + call.duration,
            name=call.name,
            request=call.request or entry.get("request"),
            replayed=call.replayed,
            wait=_secs(call.duration),
            source=source,
            timed_out=True if entry.get("timed_out") else None,
            error=_error(call.error),
        )

    def agent_turn_started(self, run: RunInfo, call: Call) -> None:
        return None  # one line per turn, when it ends

    def agent_turn_ended(self, run: RunInfo, call: Call) -> None:
        entry = call.entry or {}
        usage = entry.get("usage") if isinstance(entry.get("usage"), dict) else None
        self._call("agent.turn", run, call, agent=call.name, model=entry.get("model") or None, usage=usage or None)

    def child_replayed(self, run: RunInfo, call: Call) -> None:
        entry = call.entry or {}
        child = entry.get("child")
        self._call(
            "child",
            run,
            call,
            child=f"{run.key}/{child}" if child else None,
            status=str(entry.get("status", "completed")),
        )

    def checkpoint(self, run: RunInfo, call: Call) -> None:
        self._call("checkpoint", run, call, kind=call.kind)
