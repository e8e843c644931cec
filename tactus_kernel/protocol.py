"""The one protocol between the kernel and its frontends.

Everything a frontend (the lab extension, the replay client, a test) and
the kernel say to each other is defined here, once:

* ``PROTOCOL``: the ``tactus`` comm's version, ``MAJOR.MINOR``. The open
  data and the kernel's ops may carry ``"protocol"``; absent means
  ``"1.0"``. A new MINOR only adds (an op, a field); a new MAJOR changes
  what existing ones mean, so each side refuses a MAJOR it does not know.
* the ``metadata.tactus`` schema, as pydantic models. Its JSON Schema is
  checked in at ``labextension/src/schema/metadata.schema.json``
  (``python -m tactus_kernel.protocol --schema`` writes it; a test fails
  when it is stale), and the extension validates by it, so the two sides
  cannot disagree.
* the ops and :func:`fold_op`, the one Python function that folds them into
  a ``procedures`` dict (the replay client and the test driver use it; the
  extension's ``applyOp`` in merge.ts is its TypeScript twin).
* structured refusals: a :class:`CommInputError` has the field and what was
  found, and :func:`refusal` turns it into the ``warning`` op a frontend shows.

Why here, at the top of the package and not in engine/: the engine keeps
records as plain dicts and never validates input, so it needs none of
this; the schema is checked where input arrives (jupyter/ and replay/),
which import this module. This module imports only ``engine.records``
(downward), so no arrow points up.

The ops the kernel sends::

    {"op": "update", "procedures": {KEY: RECORD}}   replace these whole records
    {"op": "append", "procedures": {PATH: {"from": N, "checkpoints": [...], FIELD: VALUE, ...}}}
        (1.1) keep the first N checkpoints of the record at PATH, add these,
        and set these other fields; PATH is a key, or "root/child#1" for a
        child's record nested in its caller's ``children``
    {"op": "delete", "procedures": [KEY, ...]}      remove these records
    {"op": "warning", "message": TEXT, "refusal": {...}?}   show this
    {"op": "ran", "procedures": [KEY, ...]}         (1.1, replay clients only)
        the procedures a cell ran, recorded or replayed

and the one a frontend sends: ``{"op": "reset", "procedures": [KEY, ...]?,
"from": {KEY: INDEX}?}``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Literal

from tactus_kernel.engine.records import field_path

PROTOCOL = "1.1"
PROTOCOL_MAJOR = 1
COMM_TARGET = "tactus"
# Where the JSON Schema of metadata.tactus is checked in (the extension reads it).
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "labextension" / "src" / "schema" / "metadata.schema.json"


class CommInputError(ValueError):
    """Open data, a message or metadata the kernel refuses: which field,
    what was found, and the sentence a person reads."""

    kind = "input"

    def __init__(self, message: str, field: str = "", found: Any = None) -> None:
        super().__init__(message)
        self.field, self.found = field, found


class MetadataError(CommInputError):
    """The notebook's ``metadata.tactus`` block cannot be used."""

    kind = "metadata"


class ProtocolVersionError(CommInputError):
    """The other side speaks a MAJOR version of the comm protocol we do not know."""

    kind = "protocol"


def parse_version(value: Any, who: str = "this kernel") -> tuple[int, int]:
    """``"MAJOR.MINOR"`` as two numbers; absent (None) is ``1.0``.
    Raises ProtocolVersionError for anything else, or an unknown MAJOR
    (the message says `who` cannot read it: the kernel, or a client)."""
    if value is None:
        return 1, 0
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ProtocolVersionError(
            f'the tactus comm protocol version must be "MAJOR.MINOR", found {json.dumps(value)[:40]}',
            "protocol",
            value,
        )
    major, minor = int(parts[0]), int(parts[1])
    if major != PROTOCOL_MAJOR:
        raise ProtocolVersionError(
            f"{who} speaks version {PROTOCOL} of the tactus comm protocol and cannot read version "
            f"{value} (a newer or older {'frontend' if who == 'this kernel' else 'kernel'}): update the "
            "Tactus kernel or the extension so their major versions match",
            "protocol",
            value,
        )
    return major, minor


def refusal(exc: CommInputError, message: str) -> dict[str, Any]:
    """The ``warning`` op telling a frontend what was refused and why (data, not only text)."""
    return {
        "op": "warning",
        "message": message,
        "protocol": PROTOCOL,
        "refusal": {"kind": exc.kind, "field": exc.field, "found": _jsonable(exc.found)},
    }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)[:80]
    return value


