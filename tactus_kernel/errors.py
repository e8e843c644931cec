"""How a failed cell is reported: one error, a precise name, the Lua traceback.

Errors raised by the kernel's own checks travel through Lua as strings that
start with their class name (``ParamError: ...``), so they can be caught with
``pcall`` like any Lua error and still be reported under that name.
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
    "GuardError",
    "DependencyError",
    "SpecificationError",
    "EvaluationError",
    "EvaluationThresholdError",
    "SandboxError",
    "CheckpointError",
    "NoRecordedAnswer",
    "HumanTimeout",
    "MetadataError",
    "ProcedureError",
    "AgentError",
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


def clean_traceback(tb: str) -> list[str]:
    """Lua traceback lines without the kernel's own frames."""
    lines = []
    for line in tb.splitlines():
        s = line.strip()
        if s.startswith("[tactus") or s.startswith("[C]: in ?") or s == "(...tail calls...)":
            continue
        if s.startswith("[C]: in function 'xpcall'") or s.startswith("[C]: in function 'error'"):
            continue
        lines.append(line)
    return lines


def from_lua(message: str, traceback: str | None, ename: str | None = None) -> CellError:
    """Build a CellError from what the driver got back from a dead coroutine."""
    name = ename or classify(message)
    tb = clean_traceback(traceback or "")
    # The first traceback line repeats the message; keep it as the header.
    if tb and tb[0] == message:
        tb = tb[1:]
    if tb and tb[-1].strip() == "stack traceback:":
        tb = tb[:-1]
    evalue = message.replace(f"{name}: ", "", 1) if name in KNOWN else message
    return CellError(name, evalue, [f"{name}: {evalue}", *tb])
