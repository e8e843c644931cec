"""The Python half of ``evaluations({...})`` and ``evaluation({...})``
(evaluations.lua): check the declaration at once and keep it for the
procedure it belongs to.

Loaded at start-up with the other features, so it imports nothing heavy:
pydantic-evals is imported by the declarations only when a cell declares
evaluations, and by :mod:`tactus_kernel.features.evaluations.running` when
they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.bridge import BridgeError
from tactus_kernel.engine.errors import tagged
from tactus_kernel.engine.feature import Feature, Prelude
from tactus_kernel.engine.values import to_plain
from tactus_kernel.features.evaluations.registry import EvalRegistry

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import RunState
    from tactus_kernel.engine.runtime import Runtime


async def _declare(runtime: Runtime, run: RunState, request: Any, what: str) -> tuple[Any, ...]:
    from tactus_kernel.features.evaluations.declarations import EvalConfigError, parse_consistency, parse_suite

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


class EvaluationsFeature(Feature[EvalRegistry]):
    """``evaluations({...})`` and ``evaluation({...})``; ``%tactus eval`` runs them."""

    name = "evaluations"
    preludes = (Prelude("tactus_kernel.features.evaluations", "evaluations.lua"),)

    def new_state(self, runtime: Runtime) -> EvalRegistry:
        return EvalRegistry(runtime)

    def install(self, runtime: Runtime, state: EvalRegistry) -> None:
        runtime.add_observer(state)
        runtime.register_effect("eval.evaluations", evaluations_effect)
        runtime.register_effect("eval.evaluation", evaluation_effect)


def registry(runtime: Runtime) -> EvalRegistry:
    """The evaluations declared in `runtime`."""
    return runtime.state(EvaluationsFeature)