# ------------------------------------------------------------------ schema
@functools.cache
def models() -> dict[str, Any]:
    """The pydantic models, built on first use (pydantic costs start-up
    time a kernel that is never sent anything need not pay)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

    class CheckpointEntry(BaseModel):
        """One recorded call. ``value`` is required (``null`` is a value): an
        entry without one would replay as nil without a word, so both the
        kernel and the extension refuse it. Other fields (``request``,
        ``message``, ``messages``, ...) are kept as they are."""

        model_config = ConfigDict(extra="allow", title="CheckpointEntry")
        kind: str = Field(description='"step", "human", "agent", "procedure", "sleep", ...')
        name: str = Field(description="the step name; for a human request its hitl key, else its message")
        value: Any = Field(description="the recorded result, or the human's answer (null is a value)")
        at: str = Field(description="ISO 8601 UTC time it was recorded")

    class ProcedureRecord(BaseModel):
        """Everything recorded about one procedure (or one child call's run)."""

        model_config = ConfigDict(extra="allow", title="ProcedureRecord")
        checkpoints: list[CheckpointEntry] = Field(default_factory=list)
        children: dict[str, ProcedureRecord] | None = Field(
            default=None,
            exclude_if=lambda v: v is None,
            description="child procedures' records, by call (name#n), checked like the top ones",
        )

    class TactusMetadata(BaseModel):
        """The notebook's ``metadata.tactus`` block."""

        model_config = ConfigDict(extra="allow", title="TactusMetadata")
        version: Literal[1]
        procedures: dict[str, ProcedureRecord] = Field(default_factory=dict)

    class ClientOptions(BaseModel):
        """The comm's open data: the notebook's metadata and the client's
        options. Options this kernel does not know are ignored (a newer client)."""

        model_config = ConfigDict(extra="allow")
        tactus: Any = None  # checked by parse_metadata, which names the bad field
        protocol: StrictStr | None = None  # checked by parse_version
        replay: StrictBool = False
        allow_divergence: StrictBool = False
        strict: StrictBool = False  # a call with no record is an error (replay --strict)
        answers: dict[StrictStr, Any] = Field(default_factory=dict)
        procedure_params: dict[StrictStr, dict[StrictStr, Any]] = Field(default_factory=dict)

    class ResetOp(BaseModel):
        """``{"op": "reset", "procedures": [KEY, ...]}``; no list: all. Other
        fields (``from``) are kept for whoever reads them."""

        model_config = ConfigDict(extra="allow")
        procedures: list[StrictStr] | None = None

    return {
        "CheckpointEntry": CheckpointEntry,
        "ProcedureRecord": ProcedureRecord,
        "TactusMetadata": TactusMetadata,
        "ClientOptions": ClientOptions,
        "ResetOp": ResetOp,
    }


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``metadata.tactus``, as checked in for the extension."""
    schema: dict[str, Any] = models()["TactusMetadata"].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$comment"] = (
        "Generated by `python -m tactus_kernel.protocol --schema` from tactus_kernel/protocol.py; "
        "do not edit (tests/test_protocol.py fails when it is stale)."
    )
    schema["x-protocol"] = PROTOCOL
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def parse_metadata(data: Any) -> dict[str, dict[str, Any]]:
    """Validate a ``metadata.tactus`` block and return its procedure records.
    Raises MetadataError naming the first bad field, so the user can find it in the JSON."""
    if data is None:
        return {}
    from pydantic import ValidationError

    try:
        parsed = models()["TactusMetadata"].model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # not "a valid dictionary or instance of ProcedureRecord": the user never saw that class
        msg = "Input should be an object" if first["type"] == "model_type" else first["msg"]
        where = field_path(first["loc"])
        raise MetadataError(f"{where}: {msg} (found {first.get('input')!r:.80})", where, first.get("input")) from None
    return {key: rec.model_dump() for key, rec in parsed.procedures.items()}


def _first_error(exc: Any, root: str) -> tuple[str, str, Any]:
    first = exc.errors()[0]
    where = ".".join([root, *(str(p) for p in first["loc"])]) if first["loc"] else root
    return where, f"{where}: {first['msg']} (found {first.get('input')!r:.60})", first.get("input")


def parse_open(data: Any) -> dict[str, Any]:
    """The open data, checked: the fields it set (``tactus`` included), and
    ``protocol`` as the client's version. Raises CommInputError (a
    ProtocolVersionError for an unknown major) naming the first bad field."""
    from pydantic import ValidationError

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CommInputError(
            f"the comm's open data must be an object, found {type(data).__name__} {data!r:.60}", "data", data
        )
    parse_version(data.get("protocol") if isinstance(data.get("protocol"), str) else None)
    try:
        parsed = models()["ClientOptions"].model_validate(data)
    except ValidationError as exc:
        where, text, found = _first_error(exc, "data")
        raise CommInputError(f"the comm's open data: {text}", where, found) from None
    return dict(parsed.model_dump(exclude_unset=True))


def parse_op(data: Any) -> dict[str, Any] | None:
    """A message from the frontend, checked; None for an op this kernel does
    not know (ignored, as the protocol says). Raises CommInputError."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise CommInputError(f"a comm message must be an object, found {type(data).__name__} {data!r:.60}", "data")
    parse_version(data.get("protocol") if "protocol" in data else None)
    if data.get("op") != "reset":
        return None
    try:
        parsed = models()["ResetOp"].model_validate(data)
    except ValidationError as exc:
        where, text, found = _first_error(exc, "reset")
        raise CommInputError(f"reset needs a list of procedure names: {text}", where, found) from None
    return dict(parsed.model_dump())


