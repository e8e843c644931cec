"""How a failed cell is reported: one error, a precise name, the Lua traceback.

Errors raised by the kernel's own checks travel through Lua as strings that
start with their class name (``ParamError: ...``), so they can be caught with
``pcall`` like any Lua error and still be reported under that name. That
name is believed only for text the kernel raised itself (the Lua prelude
keeps it: see ``mark_raised`` in lua/sandbox.lua); a cell's own
``error("ParamError: x")`` is a LuaError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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

_POSITION = re.compile(r"^(?:\[[^\]]*\]:\d+: )*")
_NAMED = re.compile(r"^(?:\[[^\]]*\]:\d+: )*([A-Z][A-Za-z]*(?:Error|Interrupt|Answer|Timeout)): ")


class ParamError(ValueError):
    """A param or an output does not match its declaration."""


@dataclass
class CellError(Exception):
    """A cell failed; ename/evalue/traceback as Jupyter's error output wants them."""

    ename: str
    evalue: str
    traceback: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.ename}: {self.evalue}"

    @classmethod
    def simple(cls, ename: str, evalue: str) -> CellError:
        """An error with no Lua traceback (raised by the kernel itself)."""
        return cls(ename, evalue, [f"{ename}: {evalue}"])


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
    m = _NAMED.match(message)
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
    if shown is not None:
        message = shown
    evalue = message.replace(f"{name}: ", "", 1) if name in KNOWN else message
    return CellError(name, evalue, [f"{name}: {evalue}", *tb])
