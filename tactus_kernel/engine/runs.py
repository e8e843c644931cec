"""What a run is made of: a declared procedure, a running procedure, one
cell execution, and the session (records, host, answers) a run sees.

A :class:`Session` is what an isolated run replaces: the spec runner and
the evaluations run a procedure on throw-away records, in batch mode, with
its output captured, while the notebook's own session stays as it was.
The replacement is scoped (:func:`scoped`) to the asyncio task that runs
it and the tasks it starts, so nothing else running meanwhile (a comm
message, another cell's timer) ever sees it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tactus_kernel.engine.fields import FieldSpec
    from tactus_kernel.engine.host import Host
    from tactus_kernel.engine.records import Records, RunLog


@dataclass
class ProcedureSpec:
    """A declared procedure, as far as Python needs to know it."""

    key: str
    params: dict[str, FieldSpec]
    outputs: dict[str, FieldSpec]
    config: dict[str, Any]
    cell: str


@dataclass
class RunState:
    """One running procedure (or a cell's top-level code)."""

    id: int
    key: str
    log: RunLog
    spec: ProcedureSpec | None
    cell: CellRun
    params: dict[str, Any] = field(default_factory=dict)
    # How a person knows this run (cards, the timeline, the record's "title"):
    # a named procedure by its key; a cell's own code, a procedure with no
    # name (keyed by the cell id, a UUID) and their children by the cell
    # ("cell 3: local ok = Human.approve(…"). See Runtime._new_run.
    title: str = ""


@dataclass
class CellRun:
    """What one cell execution has touched."""

    label: str
    key: str
    logs: dict[str, RunLog] = field(default_factory=dict)
    declared: list[str] = field(default_factory=list)
    collecting: bool = True
    title: str = ""  # see RunState.title and cell_title


def source_key(code: str) -> str:
    """Stable identity for a cell when the client sends no cell id."""
    return "cell-" + hashlib.sha256(code.encode("utf-8")).hexdigest()[:12]


TITLE_LINE = 48  # characters of a cell's first line in its title


def cell_title(label: str, code: str) -> str:
    """``cell 3: local ok = Human.approve({message = "Sh…``: the cell's label
    (from its execution count) and its first non-blank line, shortened."""
    name = label.strip("[]")
    line = next((s.strip() for s in code.splitlines() if s.strip()), "")
    if len(line) > TITLE_LINE:
        line = line[: TITLE_LINE - 1].rstrip() + "…"
    return f"{name}: {line}" if line else name


@dataclass
class Session:
    """Where runs read and write: the runtime has one, an isolated run its own."""

    records: Records
    host: Host
    # Batch mode (replay in CI): a human request with no recorded answer
    # fails at once instead of waiting; `answers` may supply some.
    batch: bool = False
    answers: dict[str, Any] = field(default_factory=dict)
    # Params given from outside (``tactus-kernel replay -P``) for procedures
    # run by their own cell: {procedure: {param: value}}.
    param_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    allow_divergence: bool = False
    # Agents use their offline model whatever they declare (a spec scenario).
    offline: bool = False


@dataclass(frozen=True)
class Scope:
    """An isolated run in progress: its runtime, session and cell."""

    owner: object  # the Runtime
    session: Session
    cell: CellRun


CURRENT: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("tactus_scope", default=None)


@contextlib.contextmanager
def scoped(scope: Scope) -> Iterator[Scope]:
    """Make `scope` current in this task (and the tasks and callbacks it
    starts) until the block ends."""
    token = CURRENT.set(scope)
    try:
        yield scope
    finally:
        CURRENT.reset(token)


def offline() -> bool:
    """Whether the run in progress is an isolated one that asked agents to
    stay offline (read by the agents feature beside ``TACTUS_OFFLINE``)."""
    scope = CURRENT.get()
    return scope is not None and scope.session.offline
