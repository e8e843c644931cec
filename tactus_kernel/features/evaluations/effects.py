"""The Python half of ``evaluations({...})`` and ``evaluation({...})``
(lua/evaluations.lua): check the declaration at once and keep it for the
procedure it belongs to.

Loaded at start-up with the other effect modules, so it imports nothing
heavy: pydantic-evals is imported by :mod:`tactus_kernel.features.evaluations.suite` only
when a cell declares evaluations.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.errors import tagged
from tactus_kernel.engine.values import to_plain

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import CellRun, RunState, Runtime
    from tactus_kernel.features.evaluations.suite import Consistency, Suite


@dataclass
class EvalRegistry:
    """The evaluations and consistency runs declared in one kernel, by procedure."""

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
        from tactus_kernel.features.evaluations.suite import Suite

        if isinstance(item, Suite):
            self.suites[str(item.procedure)] = item
        else:
            self.consistency[str(item.procedure)] = item

    # ---- a run observer (runtime.run_observers): only cell_closed matters
    def run_started(self, run: RunState) -> None:
        pass

    def run_ended(self, run: RunState, ok: bool, error: Any) -> None:
        pass

    async def cell_settling(self, cell: CellRun) -> None:
        pass

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


_REGISTRIES: weakref.WeakKeyDictionary[Runtime, EvalRegistry] = weakref.WeakKeyDictionary()


def registry(runtime: Runtime) -> EvalRegistry:
    reg = _REGISTRIES.get(runtime)
    if reg is None:
        reg = _REGISTRIES[runtime] = EvalRegistry(runtime)
    return reg


async def _declare(runtime: Runtime, run: RunState, request: Any, what: str) -> tuple[Any, ...]:
    from tactus_kernel.engine.runtime import BridgeError
    from tactus_kernel.features.evaluations.suite import EvalConfigError, parse_consistency, parse_suite

    proc = request["procedure"]
    config = to_plain(request["config"])
    try:
        item = (parse_suite if what == "evaluations" else parse_consistency)(
            config, None if proc is None else str(proc), runtime.root
        )
    except EvalConfigError as exc:
        raise BridgeError(tagged("EvaluationError", f"{what}: {exc}")) from None
    except ImportError as exc:  # the agents extra brings pydantic-evals and pydantic-ai
        message = f"{what}: cannot import {exc.name}: pip install 'tactus-kernel[agents]'"
        raise BridgeError(tagged("EvaluationError", message)) from None
    registry(runtime).add(item, run.cell)
    return ()


async def evaluations_effect(runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
    return await _declare(runtime, run, request, "evaluations")


async def evaluation_effect(runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
    return await _declare(runtime, run, request, "evaluation")


def register(runtime: Runtime) -> None:
    runtime.run_observers.append(registry(runtime))
    runtime.effects.update({"eval.evaluations": evaluations_effect, "eval.evaluation": evaluation_effect})
