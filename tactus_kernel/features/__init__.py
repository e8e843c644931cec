"""The primitives built on the engine, each a :class:`~tactus_kernel.engine.feature.Feature`.

A runtime gets its features from whoever builds it (the kernel, the pytest
plugins, the tests): ``default_runtime(**kw)`` builds one with
:func:`default_features`, the set a kernel runs with.
"""

from __future__ import annotations

from typing import Any

from tactus_kernel.engine.feature import Feature
from tactus_kernel.engine.runtime import Runtime
from tactus_kernel.features.agents.effects import AgentsFeature
from tactus_kernel.features.compat.effects import CompatFeature
from tactus_kernel.features.composition.effects import CompositionFeature
from tactus_kernel.features.evaluations.effects import EvaluationsFeature
from tactus_kernel.features.human.effects import HumanFeature
from tactus_kernel.features.sleep import SleepFeature
from tactus_kernel.features.specs.registry import SpecsFeature
from tactus_kernel.features.telemetry import TelemetryFeature
from tactus_kernel.features.timeline import TimelineFeature

__all__ = ["default_features", "default_runtime"]


def default_features() -> list[Feature[Any]]:
    """The features of a kernel, in the order their Lua preludes need:
    composition wraps ``tool`` (agents) to check dependencies, and compat
    builds on all the others. The timeline comes first so that, as an
    observer, it hears of a run before the others act on it; telemetry
    (installed only when spans or an events file are asked for) last."""
    return [
        TimelineFeature(),
        SleepFeature(),
        HumanFeature(),
        AgentsFeature(),
        CompositionFeature(),
        SpecsFeature(),
        EvaluationsFeature(),
        CompatFeature(),
        TelemetryFeature(),
    ]


def default_runtime(**kwargs: Any) -> Runtime:
    """``Runtime(**kwargs)`` with :func:`default_features`."""
    return Runtime(features=default_features(), **kwargs)
