"""Telemetry: OpenTelemetry spans and the JSON-lines audit trail.

:class:`TelemetryFeature` (the last of the default features) installs a
:class:`~tactus_kernel.features.telemetry.hub.TelemetryHub` with the sinks
this process asks for: the OpenTelemetry sink when the
``opentelemetry-api`` package is installed (the ``telemetry`` extra), and
the events sink when ``TACTUS_EVENTS`` names a file. See docs/telemetry.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import TYPE_CHECKING

from tactus_kernel.engine.feature import Feature
from tactus_kernel.features.telemetry.events import ENV, EventsSink
from tactus_kernel.features.telemetry.hub import Sink, TelemetryHub

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime


def install(runtime: Runtime, sinks: list[Sink]) -> TelemetryHub:
    """Feed `sinks` from `runtime`'s runs: observe its runs, and intercept
    its human and agent-turn effects (a span covers the whole call)."""
    hub = TelemetryHub(runtime, sinks)
    runtime.add_observer(hub)
    runtime.add_interceptor(hub)
    return hub


def _wants_otel() -> bool:
    """Spans are made when this process has an OpenTelemetry tracer provider:
    ``OTEL_TRACES_EXPORTER`` names an exporter (the kernel then sets up the
    SDK, see otel.configure_from_env), or the process set one before making
    the runtime (an application embedding it, ``opentelemetry-instrument``, a
    test). Otherwise nothing is installed, not even the API's no-op tracer,
    and a kernel does not import OpenTelemetry at all (that costs its start-up
    10-30 ms). ``OTEL_SDK_DISABLED=true`` turns spans off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip() not in ("", "none"):
        if importlib.util.find_spec("opentelemetry") is None:
            return False
        from tactus_kernel.features.telemetry.otel import configure_from_env

        configure_from_env()
    elif "opentelemetry.trace" not in sys.modules:  # nothing in this process can have set a provider
        return False
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class TelemetryFeature(Feature[None]):
    """Spans and the audit trail, for the runtimes whose process asks for them."""

    name = "telemetry"

    def install(self, runtime: Runtime, state: None) -> None:
        register(runtime)


def register(runtime: Runtime) -> None:
    """Install telemetry in `runtime` with the sinks this process asks for (if any)."""
    sinks: list[Sink] = []
    if _wants_otel():
        from tactus_kernel.features.telemetry.otel import OtelSink

        sinks.append(OtelSink())
    path = os.environ.get(ENV, "").strip()
    if path:
        sinks.append(EventsSink(path, warn=lambda text: runtime.host.write("stderr", text)))
    if sinks:
        install(runtime, sinks)
