"""The evaluations declared in a kernel, by procedure (``evaluations({...})``,
``evaluation({...})``). Light: pydantic-evals is imported by
:mod:`tactus_kernel.features.evaluations.running` only when one runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tactus_kernel.engine.feature import Observer

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun
    from tactus_kernel.engine.runtime import Runtime
    from tactus_kernel.features.evaluations.declarations import Consistency, Suite


@dataclass
class EvalRegistry(Observer):
    """The evaluations and consistency runs declared in one kernel, by
    procedure (an observer: a declaration that names no procedure finds its
    procedure when its cell closes)."""

    runtime: Runtime
    suites: dict[str, Suite] = field(default_factory=dict)
    consistency: dict[str, Consistency] = field(default_factory=dict)
    pending: list[tuple[CellRun, Suite | Consistency]] = field(default_factory=list)

    def add(self, item: Suite | Consistency, cell: CellRun) -> None:
        if item.procedure is None:
            self.pending.append((cell, item))
        else:
            self._keep(item)

    def _keep(self, item: Suite | Consistency) -> None:
        if item.what == "evaluations":
            self.suites[str(item.procedure)] = item  # type: ignore[assignment]
        else:
            self.consistency[str(item.procedure)] = item  # type: ignore[assignment]

    def cell_closed(self, cell: CellRun) -> None:
        """Declarations that name no procedure belong to the procedure their
        cell declares, else to the last one declared before (as
        specifications do)."""
        keep = []
        for owner, item in self.pending:
            if owner is not cell:
                keep.append((owner, item))
                continue
            target = cell.declared[0] if cell.declared else next(reversed(self.runtime.procedures), None)
            if target is None:
                self.runtime.host.write(
                    "stderr",
                    f"Tactus: {item.what}() found no procedure to belong to; "
                    f"declare the procedure first or name it: "
                    f'{item.what}("name", {{...}})\n',
                )
                continue
            item.procedure = target
            self._keep(item)
        self.pending = keep
