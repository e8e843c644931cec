"""What a replay is told and what happened: the data the client fills in
and the CLI, the pytest plugin and the report read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbformat import NotebookNode

from tactus_kernel.engine.errors import Failure
from tactus_kernel.replay.exit_codes import ExitCode

KERNEL_NAME = "tactus"


@dataclass
class ReplayOptions:
    """Everything a replay can be told; the CLI and the plugin fill it in."""

    answers: dict[str, Any] = field(default_factory=dict)
    procedure_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    allow_divergence: bool = False
    timeout: float | None = None  # per cell, seconds
    startup_timeout: float = 60.0
    cwd: str | None = None  # the kernel's working folder; default: the notebook's
    kernel_name: str = KERNEL_NAME
    strict: bool = False  # a call with no record fails (NotRecordedError) instead of running live
    events: str | None = None  # append the kernel's events here (TACTUS_EVENTS, docs/telemetry.md)


@dataclass
class CellReport:
    """One executed code cell."""

    index: int  # position in the executed notebook (0-based)
    number: int  # execution count: the notebook's ``[N]`` prompt and the kernel's ``[cell N]``
    cell_id: str | None
    source: str
    procedures: list[str] = field(default_factory=list)  # records the cell touched
    elapsed: float = 0.0
    status: str = "ok"  # ok | error | timeout | dead
    injected: bool = False


# What each kind of replay failure exits with (any other: a cell failed).
EXIT_CODES = {
    "no-answer": ExitCode.NO_ANSWER,
    "not-recorded": ExitCode.NO_ANSWER,  # strict mode: a call with no record (the same family)
    "divergence": ExitCode.DIVERGENCE,
    "unwritable": ExitCode.INPUT,
}
# The kind of replay failure of a cell error, by the kind of the kernel's failure.
CELL_FAILURES = {"NoRecordedAnswer": "no-answer", "NotRecordedError": "not-recorded", "DivergenceError": "divergence"}
# The failures a replay stops on, even in a cell tagged raises-exception (a cell error ends it too).
STOPS_REPLAY = ("no-answer", "not-recorded", "divergence", "error")


@dataclass
class ReplayFailure:
    """Why a replay stopped."""

    kind: str  # no-answer | not-recorded | divergence | error | timeout | dead-kernel | kernel-start | unwritable
    message: str  # ``ename: evalue`` or the reason
    cell: CellReport | None = None
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)
    data: Failure | None = None  # the kernel's failure, as it sent it (a cell error)

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES.get(self.kind, ExitCode.CELL_ERROR)

    @classmethod
    def of_cell(cls, cell: CellReport, data: Failure, evalue: str, traceback: list[str]) -> ReplayFailure:
        """A cell's error, classified by the failure the kernel sent (never by its text)."""
        kind = CELL_FAILURES.get(data.kind, "error")
        return cls(kind, f"{data.kind}: {evalue}", cell, data.kind, evalue, traceback, data)


@dataclass
class ReplayResult:
    notebook: NotebookNode
    recorded: dict[str, Any] | None  # metadata.tactus before the replay
    cells: list[CellReport] = field(default_factory=list)
    failure: ReplayFailure | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    kernel_pid: int | None = None
    kernel_log: str = ""  # the kernel's stderr, kept when it failed to start or died

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.failure is None else self.failure.exit_code
