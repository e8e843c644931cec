"""OpenTelemetry spans for procedure runs, steps, human waits, agent turns
and child procedures (``pip install "tactus-kernel[telemetry]"``).

Only the API (``opentelemetry-api``) is used here, as a library should: the
process that runs the kernel chooses the SDK, exporter and sampler (see
docs/telemetry.md). With none configured the tracer is the API's no-op
one, a run's span does not record, and the hub then skips every per-call
event of that run: no span is made per step.

The tree: ``cell`` > ``procedure NAME`` > ``step NAME`` / ``human REQUEST`` /
``agent NAME`` / ``procedure CHILD`` (a child's run nests under its caller,
or under the agent turn whose tool called it). An agent turn's span is the
current context while pydantic-ai runs, so its instrumentation
(``instrument=True``, ``Agent.instrument_all()``) nests under the turn.
Spans of calls that end at once (a step, a replayed answer) are made when
they end, with their real start and end times.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from tactus_kernel import __version__
from tactus_kernel.features.telemetry.hub import Call, ErrorInfo, RunInfo

log = logging.getLogger("tactus_kernel")

TRACER_NAME = "tactus_kernel"


def configure_from_env() -> bool:
    """Give this process an SDK tracer provider when ``OTEL_TRACES_EXPORTER``
    names exporters (``console``; ``otlp`` with opentelemetry-exporter-otlp)
    and nothing set a provider yet: a kernel started by Jupyter has no other
    way to get one. The exporters are the ones the SDK's own auto-configuration
    finds (entry points ``opentelemetry_traces_exporter``), each behind a batch
    processor; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` apply."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names or names == ["none"] or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("Tactus: OTEL_TRACES_EXPORTER is set but opentelemetry-sdk is not installed: no spans exported")
        return False
    given = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "tactus-kernel"}
    provider = TracerProvider(resource=Resource.create(given))
    for name in names:
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            log.warning("Tactus: OTEL_TRACES_EXPORTER: no span exporter named %r is installed", name)
            continue
        exporter_class = found[0].load()
        # the console exporter's default is sys.stdout, which in a kernel is a cell's output stream
        exporter = exporter_class(out=sys.__stdout__) if name == "console" else exporter_class()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _fail(span: Span, error: ErrorInfo) -> None:
    """Status ERROR and an ``exception`` event (the semantic conventions'
    names), as ``record_exception`` would make for a Python exception."""
    span.set_status(Status(StatusCode.ERROR, f"{error.kind}: {error.message}"))
    span.add_event("exception", {"exception.type": error.kind, "exception.message": error.message})


class OtelSink:
    """A telemetry sink that makes OpenTelemetry spans."""

    def __init__(self, tracer_provider: Any = None) -> None:
        # None: the global provider, looked up through the API's proxy, so a
        # provider the process sets later is used from then on
        self.tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=tracer_provider)
        # run id -> [its run span, the spans of its open agent turns (innermost last)],
        # each with the context that has it current (made once: a step's span needs it)
        self.scopes: dict[int, list[tuple[Span, Context]]] = {}
        self.waits: dict[int, Span] = {}  # id(call) -> the span of a human request being waited for
        self.turns: dict[int, tuple[Span, object]] = {}  # id(call) -> an open agent turn's span and context token

    def _parent(self, run: RunInfo | None) -> Any:
        """The context a span of `run` starts in: its innermost open scope."""
        scope = self.scopes.get(run.id) if run is not None else None
        return scope[-1][1] if scope else None

    def _start(self, name: str, run: RunInfo, started: float, attributes: dict[str, Any]) -> Span:
        return self.tracer.start_span(name, context=self._parent(run), attributes=attributes, start_time=_ns(started))

    def _done(self, name: str, run: RunInfo, call: Call, attributes: dict[str, Any]) -> None:
        """The span of a call that is over, with its real start and end."""
        scope = self.scopes.get(run.id)
        if not scope or not scope[0][0].is_recording():
            return
        span = self._start(name, run, call.started, attributes)
        if call.error is not None:
            _fail(span, call.error)
        span.end(end_time=_ns(call.started + call.duration))

    # --------------------------------------------------------------- runs
    def run_started(self, run: RunInfo) -> bool:
        attributes: dict[str, Any] = {
            "tactus.cell": run.cell,
            "tactus.cell.id": run.cell_id,
            "tactus.run.id": run.id,
        }
        if run.procedure:
            name = f"procedure {run.name}"
            attributes.update({"tactus.procedure": run.name, "tactus.procedure.key": run.key})
            if run.title != run.key:
                attributes["tactus.procedure.title"] = run.title
            if run.child and run.parent is not None:
                attributes["tactus.parent.key"] = run.parent.key
        else:
            name = "cell"
        span = self.tracer.start_span(
            name, context=self._parent(run.parent), attributes=attributes, start_time=_ns(run.started)
        )
        self.scopes[run.id] = [(span, trace.set_span_in_context(span))]
        return span.is_recording()

    def run_ended(self, run: RunInfo) -> None:
        scope = self.scopes.pop(run.id, None)
        if not scope:
            return
        span = scope[0][0]
        if run.procedure:
            span.set_attributes(
                {
                    "tactus.run.outcome": run.outcome,
                    "tactus.run.replayed": run.replayed,
                    "tactus.run.checkpoints.recorded": run.recorded,
                    "tactus.run.checkpoints.replayed": run.replayed_calls,
                }
            )
        if run.error is not None:
            _fail(span, run.error)
        span.end(end_time=_ns(run.started + run.duration))

    # -------------------------------------------------------------- calls
    def step(self, run: RunInfo, call: Call) -> None:
        self._done(f"step {call.name}", run, call, {"tactus.step.name": call.name, "tactus.replayed": call.replayed})

    def human_requested(self, run: RunInfo, call: Call) -> None:
        scope = self.scopes.get(run.id)
        if scope and scope[0][0].is_recording():
            attributes = {"tactus.human.name": call.name, "tactus.replayed": False}
            if call.request:
                attributes["tactus.human.request"] = call.request
            self.waits[id(call)] = self._start(f"human {call.request}".rstrip(), run, call.started, attributes)

    def human_answered(self, run: RunInfo, call: Call) -> None:
        entry = call.entry or {}
        request = call.request or str(entry.get("request", ""))
        attributes: dict[str, Any] = {
            "tactus.human.name": call.name,
            "tactus.human.wait_seconds": call.duration,
            "tactus.human.answered": call.error is None,
            "tactus.replayed": call.replayed,
        }
        if request:
            attributes["tactus.human.request"] = request
        if call.entry is not None:
            attributes["tactus.human.source"] = "record" if call.replayed else str(entry.get("source", "human"))
            if entry.get("timed_out"):
                attributes["tactus.human.timed_out"] = True
        span = self.waits.pop(id(call), None)
        if span is None:  # replayed: never waited
            self._done(f"human {request}".rstrip(), run, call, attributes)
            return
        span.set_attributes(attributes)
        if call.error is not None:
            _fail(span, call.error)
        span.end(end_time=_ns(call.started + call.duration))

    def agent_turn_started(self, run: RunInfo, call: Call) -> None:
        scope = self.scopes.get(run.id)
        if not scope or not scope[0][0].is_recording():
            return
        span = self._start(
            f"agent {call.name}", run, call.started, {"tactus.agent.name": call.name, "gen_ai.agent.name": call.name}
        )
        current = trace.set_span_in_context(span)
        scope.append((span, current))
        # current while the turn runs: pydantic-ai's own spans nest under it
        self.turns[id(call)] = span, otel_context.attach(current)

    def agent_turn_ended(self, run: RunInfo, call: Call) -> None:
        opened = self.turns.pop(id(call), None)
        if opened is None:
            return
        span, token = opened
        otel_context.detach(token)  # type: ignore[arg-type]
        scope = self.scopes.get(run.id)
        if scope:
            scope[:] = [item for item in scope if item[0] is not span]
        entry = call.entry or {}
        attributes: dict[str, Any] = {"tactus.replayed": call.replayed}
        model = entry.get("model")
        if model:
            attributes["tactus.agent.model"] = str(model)
        span.set_attributes(attributes)
        if call.error is not None:
            _fail(span, call.error)
        span.end(end_time=_ns(call.started + call.duration))

    def child_replayed(self, run: RunInfo, call: Call) -> None:
        entry = call.entry or {}
        self._done(
            f"procedure {call.name}",
            run,
            call,
            {
                "tactus.procedure": call.name,
                "tactus.procedure.key": f"{run.key}/{entry.get('child', call.name)}",
                "tactus.parent.key": run.key,
                "tactus.replayed": True,
                "tactus.run.outcome": str(entry.get("status", "completed")),
            },
        )

    def checkpoint(self, run: RunInfo, call: Call) -> None:
        self._done(
            f"{call.kind} {call.name}",
            run,
            call,
            {
                "tactus.checkpoint.kind": call.kind,
                "tactus.checkpoint.name": call.name,
                "tactus.replayed": call.replayed,
            },
        )
