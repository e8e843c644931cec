"""Checkpoint records: the durable log of every procedure run.

The shape is the ``metadata.tactus`` contract (see docs/metadata.md): a
version number and, per procedure key, an ordered list of entries. The
kernel keeps the records as plain dicts (cheap to append to and to send on
the comm); what arrives from a notebook is validated where it arrives, by
the schema in tactus_kernel/protocol.py (a person may have edited the JSON
by hand), so the engine needs no schema of its own.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterable
from typing import Any, Protocol

from tactus_kernel.engine.errors import Failure, KernelError, call_text

SCHEMA_VERSION = 1
# Recorded data lives in Python, outside the Lua memory cap: it has its own budget.
DEFAULT_MAX_RECORDS = 256 * 2**20
MAX_RECORDS_ENV = "TACTUS_MAX_RECORDS"


def max_records_from_env() -> int | None:
    """The record budget in bytes: ``TACTUS_MAX_RECORDS`` (0: none), else the default."""
    raw = os.environ.get(MAX_RECORDS_ENV, "").strip()
    try:
        value = int(float(raw)) if raw else DEFAULT_MAX_RECORDS
    except ValueError:
        value = DEFAULT_MAX_RECORDS
    return value if value > 0 else None


def record_size(value: Any) -> int:
    """About how many bytes a recorded value holds: the length of its texts
    plus 8 bytes per number, key and item. Cheap (no encoding, no copy; a
    small flat table costs well under a microsecond) and iterative, so any
    depth can be measured."""
    t = type(value)
    if t is str:
        return len(value) + 8
    if t is not dict and t is not list:
        return 8
    size = 0
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if type(node) is dict:
            size += 8 + 16 * len(node)
            for k, v in node.items():
                size += len(k) if type(k) is str else 0
                tv = type(v)
                if tv is str:
                    size += len(v)
                elif tv is dict or tv is list:
                    push(v)
        else:
            size += 8 + 8 * len(node)
            for v in node:
                tv = type(v)
                if tv is str:
                    size += len(v)
                elif tv is dict or tv is list:
                    push(v)
    return size


def _fmt_mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class RecordLimitError(ValueError):
    """Recording a value would take the records past their budget (a Lua
    ``NotRecordableError``: runtime.py tags it so)."""

    def __init__(self, what: str, size: int, used: int, limit: int) -> None:
        self.what, self.size, self.used, self.limit = what, size, used, limit
        super().__init__(
            f"{what} is {_fmt_mib(size)}, and recording it would take the records past their budget of "
            f"{_fmt_mib(limit)} ({_fmt_mib(used)} already recorded); record less (a path or a digest instead of "
            f"the data), forget records with `%tactus reset`, or raise {MAX_RECORDS_ENV} (bytes) in the kernel's "
            "environment",
        )


# the last second and millisecond formatted, and their texts
_last: list[Any] = [None, "", None, ""]


def now_iso() -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-22T10:42:07.123Z``.

    Every checkpoint gets one, and quick steps come many to a millisecond,
    so the text is made once per millisecond and its seconds part once per
    second (formatting costs more than the rest of a recorded step)."""
    ms = int(time.time() * 1000)
    last = _last
    if ms != last[2]:
        second = ms // 1000
        if second != last[0]:
            last[0], last[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        last[2], last[3] = ms, f"{last[1]}.{ms % 1000:03d}Z"
    return last[3]


def field_path(loc: Iterable[str | int]) -> str:
    """Where a bad field is, as ``metadata.tactus.procedures.x.checkpoints.0.kind``.
    A key that is not printable (a newline, say) is quoted as JSON, so the
    message stays one line."""
    parts = [
        p if isinstance(p, str) and p.isprintable() else json.dumps(p) if isinstance(p, str) else str(p) for p in loc
    ]
    return ".".join(["metadata.tactus", *parts])


def describe_entry(key: str, index: int, entry: dict[str, Any]) -> str:
    """How an error names one recorded call so a person can find it in the
    JSON: the procedure, the 1-based position, the kind and the name."""
    return f"procedure {key!r}, checkpoint #{index + 1} ({entry.get('kind')} {entry.get('name')!r})"


class DivergenceError(KernelError):
    """Replay asked for a different call than the one recorded at its position.

    `position` is 0-based here; the failure counts checkpoints from 1, as
    the message does."""

    divergence = "call"

    def __init__(self, key: str, position: int, recorded: dict[str, Any] | None, asked: dict[str, Any]) -> None:
        self.key, self.position, self.recorded, self.asked = key, position, recorded, asked
        params = self.divergence == "params"
        message = (
            f"replay diverged in procedure {key!r} at checkpoint #{position + 1}:\n"
            f"  recorded: {call_text(recorded, params)}\n"
            f"  now:      {call_text(asked, params)}\n"
            f"Run `%tactus reset {key}` to record it afresh, or restore the code that made the record."
        )
        super().__init__(
            Failure(
                "DivergenceError",
                message,
                procedure=key,
                divergence=self.divergence,
                position=position + 1,
                recorded=_call(recorded, params),
                asked=_call(asked, params),
            )
        )


class ParamsDivergenceError(DivergenceError):
    """Replay called the recorded child procedure with other params than
    recorded: the entries shown carry their params."""

    divergence = "params"


def _call(entry: dict[str, Any] | None, params: bool) -> dict[str, Any] | None:
    """What a divergence says of an entry: its kind and name (and its params, for a params divergence)."""
    if entry is None:
        return None
    return {k: entry[k] for k in ("kind", "name", "params") if k in entry and (params or k != "params")}


# How an error names each kind of recorded call.
_CALLS = {
    "step": "Step.run",
    "human": "human request",
    "agent": "agent turn",
    "sleep": "Sleep",
    "procedure": "child procedure",
    "wait": "Procedure wait",
}


class NotRecordedError(KernelError):
    """Strict mode (``replay --strict``): a call has no record, and strict
    mode never runs one live (no step function, no model, no person)."""

    def __init__(self, key: str, position: int, kind: str, name: str) -> None:
        self.key, self.position, self.kind, self.name = key, position, kind, name
        call = _CALLS.get(kind, kind)
        message = (
            f"strict mode: procedure {key!r}: {call} {name!r} (checkpoint #{position + 1}, kind {kind}) "
            "was not recorded, and strict mode runs nothing live; record it (run the notebook in JupyterLab "
            "or replay without --strict) and commit the notebook"
        )
        super().__init__(
            Failure(
                "NotRecordedError", message, procedure=key, position=position + 1, asked={"kind": kind, "name": name}
            )
        )


class Records:
    """Every procedure record of one notebook, and what changed in them
    since the frontend was last told.

    The frontend's copy is known (``_sent``: per record path, how many
    checkpoints it holds and a copy of its other fields), so
    :meth:`take_changes` sends only what differs from it: the new
    checkpoints and changed fields of a record (an ``append``), a whole
    record only when it was replaced, and nothing at all for a run that
    replayed its record and ended as recorded (the record stays as it was:
    DESIGN.md, "Replay and the record"). A record path is a key, or
    ``"root/child#1"`` for a child's record nested in ``children``.
    """

    def __init__(self, max_bytes: int | None = -1) -> None:
        self.procedures: dict[str, dict[str, Any]] = {}
        # what the frontend holds: path -> (checkpoints, a copy of the other fields)
        self._sent: dict[str, tuple[int, dict[str, Any]]] = {}
        self._from: dict[str, int] = {}  # path -> first checkpoint that may differ from the frontend's
        self._fields: set[str] = set()  # paths whose other fields may differ
        self._whole: set[str] = set()  # top keys to send whole
        self.deleted: set[str] = set()
        # The record budget (-1: from the environment; None: no budget) and
        # what the records hold, by record_size (recounted when records go).
        self.max_bytes = max_records_from_env() if max_bytes == -1 else max_bytes
        self.used = 0
        # Strict mode (``replay --strict``): these records are the whole truth,
        # and a call they do not hold is an error, never run live (see
        # RunLog.check_live). A flag of the notebook's records, so the fresh
        # records of a specification or evaluation run are never strict.
        self.strict = False

    def load(self, procedures: dict[str, dict[str, Any]]) -> None:
        """Take these records (as a frontend holds them) in place of ours."""
        self.procedures = procedures
        self._forget_changes()
        self.deleted.clear()
        for key in procedures:
            self._remember(key)
        self.recount()

    def merge_stored(self, stored: dict[str, dict[str, Any]]) -> None:
        """A frontend connected holding `stored`: ours win for what this
        kernel already ran, the notebook fills in the rest (typically:
        everything, after a restart). Records the frontend lacks or holds
        differently are sent to it whole by the next take_changes."""
        for key, rec in stored.items():
            self.procedures.setdefault(key, rec)
        self._forget_changes()
        self._sent.clear()
        for key, rec in self.procedures.items():
            if stored.get(key) != rec:
                self._whole.add(key)
            self._remember(key)
        self.recount()

    def _forget_changes(self) -> None:
        self._sent.clear()
        self._from.clear()
        self._fields.clear()
        self._whole.clear()

    def _remember(self, path: str, rec: dict[str, Any] | None = None) -> None:
        """The frontend now holds the record at `path` (and its children) as it is."""
        rec = self.lookup(path) if rec is None else rec
        if rec is None:
            return
        fields = {k: copy.deepcopy(v) for k, v in rec.items() if k != "checkpoints" and k != "children"}
        self._sent[path] = (len(rec.get("checkpoints") or ()), fields)
        for name, child in (rec.get("children") or {}).items():
            self._remember(f"{path}/{name}", child)

    def charge(self, what: str, size: int) -> None:
        """Count `size` more bytes against the budget, or raise RecordLimitError naming `what`."""
        limit = self.max_bytes
        if limit is not None and self.used + size > limit:
            self.recount()  # records may have gone since the last count
            if self.used + size > limit:
                raise RecordLimitError(what, size, self.used, limit)
        self.used += size

    def recount(self) -> None:
        """Measure what the records hold now (after records were dropped or merged in)."""
        self.used = record_size(self.procedures)

    # A key with "/" names a child procedure's record nested in its caller's:
    # "deploy/build#1" is procedures["deploy"]["children"]["build#1"] (see
    # features/composition).
    def lookup(self, key: str) -> dict[str, Any] | None:
        """The record at a (possibly nested) key, or None."""
        if "/" not in key:
            return self.procedures.get(key)
        root, *path = key.split("/")
        rec = self.procedures.get(root)
        for part in path:
            if rec is None:
                return None
            rec = (rec.get("children") or {}).get(part)
        return rec

    def get_or_create(self, key: str) -> dict[str, Any]:
        """The record at a (possibly nested) key, made empty when there is none."""
        if "/" in key:
            root, *path = key.split("/")
            node = self.get_or_create(root)
            for part in path:
                node = node.setdefault("children", {}).setdefault(part, {"checkpoints": []})
            return node
        rec = self.procedures.get(key)
        if rec is None:
            rec = self.procedures[key] = {"checkpoints": []}
            self.deleted.discard(key)
        return rec

    # ------------------------------------------------------- what changed
    def touch(self, key: str) -> None:
        """Anything in the record at `key` may have changed: send its top record whole.
        (Cheaper, precise marks: :meth:`set`, :meth:`changed`.)"""
        self._whole.add(key.split("/", 1)[0])

    def set(self, path: str, **fields: Any) -> None:
        """Set fields of the record at `path` (made when absent). The frontend
        is sent those that end up different from its copy, and none when a
        run put back what it had (a replay: status, params, output)."""
        self.get_or_create(path).update(fields)
        self._fields.add(path)

    def changed(self, path: str, index: int) -> None:
        """Checkpoint `index` of the record at `path` and every later one may
        differ from the frontend's copy (added, removed or edited in place)."""
        start = self._from.get(path)
        if start is None or index < start:
            self._from[path] = index

    def pending(self, path: str) -> bool:
        """True when the record at `path` differs from the frontend's copy."""
        if path.split("/", 1)[0] in self._whole:
            return True
        rec = self.lookup(path)
        return rec is not None and bool(self._diff(path, rec, path in self._from, True))

    def _diff(self, path: str, rec: dict[str, Any], marked: bool, fields: bool) -> dict[str, Any] | None:
        """What the frontend lacks of the record at `path`: ``from`` and the
        checkpoints after it, and changed fields; None when only a whole
        record can say it (a field was removed)."""
        sent = self._sent.get(path)
        count, sent_fields = sent if sent is not None else (0, {})
        change: dict[str, Any] = {}
        entries = rec.get("checkpoints") or []
        if marked or sent is None:
            start = min(self._from.get(path, 0), count)
            if start < len(entries) or start < count:
                change["from"] = start
                change["checkpoints"] = entries[start:]
        if fields or sent is None:
            for k, v in rec.items():
                if k != "checkpoints" and k != "children" and (k not in sent_fields or sent_fields[k] != v):
                    change[k] = v
            if any(k not in rec for k in sent_fields):
                return None
        return change

    def take_changes(self, whole: bool = False) -> list[dict[str, Any]]:
        """The ops that bring the frontend's copy up to date, and forget them.
        `whole`: only ``update``/``delete`` (a protocol 1.0 frontend knows no ``append``)."""
        replace = set(self._whole)
        appends: dict[str, dict[str, Any]] = {}
        for path in sorted(set(self._from) | self._fields):
            root = path.split("/", 1)[0]
            rec = self.lookup(path)
            if root in replace or rec is None:
                continue
            change = self._diff(path, rec, path in self._from, path in self._fields)
            if change is None:
                replace.add(root)
            elif change:
                appends[path] = change
        if whole:
            replace.update(path.split("/", 1)[0] for path in appends)
            appends = {}
        else:
            appends = {p: c for p, c in appends.items() if p.split("/", 1)[0] not in replace}
        replace &= set(self.procedures)
        ops: list[dict[str, Any]] = []
        if replace:
            ops.append({"op": "update", "procedures": {k: self.procedures[k] for k in sorted(replace)}})
        if appends:
            ops.append({"op": "append", "procedures": appends})
        if self.deleted:
            ops.append({"op": "delete", "procedures": sorted(self.deleted)})
        for key in replace:
            self._remember(key)
        for path, change in appends.items():
            sent_fields = self._sent.get(path, (0, {}))[1]
            rec = self.lookup(path) or {}
            fields = {k: copy.deepcopy(v) for k, v in change.items() if k != "from" and k != "checkpoints"}
            self._sent[path] = (len(rec.get("checkpoints") or ()), {**sent_fields, **fields})
        for key in self.deleted:
            for path in [p for p in self._sent if p == key or p.startswith(key + "/")]:
                del self._sent[path]
        self._from.clear()
        self._fields.clear()
        self._whole.clear()
        self.deleted.clear()
        return ops

    def delete(self, keys: Iterable[str]) -> list[str]:
        gone = []
        for k in keys:
            if "/" in k:
                parent_key, _, child = k.rpartition("/")
                parent = self.lookup(parent_key)
                if parent is not None and child in (parent.get("children") or {}):
                    del parent["children"][child]
                    self.touch(k)
                    gone.append(k)
            elif k in self.procedures:
                del self.procedures[k]
                self._whole.discard(k)
                self.deleted.add(k)
                gone.append(k)
        if gone:
            self.recount()
        return gone

    def snapshot(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "procedures": self.procedures}


class LogObserver(Protocol):
    """Told of each call a run log hands out or records (RunLog.observers)."""

    def call_started(self, log: RunLog, kind: str, name: str) -> None:
        """A call found no record to replay: it runs now."""

    def call_replayed(self, log: RunLog, entry: dict[str, Any]) -> None:
        """A call was answered from the record."""

    def call_recorded(self, log: RunLog, entry: dict[str, Any]) -> None:
        """A new checkpoint was appended."""


class RunLog:
    """One run of one procedure: a cursor walking its record.

    Each call is matched to the entry at the cursor by kind and name; a
    match is replayed, the end of the record means "record it now", and
    anything else is a divergence (or, when allowed, the record from there
    on is dropped and recorded afresh).
    """

    def __init__(self, records: Records, key: str, allow_divergence: bool = False) -> None:
        self.records = records
        self.key = key
        # the first call strict mode refused: raised again by finish(), so a
        # pcall that caught it does not make the run pass
        self.not_recorded: NotRecordedError | None = None
        existing = records.lookup(key)
        # A run that records nothing leaves no empty record behind.
        self.entries: list[dict[str, Any]] = existing["checkpoints"] if existing else []
        self.position = 0
        self.allow_divergence = allow_divergence
        self.replayed = 0
        self.recorded = 0
        # The live timeline's event trail (tactus_kernel/features/timeline/trail.py), told of
        # each call started, replayed and recorded; None costs nothing.
        self.trail: Any = None
        # Told of its calls: call_started(log, kind, name), call_replayed(log, entry),
        # call_recorded(log, entry) (LogObserver: telemetry, and the driver's tap for
        # Observer.checkpoint_recorded); empty, it costs one test per call.
        self.observers: list[LogObserver] = []
        # How a person knows the procedure (runtime.RunState.title), written
        # into the record as "title" by the run's first new checkpoint: never
        # by a replay, which must leave the record as it was.
        self.title: str | None = None
        self.untitled = True
        # Other fields the first new checkpoint writes into the record (the
        # run's status, its events): a replay that records nothing leaves them as they were.
        self.first: dict[str, Any] = {}
        self.truncated = False  # the run dropped recorded checkpoints (a divergence, Checkpoint.clear_*)

    def _diverge(self, asked: dict[str, Any]) -> None:
        recorded = self.entries[self.position] if self.position < len(self.entries) else None
        if not self.allow_divergence:
            raise DivergenceError(self.key, self.position, recorded, asked)
        del self.entries[self.position :]
        self.truncated = True
        self.records.changed(self.key, self.position)
        self.records.recount()

    @property
    def changed_record(self) -> bool:
        """True once this run has changed its record (recorded or dropped checkpoints)."""
        return self.recorded > 0 or self.truncated

    def check_live(self, kind: str, name: str) -> None:
        """A call is about to run live (nothing recorded for it): the one
        place strict mode refuses that. :meth:`replay` calls it for every
        call it finds no record for."""
        if self.records.strict:
            self.not_recorded = NotRecordedError(self.key, self.position, kind, name)
            raise self.not_recorded

    def replay(self, kind: str, name: str) -> dict[str, Any] | None:
        """The recorded entry for this call, or None when it must run now
        (in strict mode, NotRecordedError instead)."""
        if self.position >= len(self.entries):
            self._runs_now(kind, name)
            return None
        entry = self.entries[self.position]
        if entry["kind"] != kind or entry["name"] != name:
            self._diverge({"kind": kind, "name": name})
            self._runs_now(kind, name)
            return None
        self.position += 1
        self.replayed += 1
        if self.trail is not None:
            self.trail.replayed(entry)
        for observer in self.observers:
            observer.call_replayed(self, entry)
        return entry

    def _runs_now(self, kind: str, name: str) -> None:
        """No record for this call: it runs live (strict mode refuses), and the trail and observers hear it start."""
        self.check_live(kind, name)
        if self.trail is not None:
            self.trail.started(kind, name)
        for observer in self.observers:
            observer.call_started(self, kind, name)

    def append(self, kind: str, name: str, value: Any, **extra: Any) -> dict[str, Any]:
        records = self.records
        size = record_size(value) + (record_size(extra) if extra else 0) + len(name) + 64
        if records.max_bytes is not None:
            records.charge(f"{kind} {name!r} of procedure {self.key!r}: the value", size)
        else:
            records.used += size
        entry = {"kind": kind, "name": name, "value": value, "at": now_iso()}
        if extra:
            entry.update(extra)
        entries, key = self.entries, self.key
        rec = records.get_or_create(key)  # again each time: a reset may have dropped it meanwhile
        if rec["checkpoints"] is not entries or self.untitled:
            rec["checkpoints"] = entries
            fields = dict(self.first)
            if self.title is not None:
                fields["title"] = self.title
            if fields:
                records.set(key, **fields)
            self.untitled = False
        position = self.position
        if position < len(entries):
            del entries[position:]
            self.truncated = True
        entries.append(entry)
        self.position = position + 1
        self.recorded += 1
        records.changed(key, position)
        if self.trail is not None:
            self.trail.recorded(entry)
        for observer in self.observers:
            observer.call_recorded(self, entry)
        return entry

    def finish(self) -> None:
        """A completed run must have used the whole record (and, in strict
        mode, asked for nothing that was not recorded)."""
        if self.not_recorded is not None:
            raise self.not_recorded
        if self.position < len(self.entries):
            self._diverge({"kind": "end", "name": ""})

    # Checkpoint.* helpers ------------------------------------------------
    def find(self, name: str) -> int | None:
        for i, entry in enumerate(self.entries):
            if entry["name"] == name:
                return i
        return None

    def clear_from(self, index: int) -> None:
        del self.entries[index:]
        self.position = min(self.position, index)
        self.truncated = True
        self.records.changed(self.key, index)
        self.records.recount()

    def entry_changed(self, entry: dict[str, Any]) -> None:
        """A recorded entry of this run was edited in place (a child call's
        outcome): the frontend gets it again, and what follows it."""
        entries = self.entries
        for i in range(len(entries) - 1, -1, -1):
            if entries[i] is entry:
                self.records.changed(self.key, i)
                return
        self.records.touch(self.key)
