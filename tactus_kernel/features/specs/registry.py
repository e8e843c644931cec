"""Specifications declared in a kernel: ``specifications([[Gherkin]])``
(Lua side: ``specs.lua``, with ``step(text, fn)``), parsed and kept by
procedure. The scenarios run in :mod:`tactus_kernel.features.specs.runner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.bridge import BridgeError
from tactus_kernel.engine.errors import tagged
from tactus_kernel.engine.feature import Feature, Observer, Prelude

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun, RunState
    from tactus_kernel.engine.runtime import Runtime


class SpecError(ValueError):
    """Gherkin that does not parse, or a specification without a procedure."""


@dataclass
class Spec:
    """The specifications of one procedure."""

    procedure: str
    text: str
    feature: str
    pickles: list[dict[str, Any]]


def parse(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Gherkin text -> (feature name, pickles). Raises SpecError with the parser's message."""
    from gherkin.errors import CompositeParserException, ParserError
    from gherkin.parser import Parser
    from gherkin.pickles.compiler import Compiler

    try:
        document: dict[str, Any] = dict(Parser().parse(text))
    except (CompositeParserException, ParserError) as exc:
        raise SpecError(f"the Gherkin does not parse: {exc}") from None
    feature = document.get("feature")
    if not feature:
        raise SpecError("the Gherkin has no Feature")
    document["uri"] = "specifications"
    pickles: list[dict[str, Any]] = [dict(p) for p in Compiler().compile(document)]  # type: ignore[arg-type]
    if not pickles:
        raise SpecError(f"feature {feature.get('name')!r} has no scenarios")
    return str(feature.get("name", "")), pickles


class SpecRegistry(Observer):
    """Specifications declared in this kernel, by procedure."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.specs: dict[str, Spec] = {}
        self.pending: list[tuple[CellRun, str, str, list[dict[str, Any]]]] = []

    def declare(self, text: str, procedure: str | None, cell: CellRun) -> None:
        feature, pickles = parse(text)
        if procedure is not None:
            self.specs[procedure] = Spec(procedure, text, feature, pickles)
        else:
            self.pending.append((cell, text, feature, pickles))

    def cell_closed(self, cell: CellRun) -> None:
        """Specifications that name no procedure belong to the procedure their
        cell declares, else to the last one declared before."""
        keep = []
        for owner, text, feature, pickles in self.pending:
            if owner is not cell:
                keep.append((owner, text, feature, pickles))
                continue
            target = cell.declared[0] if cell.declared else next(reversed(self.runtime.procedures), None)
            if target is None:
                self.runtime.host.write(
                    "stderr",
                    "Tactus: specifications() found no procedure to belong to; "
                    "declare the procedure first or name it: "
                    'specifications("name", [[...]])\n',
                )
                continue
            self.specs[target] = Spec(target, text, feature, pickles)
        self.pending = keep

    async def specifications_effect(self, runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
        """``specifications([procedure,] text)``: parsed now, so bad Gherkin fails its cell."""
        proc = request["procedure"]
        try:
            self.declare(str(request["text"]), None if proc is None else str(proc), run.cell)
        except SpecError as exc:
            raise BridgeError(tagged("SpecificationError", str(exc))) from None
        return ()


def registry(runtime: Runtime) -> SpecRegistry:
    """The specifications declared in `runtime`."""
    return runtime.state(SpecsFeature)


class SpecsFeature(Feature[SpecRegistry]):
    """``specifications([[...]])`` and ``step(text, fn)``; ``%tactus test`` runs them."""

    name = "specs"
    preludes = (Prelude("tactus_kernel.features.specs", "specs.lua"),)

    def new_state(self, runtime: Runtime) -> SpecRegistry:
        return SpecRegistry(runtime)

    def install(self, runtime: Runtime, state: SpecRegistry) -> None:
        runtime.add_observer(state)
        runtime.register_effect("bdd.specifications", state.specifications_effect)
