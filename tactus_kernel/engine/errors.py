"""How a failed cell is reported: one error, a precise name, the Lua
traceback, and the same as data (:class:`Failure`).

Errors raised by the kernel's own checks travel through Lua as strings that
start with their class name (``ParamError: ...``), so they can be caught with
``pcall`` like any Lua error and still be reported under that name. That
name is believed only for text the kernel raised itself (the Lua prelude
keeps it: see ``mark_raised`` in lua/sandbox.lua); a cell's own
``error("ParamError: x")`` is a LuaError.

What the error is about travels beside the text, never in it: a
:class:`KernelError` raised in Python carries a :class:`Failure`, the text
it becomes in Lua is remembered with that failure (:func:`raise_text`), and
when the cell dies of that text the failure is found again
(:func:`from_lua`). The kernel sends it with the error reply (key
``"tactus"``), so a client reads the kind, the procedure, the recorded and
asked calls or the request without parsing the message people read.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Any

# Error names the kernel itself raises (the default is LuaError).
KNOWN = {
    "LuaSyntaxError",
    "LuaMemoryError",
    "KeyboardInterrupt",
    "ParamError",
    "OutputError",
    "DivergenceError",
    "NotRecordableError",
    "NotRecordedError",
    "GuardError",
    "DependencyError",
    "SpecificationError",
    "EvaluationError",
    "EvaluationThresholdError",
    "SandboxError",
    "CheckpointError",
    "NoRecordedAnswer",
    "HumanTimeout",
    "ProcedureTimeout",
    "MetadataError",
    "ProcedureError",
    "AgentError",
    "InternalError",
}

# The key of a Failure (as JSON) in an error reply and an IOPub ``error``
# message, beside ename/evalue/traceback; clients that do not know it ignore it.
FAILURE_KEY = "tactus"

# Where Lua raised an error, ahead of its message: ``[cell 2]:3: `` (a chunk
# name in brackets, a line), repeated when an error is raised again. The one
# place this syntax is known (see strip_positions and cell_positions).
_POSITIONS = re.compile(r"^(?:\[[^\]]*\]:\d+: )+")
_AT = re.compile(r"\[cell (\d+)\]:(\d+):")
_NAMED = re.compile(r"^([A-Z][A-Za-z]*(?:Error|Interrupt|Answer|Timeout)): ")  # after the positions


def strip_positions(message: str) -> str:
    """`message` without the Lua positions it starts with (``[cell 2]:3: ``)."""
    return _POSITIONS.sub("", message)


def cell_positions(text: str) -> list[tuple[int, int]]:
    """Every ``[cell N]:LINE:`` in `text`, as (N, LINE), in order."""
    return [(int(cell), int(line)) for cell, line in _AT.findall(text)]


def call_text(entry: dict[str, Any] | None, params: bool = False) -> str:
    """A recorded or asked call as a divergence shows it: ``step 'fetch'``,
    ``the end of the procedure``, ``nothing (the record ends here)``; with
    `params`, a procedure call's params too: ``procedure 'build' with
    params {"env": "prod"}``."""
    import json

    if entry is None:
        return "nothing (the record ends here)"
    if entry.get("kind") == "end":
        return "the end of the procedure"
    text = f"{entry.get('kind')} {entry.get('name')!r}"
    if params and "params" in entry:
        text += f" with params {json.dumps(entry['params'], ensure_ascii=False, sort_keys=True)}"
    return text


@dataclass
class Failure:
    """Why a cell failed, as data: what the kernel sends beside ename/evalue.

    Every failure has a kind (the error's name, as the reply's ``ename``)
    and a message (without the name and without the Lua position); the
    other fields belong to some kinds and are None elsewhere. The JSON form
    (:meth:`to_json`) leaves the None fields out.
    """

    kind: str
    message: str
    cell: int | None = None  # the N of ``[cell N]`` where it was raised, and the line there
    line: int | None = None
    trace: list[list[int]] = dataclasses.field(default_factory=list)  # [cell, line] of each cell frame, innermost first
    procedure: str | None = None  # the record key of the procedure it is about
    # DivergenceError: the checkpoint (1-based), what the record holds there
    # (None: the record ends) and what the code asked for ({"kind": "end"}:
    # the procedure ended). `divergence` is "call" (another call),
    # "params" (the same child procedure with other params: the entries then
    # carry "params") or "request" (the same agent turn sent another request:
    # the message says which fields changed).
    divergence: str | None = None
    position: int | None = None
    recorded: dict[str, Any] | None = None
    asked: dict[str, Any] | None = None
    # NoRecordedAnswer / HumanTimeout: the request ({"kind", "name", "message",
    # "text": how errors name it, e.g. 'Human.input "Your name?"'}) and the
    # key an answer is given under (--answer KEY=VALUE).
    request: dict[str, Any] | None = None
    answer_key: str | None = None
    # ParamError / OutputError: the param or output field at fault.
    field: str | None = None
    # ProcedureError: the failure of the child procedure it wraps.
    cause: Failure | None = None

    @property
    def text(self) -> str:
        """``Kind: message``: the Lua error text of a failure raised by the kernel."""
        return f"{self.kind}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict without the fields this kind does not have."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == []:
                continue
            out[f.name] = value.to_json() if isinstance(value, Failure) else value
        return out

    @classmethod
    def from_json(cls, data: Any) -> Failure | None:
        """A failure read back from :meth:`to_json` (keys it does not know are
        ignored); None when `data` is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            return None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["message"] = str(values.get("message", ""))
        values["cause"] = cls.from_json(values.get("cause"))
        try:
            return cls(**values)
        except TypeError:
            return None

    def at(self, message: str) -> Failure:
        """This failure placed where Lua raised `message` (its first
        ``[cell N]:LINE:``), unless it knows its place already."""
        if self.cell is not None:
            return self
        head = message[: len(message) - len(strip_positions(message))]
        found = cell_positions(head)
        if not found:
            return self
        return replace(self, cell=found[0][0], line=found[0][1])


