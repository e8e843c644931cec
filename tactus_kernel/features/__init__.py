"""Python halves of the primitives that wait (effects).

A Lua primitive yields a request table ``{kind = ..., run = ...}``; the
runtime's driver looks the kind up in ``runtime.effects`` and awaits the
handler, which returns the values the Lua call returns (or raises
BridgeError with a tagged message, raised as a Lua error at the call).
Each module here registers its kinds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime

# Modules with a ``register(runtime)`` function, registered in this order.
EFFECT_MODULES = [
    "sleep",
    "human.effects",
    "agents.effects",
    "composition.effects",
    "evaluations.effects",
    "compat.effects",
    "telemetry",  # last: it wraps the human and agent-turn effects
]


def register_effects(runtime: Runtime) -> None:
    for name in EFFECT_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(runtime)
