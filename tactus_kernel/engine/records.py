"""Checkpoint records: the durable log of every procedure run.

The shape is the ``metadata.tactus`` contract (see docs/metadata.md): a
version number and, per procedure key, an ordered list of entries. The
kernel keeps the records as plain dicts (cheap to append to and to send on
the comm); pydantic validates what arrives from a notebook, because that
is the one place where a person may have edited the JSON by hand.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable
from typing import Any, Literal

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


@functools.cache
def _metadata_model() -> Any:
    """The pydantic model of a ``metadata.tactus`` block, built on first use
    (pydantic costs start-up time a kernel that is never sent metadata need
    not pay)."""
    from pydantic import BaseModel, ConfigDict, Field

    class CheckpointEntry(BaseModel):
        """One recorded call. Extra fields (``request``, ``message``, ...) are kept."""

        model_config = ConfigDict(extra="allow")
        kind: str
        name: str
        value: Any  # required (null is a value): a missing one would replay as nil without a word
        at: str

    class ProcedureRecord(BaseModel):
        model_config = ConfigDict(extra="allow")
        checkpoints: list[CheckpointEntry] = Field(default_factory=list)
        # child procedures' records (docs/metadata.md), checked like the top ones: replay reads them too
        children: dict[str, ProcedureRecord] | None = Field(default=None, exclude_if=lambda v: v is None)

    class TactusMetadata(BaseModel):
        model_config = ConfigDict(extra="allow")
        version: Literal[1]
        procedures: dict[str, ProcedureRecord] = Field(default_factory=dict)

    return TactusMetadata


class MetadataError(ValueError):
    """The notebook's ``metadata.tactus`` block cannot be used."""


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


def parse_metadata(data: Any) -> dict[str, dict[str, Any]]:
    """Validate a ``metadata.tactus`` block and return its procedure records.

    Raises MetadataError naming the first bad field, so the user can find
    it in the JSON.
    """
    if data is None:
        return {}
    from pydantic import ValidationError

    try:
        parsed = _metadata_model().model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # not "a valid dictionary or instance of ProcedureRecord": the user never saw that class
        msg = "Input should be an object" if first["type"] == "model_type" else first["msg"]
        raise MetadataError(f"{field_path(first['loc'])}: {msg} (found {first.get('input')!r:.80})") from None
    return {key: rec.model_dump() for key, rec in parsed.procedures.items()}


def describe_entry(key: str, index: int, entry: dict[str, Any]) -> str:
    """How an error names one recorded call so a person can find it in the
    JSON: the procedure, the 1-based position, the kind and the name."""
    return f"procedure {key!r}, checkpoint #{index + 1} ({entry.get('kind')} {entry.get('name')!r})"


class DivergenceError(RuntimeError):
    """Replay asked for a different call than the one recorded at its position."""

    def __init__(self, key: str, position: int, recorded: dict[str, Any] | None, asked: dict[str, Any]) -> None:
        self.key, self.position, self.recorded, self.asked = key, position, recorded, asked
        if recorded is None:
            rec = "nothing (the record ends here)"
        else:
            rec = f"{recorded['kind']} {recorded['name']!r}"
        if asked.get("kind") == "end":
            new = "the end of the procedure"
        else:
            new = f"{asked['kind']} {asked['name']!r}"
        super().__init__(
            f"replay diverged in procedure {key!r} at checkpoint #{position + 1}:\n"
            f"  recorded: {rec}\n"
            f"  now:      {new}\n"
            f"Run `%tactus reset {key}` to record it afresh, or restore the code that made the record."
        )


class Records:
    """Every procedure record of one notebook, plus which ones changed since
    the last time the frontend was told."""

    def __init__(self, max_bytes: int | None = -1) -> None:
        self.procedures: dict[str, dict[str, Any]] = {}
        self.dirty: set[str] = set()
        self.deleted: set[str] = set()
        # The record budget (-1: from the environment; None: no budget) and
        # what the records hold, by record_size (recounted when records go).
        self.max_bytes = max_records_from_env() if max_bytes == -1 else max_bytes
        self.used = 0

    def load(self, procedures: dict[str, dict[str, Any]]) -> None:
        self.procedures = procedures
        self.dirty.clear()
        self.deleted.clear()
        self.recount()

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
    # primitives/composition.py). Updates always carry the whole top record.
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

    def record(self, key: str) -> dict[str, Any]:
        if "/" in key:
            root, *path = key.split("/")
            node = self.record(root)
            for part in path:
                node = node.setdefault("children", {}).setdefault(part, {"checkpoints": []})
            return node
        rec = self.procedures.get(key)
        if rec is None:
            rec = self.procedures[key] = {"checkpoints": []}
            self.deleted.discard(key)
        return rec

    def touch(self, key: str) -> None:
        self.dirty.add(key if "/" not in key else key.split("/", 1)[0])

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
                self.dirty.discard(k)
                self.deleted.add(k)
                gone.append(k)
        if gone:
            self.recount()
        return gone

    def take_changes(self) -> list[dict[str, Any]]:
        """The comm ops that bring a frontend up to date, and forget them."""
        ops: list[dict[str, Any]] = []
        if self.dirty:
            ops.append({"op": "update", "procedures": {k: self.procedures[k] for k in sorted(self.dirty)}})
        if self.deleted:
            ops.append({"op": "delete", "procedures": sorted(self.deleted)})
        self.dirty.clear()
        self.deleted.clear()
        return ops

    def snapshot(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "procedures": self.procedures}


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
        existing = records.lookup(key)
        # A run that records nothing leaves no empty record behind.
        self.entries: list[dict[str, Any]] = existing["checkpoints"] if existing else []
        self.position = 0
        self.allow_divergence = allow_divergence
        self.replayed = 0
        self.recorded = 0
        # The live timeline's event trail (tactus_kernel/features/timeline.py), told of
        # each call started, replayed and recorded; None costs nothing.
        self.trail: Any = None
        # How a person knows the procedure (runtime.RunState.title), written
        # into the record as "title" by the run's first new checkpoint: never
        # by a replay, which must leave the record as it was.
        self.title: str | None = None
        self.untitled = True

    def _diverge(self, asked: dict[str, Any]) -> None:
        recorded = self.entries[self.position] if self.position < len(self.entries) else None
        if not self.allow_divergence:
            raise DivergenceError(self.key, self.position, recorded, asked)
        del self.entries[self.position :]
        self.records.touch(self.key)
        self.records.recount()

    def replay(self, kind: str, name: str) -> dict[str, Any] | None:
        """The recorded entry for this call, or None when it must run now."""
        if self.position >= len(self.entries):
            if self.trail is not None:
                self.trail.started(kind, name)
            return None
        entry = self.entries[self.position]
        if entry["kind"] != kind or entry["name"] != name:
            self._diverge({"kind": kind, "name": name})
            if self.trail is not None:
                self.trail.started(kind, name)
            return None
        self.position += 1
        self.replayed += 1
        if self.trail is not None:
            self.trail.replayed(entry)
        return entry

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
        rec = records.record(key)  # again each time: a reset may have dropped it meanwhile
        if rec["checkpoints"] is not entries or self.untitled:
            rec["checkpoints"] = entries
            if self.title is not None:
                rec["title"] = self.title
            self.untitled = False
        if self.position < len(entries):
            del entries[self.position :]
        entries.append(entry)
        self.position += 1
        self.recorded += 1
        records.touch(key)
        if self.trail is not None:
            self.trail.recorded(entry)
        return entry

    def finish(self) -> None:
        """A completed run must have used the whole record."""
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
        self.records.touch(self.key)
        self.records.recount()