class KernelError(Exception):
    """An error the kernel raises with its data. In Python its text is the
    failure's message; raised into Lua it becomes ``Kind: message``, and the
    cell that dies of it reports this failure (see raise_text)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


# The failures whose text the kernel raised into Lua, by that text: the
# Python side of mark_raised in lua/sandbox.lua. A Lua error is a string
# (cells match on it, pcall returns it), so the data waits here until the
# cell dies of that string. Bounded like its Lua twin; a text raised again
# maps to its latest failure.
_RAISED: OrderedDict[str, Failure] = OrderedDict()
RAISED_MAX = 256


def raise_text(failure: Failure) -> str:
    """The Lua error text of `failure`, remembered so :func:`from_lua` finds the failure again."""
    text = failure.text
    _RAISED[text] = failure
    _RAISED.move_to_end(text)
    while len(_RAISED) > RAISED_MAX:
        _RAISED.popitem(last=False)
    return text


def raised_failure(message: str) -> Failure | None:
    """The failure the kernel raised as `message` (its positions aside), if any."""
    return _RAISED.get(strip_positions(message))


class BridgeError(Exception):
    """Raised inside a bridge function or an effect handler; its text
    (already tagged with an error name) becomes the Lua error message.
    (Here, not in bridge.py, so that limits.py can raise it without
    importing the bridge; bridge.py hands it on.)"""


class ParamError(ValueError):
    """A param or an output does not match its declaration; `field` names it when one is at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def failure(self) -> Failure:
        """This error as data."""
        return Failure("ParamError", str(self), field=self.field)


@dataclass
class CellError(Exception):
    """A cell failed; ename/evalue/traceback as Jupyter's error output wants them."""

    ename: str
    evalue: str
    traceback: list[str] = dataclasses.field(default_factory=list)
    failure: Failure = None  # type: ignore[assignment]  # set in __post_init__ when not given

    def __post_init__(self) -> None:
        if self.failure is None:
            self.failure = Failure(self.ename, strip_positions(self.evalue)).at(self.evalue)

    def __str__(self) -> str:
        return f"{self.ename}: {self.evalue}"

    @classmethod
    def simple(cls, ename: str, evalue: str) -> CellError:
        """An error with no Lua traceback (raised by the kernel itself)."""
        return cls(ename, evalue, [f"{ename}: {evalue}"])

    @classmethod
    def of(cls, failure: Failure) -> CellError:
        """The error of a failure the kernel found in Python (no Lua traceback)."""
        return cls(failure.kind, failure.message, [failure.text], failure)