# --------------------------------------------------------------------- ops
def _node(procedures: dict[str, Any], path: str, create: bool) -> dict[str, Any] | None:
    """The record at a key or nested path ("root/child#1"), made when absent and `create`."""
    root, *rest = path.split("/")
    node = procedures.get(root)
    if not isinstance(node, dict):
        if not create:
            return None
        node = procedures[root] = {"checkpoints": []}
    for part in rest:
        children = node.get("children")
        if not isinstance(children, dict):
            if not create:
                return None
            children = node["children"] = {}
        child = children.get(part)
        if not isinstance(child, dict):
            if not create:
                return None
            child = children[part] = {"checkpoints": []}
        node = child
    return node


def fold_op(procedures: dict[str, Any], op: Any) -> list[str]:
    """Fold one kernel op into `procedures` (``metadata.tactus.procedures``,
    changed in place); returns the top-level keys it changed. Ops not known
    here, and ops of an unknown major version, change nothing (the caller
    may warn: :func:`op_version_problem`). The TypeScript twin is
    ``applyOp`` in labextension/src/merge.ts."""
    if not isinstance(op, dict) or op_version_problem(op) is not None:
        return []
    kind, data = op.get("op"), op.get("procedures")
    touched: list[str] = []
    if kind == "update" and isinstance(data, dict):
        for key, rec in data.items():
            if isinstance(rec, dict):
                procedures[key] = rec
                touched.append(key)
    elif kind == "append" and isinstance(data, dict):
        for path, change in data.items():
            if not isinstance(change, dict):
                continue
            node = _node(procedures, path, create=True)
            assert node is not None
            for field, value in change.items():
                if field == "from":
                    continue
                if field == "checkpoints":
                    start = change.get("from", 0)
                    old = node.get("checkpoints")
                    kept = old[:start] if isinstance(old, list) and isinstance(start, int) else []
                    node["checkpoints"] = kept + list(value)
                else:
                    node[field] = value
            root = path.split("/", 1)[0]
            if root not in touched:
                touched.append(root)
    elif kind == "delete" and isinstance(data, list):
        for key in data:
            if isinstance(key, str) and procedures.pop(key, None) is not None:
                touched.append(key)
    return touched


def op_version_problem(op: dict[str, Any]) -> str | None:
    """Why an op cannot be read (its major version is unknown), or None."""
    try:
        parse_version(op.get("protocol"), "this client")
    except ProtocolVersionError as exc:
        return f"Tactus: ignored a {op.get('op')!r} op from the kernel: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m tactus_kernel.protocol --schema [--check]``: print the JSON
    Schema, write it to the checked-in file, or check that file is current."""
    args = sys.argv[1:] if argv is None else argv
    text = schema_text()
    if args == ["--schema"]:
        SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
        return 0
    if args == ["--schema", "--check"]:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
        if current != text:
            print(f"{SCHEMA_FILE} is stale: run `python -m tactus_kernel.protocol --schema`", file=sys.stderr)
            return 1
        return 0
    if args == ["--print"]:
        sys.stdout.write(text)
        return 0
    print("usage: python -m tactus_kernel.protocol --schema [--check] | --print", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