def internal_error(exc: BaseException, where: str) -> CellError:
    """A fault of the kernel's own Python code while it ran `where` (a cell
    label, a bridge function...), as the error a cell reports."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    what = type(exc).__name__ + (f": {detail}" if detail else "")
    return CellError.simple(
        "InternalError", f"{where}: the kernel failed ({what}); the kernel is still running and keeps its checkpoints"
    )


def tagged(ename: str, message: str) -> str:
    """A message that keeps its error name through a Lua ``error()``."""
    return f"{ename}: {message}"


def not_utf8(exc: UnicodeDecodeError) -> str:
    """What to say when Lua hands the kernel a string that is not UTF-8 text
    (``"\\xff"`` in a message, a name or an option)."""
    return f"a string given to the kernel is not valid UTF-8 text ({exc.reason} at byte {exc.start + 1})"


def classify(message: str) -> str:
    """The error name for a Lua error message."""
    m = _NAMED.match(strip_positions(message))
    if m and m.group(1) in KNOWN:
        return m.group(1)
    if "not enough memory" in message:
        return "LuaMemoryError"
    return "LuaError"


def _kernel_frame(frame: str) -> bool:
    return frame.startswith("[tactus") or frame == "(...tail calls...)"


def clean_traceback(tb: str) -> list[str]:
    """Lua traceback lines without the kernel's own frames: its preludes'
    (``[tactus sandbox]``, ...) and the C functions they called (the
    ``raw_xpcall`` that runs a procedure body, the driver's
    ``coroutine.yield``), so what is left is cell code and the library
    calls it made. A C frame belongs to its caller, the next real frame
    down; ``error`` itself is left out, as Python leaves out ``raise``."""
    lines = tb.splitlines()
    frames = [line.strip() for line in lines]
    out = []
    for i, (line, frame) in enumerate(zip(lines, frames, strict=True)):
        if _kernel_frame(frame) or frame.startswith("[C]: in function 'error'"):
            continue
        if frame.startswith("[C]: "):
            caller = next((f for f in frames[i + 1 :] if f != "(...tail calls...)"), None)
            if caller is None or caller.startswith("[tactus") or caller.startswith("[C]: in ?"):
                continue
        out.append(line)
    return out


def from_lua(
    message: str, traceback: str | None, ename: str | None = None, shown: str | None = None, trusted: bool = True
) -> CellError:
    """Build a CellError from what the driver got back from a dead coroutine.

    The "Name: " a message starts with is its kind only when the kernel
    raised that message (`trusted`): a cell's ``error("NoRecordedAnswer: x")``
    is a LuaError, not a kernel error it pretends to be. `shown`: how to
    show an error value that is not a string (a table as its Lua
    constructor) in place of `message`, its tostring."""
    name = ename or (classify(message) if trusted else "LuaError")
    text = traceback or ""
    # The traceback starts with the message (of one line or more): it is the header.
    if text.startswith(message + "\n") or text == message:
        text = text[len(message) + 1 :]
    tb = clean_traceback(text)
    if tb and tb[-1].strip() == "stack traceback:":
        tb = tb[:-1]
    found = raised_failure(message) if trusted else None
    if shown is not None:
        message = shown
    evalue = message.replace(f"{name}: ", "", 1) if name in KNOWN else message
    if found is None or found.kind != name:
        found = Failure(name, strip_positions(evalue))
    trace = [list(at) for line in tb for at in cell_positions(line)[:1]]
    failure = replace(found.at(message), trace=trace)
    return CellError(name, evalue, [f"{name}: {evalue}", *tb], failure)
