"""Telemetry: OpenTelemetry spans (the SDK's in-memory exporter) and the
JSON-lines audit trail (``tactus-kernel replay --events``, TACTUS_EVENTS).

No test reaches the network: agents run on pydantic-ai's offline TestModel
with model requests forbidden.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic_ai.models
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.host import BaseHost
from tactus_kernel.features import default_runtime
from tactus_kernel.features.telemetry import install
from tactus_kernel.features.telemetry.events import EventsSink
from tactus_kernel.features.telemetry.otel import OtelSink

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("TACTUS_OFFLINE", "TACTUS_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    yield


class Host(BaseHost):
    """A console-like host that answers human requests after `delay` seconds
    (a person taking their time: the wait the spans must measure)."""

    def __init__(self, answers: dict[str, Any] | None = None, delay: float = 0.0) -> None:
        self.answers = answers or {}
        self.delay = delay
        self.err: list[str] = []

    def write(self, stream: str, text: str) -> None:
        if stream == "stderr":
            self.err.append(text)

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        return None

    def records_changed(self) -> None:
        return None

    async def ask_human(self, req: Any) -> Any:
        await asyncio.sleep(self.delay)
        return self.answers[req.name]


class Traced:
    """A runtime whose spans go to an in-memory exporter."""

    def __init__(self, root: Path, host: Host | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.host = host or Host()
        self.runtime = default_runtime(root=root, host=self.host)  # type: ignore[arg-type]
        install(self.runtime, [OtelSink(self.provider)])
        self.count = 0

    def run(self, code: str, key: str = "cell-a") -> list[Any]:
        self.count += 1
        self.exporter.clear()
        return asyncio.run(self.runtime.execute(code, f"[cell {self.count}]", key))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span

    def tree(self) -> list[Any]:
        """The finished spans as nested ``(name, [children])``, in start order."""
        spans = sorted(self.spans(), key=lambda s: s.start_time or 0)
        ids = {s.context.span_id for s in spans}

        def children(parent: int | None) -> list[Any]:
            return [
                (s.name, children(s.context.span_id))
                for s in spans
                if (s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None) == parent
            ]

        return children(None)


def parent_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and child.parent.span_id == parent.context.span_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


STEPS = """
procedure({name = "deploy"}, function()
  local build = Step.run("build", function() return {image = "app:1"} end)
  Step.run("push", function() return build.image end)
  return {status = "ok"}
end)
"""


def test_a_procedure_run_and_its_steps_live_then_replayed(tmp_path: Path) -> None:
    t = Traced(tmp_path)
    assert t.run(STEPS) == [{"status": "ok"}]
    assert t.tree() == [("cell", [("procedure deploy", [("step build", []), ("step push", [])])])]
    run = t.one("procedure deploy")
    assert attrs(run) == {
        "tactus.cell": "[cell 1]",
        "tactus.cell.id": "cell-a",
        "tactus.run.id": 2,
        "tactus.procedure": "deploy",
        "tactus.procedure.key": "deploy",
        "tactus.run.outcome": "completed",
        "tactus.run.replayed": False,
        "tactus.run.checkpoints.recorded": 2,
        "tactus.run.checkpoints.replayed": 0,
    }
    assert run.status.status_code == StatusCode.UNSET
    assert attrs(t.one("step build")) == {"tactus.step.name": "build", "tactus.replayed": False}
    step = t.one("step build")
    assert run.start_time <= step.start_time <= step.end_time <= run.end_time  # type: ignore[operator]

    assert t.run(STEPS) == [{"status": "ok"}]  # the same cell again: replayed from the record
    run = t.one("procedure deploy")
    assert attrs(run)["tactus.run.replayed"] is True
    assert attrs(run)["tactus.run.checkpoints.replayed"] == 2
    assert [attrs(s)["tactus.replayed"] for s in (t.one("step build"), t.one("step push"))] == [True, True]


HUMAN = """
procedure({name = "release", hitl = {confirm = {type = "approval", message = "Ship it?"}}}, function()
  local ok = Human.approve("confirm")
  local who = Human.input({message = "Who ships?"})
  return {ok = ok, who = who}
end)
"""


def test_a_human_wait_live_then_answered_from_the_record(tmp_path: Path) -> None:
    t = Traced(tmp_path, Host({"confirm": True, "Who ships?": "Ada"}, delay=0.2))
    assert t.run(HUMAN) == [{"ok": True, "who": "Ada"}]
    approve, text = t.one("human approve"), t.one("human input")
    assert parent_of(approve, t.one("procedure release"))
    a = attrs(approve)
    assert a["tactus.human.wait_seconds"] >= 0.2  # the person's 0.2 s
    assert approve.end_time - approve.start_time >= 0.2e9  # type: ignore[operator]
    assert {k: v for k, v in a.items() if k != "tactus.human.wait_seconds"} == {
        "tactus.human.name": "confirm",
        "tactus.human.request": "approve",
        "tactus.human.answered": True,
        "tactus.human.source": "human",
        "tactus.replayed": False,
    }
    assert attrs(text)["tactus.human.name"] == "Who ships?"

    assert t.run(HUMAN) == [{"ok": True, "who": "Ada"}]  # answered from the record: no wait
    a = attrs(t.one("human approve"))
    assert a["tactus.replayed"] is True and a["tactus.human.source"] == "record"
    assert a["tactus.human.wait_seconds"] == 0.0


def test_a_human_request_with_no_answer_ends_its_wait_and_its_run_with_the_error(tmp_path: Path) -> None:
    t = Traced(tmp_path)
    t.runtime.batch = True  # a replay in CI: no one to ask
    with pytest.raises(CellError) as info:
        t.run(HUMAN)
    assert info.value.ename == "NoRecordedAnswer"
    wait = t.one("human approve")
    assert wait.status.status_code == StatusCode.ERROR
    assert attrs(wait)["tactus.human.answered"] is False
    assert attrs(wait)["tactus.human.request"] == "approve"
    [event] = wait.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "NoRecordedAnswer"
    assert 'Human.approve "Ship it?" has no recorded answer' in str(event.attributes["exception.message"])
    run = t.one("procedure release")
    assert run.status.status_code == StatusCode.ERROR
    assert attrs(run)["tactus.run.outcome"] == "failed"


def test_a_failing_procedure_ends_its_span_with_status_error_and_an_exception_event(tmp_path: Path) -> None:
    t = Traced(tmp_path)
    with pytest.raises(CellError) as info:
        t.run("""
        procedure({name = "flaky"}, function()
          Step.run("fetch", function() return 1 end)
          Step.run("parse", function() error("bad input") end)
          return {}
        end)
        """)
    assert info.value.ename == "LuaError"
    run = t.one("procedure flaky")
    assert run.status.status_code == StatusCode.ERROR
    assert run.status.description is not None and "bad input" in run.status.description
    [event] = run.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "LuaError"
    assert "[cell 1]:4: bad input" in str(event.attributes["exception.message"])
    assert attrs(run)["tactus.run.outcome"] == "failed"
    assert t.one("step fetch").status.status_code == StatusCode.UNSET
    parse = t.one("step parse")  # started, never recorded: it failed with its run
    assert parse.status.status_code == StatusCode.ERROR and parent_of(parse, run)
    assert t.one("cell").status.status_code == StatusCode.UNSET


CHILD = """
procedure({name = "build", params = {v = {type = "string", default = "1"}}}, function()
  return {image = Step.run("compile", function() return "app:" .. params.v end)}
end)
procedure({name = "ship"}, function()
  local built = Procedure.run("build", {v = "2"})
  return {image = built.image}
end)
"""


def test_a_child_procedure_nests_under_its_caller(tmp_path: Path) -> None:
    t = Traced(tmp_path)
    assert t.run(CHILD) == [{"image": "app:1"}]  # the cell runs build (shown), then ship, which calls build
    assert t.tree() == [
        (
            "cell",
            [
                ("procedure build", [("step compile", [])]),
                ("procedure ship", [("procedure build", [("step compile", [])])]),
            ],
        )
    ]
    child = next(s for s in t.named("procedure build") if attrs(s)["tactus.procedure.key"] != "build")
    assert attrs(child)["tactus.procedure.key"] == "ship/build#1"
    assert attrs(child)["tactus.parent.key"] == "ship"
    assert parent_of(child, t.one("procedure ship"))

    assert t.run(CHILD) == [{"image": "app:1"}]  # replayed: the recorded call answers, the child does not run
    assert t.tree() == [
        ("cell", [("procedure build", [("step compile", [])]), ("procedure ship", [("procedure build", [])])])
    ]
    replayed = next(s for s in t.named("procedure build") if parent_of(s, t.one("procedure ship")))
    assert attrs(replayed) == {
        "tactus.procedure": "build",
        "tactus.procedure.key": "ship/build#1",
        "tactus.parent.key": "ship",
        "tactus.replayed": True,
        "tactus.run.outcome": "completed",
    }


AGENT = """
agent("writer", {model = "test", system_prompt = "Write one line."})
procedure({name = "notes"}, function()
  local r = Writer.turn({inject = "Release notes, please"})
  return {text = r.data}
end)
"""


def test_an_agent_turn_is_a_span_and_pydantic_ai_instrumentation_nests_under_it(tmp_path: Path) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings

    t = Traced(tmp_path)
    Agent.instrument_all(InstrumentationSettings(tracer_provider=t.provider))
    try:
        [out] = t.run(AGENT)
    finally:
        Agent.instrument_all(False)
    assert isinstance(out["text"], str)
    turn = t.one("agent writer")
    assert parent_of(turn, t.one("procedure notes"))
    assert attrs(turn) == {
        "tactus.agent.name": "writer",
        "gen_ai.agent.name": "writer",
        "tactus.replayed": False,
        "tactus.agent.model": "test",
    }
    ours = {"cell", "procedure notes", "agent writer"}
    theirs = [s for s in t.spans() if s.name not in ours]
    assert theirs, "pydantic-ai made no spans"
    top = [s for s in theirs if not any(parent_of(s, o) for o in theirs)]
    assert top and all(parent_of(s, turn) for s in top), [(s.name, s.parent) for s in top]

    t.run(AGENT)  # replayed: no model call, no pydantic-ai span
    assert attrs(t.one("agent writer"))["tactus.replayed"] is True
    assert {s.name for s in t.spans()} == ours


def test_with_no_tracer_provider_and_no_events_file_nothing_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tactus_kernel.features.telemetry.hub import TelemetryHub

    monkeypatch.delenv("TACTUS_EVENTS", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    runtime = default_runtime(root=tmp_path, host=Host())  # type: ignore[arg-type]
    assert not any(isinstance(o, TelemetryHub) for o in runtime.observers.all)
    assert not runtime.interceptors  # no effect call goes through telemetry
    monkeypatch.setenv("TACTUS_EVENTS", str(tmp_path / "events.jsonl"))
    runtime = default_runtime(root=tmp_path, host=Host())  # type: ignore[arg-type]
    [hub] = [o for o in runtime.observers.all if isinstance(o, TelemetryHub)]
    assert [type(s) for s in hub.sinks] == [EventsSink]  # no provider: no OpenTelemetry sink


def test_a_run_whose_span_does_not_record_is_never_hooked(tmp_path: Path) -> None:
    runtime = default_runtime(root=tmp_path, host=Host())  # type: ignore[arg-type]
    sink = OtelSink()  # the global provider: none is set in this process, so the API's no-op tracer
    hub = install(runtime, [sink])
    seen: list[Any] = []
    original = hub.call_replayed
    hub.call_replayed = lambda log, entry: seen.append(entry) or original(log, entry)  # type: ignore[method-assign]
    for _ in range(2):
        asyncio.run(runtime.execute(STEPS, "[cell 1]", "cell-a"))
    assert seen == []  # the run's span does not record: the hub never hooked the run log
    assert runtime.records.procedures["deploy"]["status"] == "completed"


# ------------------------------------------------------------- JSON lines
def test_an_events_file_that_cannot_be_written_warns_once_and_the_cell_runs_on(tmp_path: Path) -> None:
    host = Host()
    runtime = default_runtime(root=tmp_path, host=host)  # type: ignore[arg-type]
    path = tmp_path / "no-such-folder" / "events.jsonl"
    install(runtime, [EventsSink(path, warn=lambda text: host.write("stderr", text))])
    for _ in range(2):
        assert asyncio.run(runtime.execute(STEPS, "[cell 1]", "cell-a")) == [{"status": "ok"}]
    [warning] = host.err
    assert warning.startswith(f"Tactus: warning: cannot write the events file {path}: [Errno 2] No such file")
    assert not path.parent.exists()


def test_events_of_a_live_human_wait_say_when_it_was_asked_and_how_long_the_answer_took(tmp_path: Path) -> None:
    host = Host({"confirm": True, "Who ships?": "Ada"}, delay=0.2)
    runtime = default_runtime(root=tmp_path, host=host)  # type: ignore[arg-type]
    path = tmp_path / "events.jsonl"
    sink = EventsSink(path)
    install(runtime, [sink])
    assert asyncio.run(runtime.execute(HUMAN, "[cell 1]", "cell-a")) == [{"ok": True, "who": "Ada"}]
    sink.close()
    lines = events_of(path)
    assert [e["event"] for e in lines] == [
        "run.started",
        "human.requested",
        "human.answered",
        "human.requested",
        "human.answered",
        "run.completed",
    ]
    asked, answered = lines[1], lines[2]
    assert {k: asked[k] for k in ("name", "request", "procedure", "cell", "cell_id")} == {
        "name": "confirm",
        "request": "approve",
        "procedure": "release",
        "cell": "[cell 1]",
        "cell_id": "cell-a",
    }
    assert answered["wait"] >= 0.2 and answered["source"] == "human" and answered["replayed"] is False
    assert answered["at"] >= asked["at"]
    assert lines[-1]["replayed"] is False and lines[-1]["checkpoints"] == {"recorded": 2, "replayed": 0}


class Waiting(Host):
    """A host whose person never answers: the test interrupts the wait."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()

    async def ask_human(self, req: Any) -> Any:
        self.asked.set()
        await asyncio.Future()  # never answered


def test_an_interrupted_wait_ends_the_wait_and_the_run_as_interrupted(tmp_path: Path) -> None:
    host = Waiting()
    runtime = default_runtime(root=tmp_path, host=host)  # type: ignore[arg-type]
    path = tmp_path / "events.jsonl"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    install(runtime, [OtelSink(provider), EventsSink(path)])

    async def interrupt_while_waiting() -> None:
        task = asyncio.ensure_future(runtime.execute(HUMAN, "[cell 1]", "cell-a"))
        await host.asked.wait()
        runtime.interrupt()  # what the kernel's interrupt does: arm Lua, cancel the cell's task
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupt_while_waiting())
    lines = events_of(path)
    assert [e["event"] for e in lines] == ["run.started", "human.requested", "human.failed", "run.failed"]
    interrupted = {"kind": "KeyboardInterrupt", "message": "interrupted by the user"}
    assert lines[2]["error"] == interrupted and lines[2]["request"] == "approve"
    assert lines[3]["error"] == interrupted and lines[3]["status"] == "cancelled"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["cell", "human approve", "procedure release"]
    assert spans["human approve"].status.status_code == StatusCode.ERROR
    assert dict(spans["procedure release"].attributes or {})["tactus.run.outcome"] == "cancelled"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full (every write: no space left)")
def test_a_full_disk_under_the_events_file_warns_once_and_the_cells_run_on(tmp_path: Path) -> None:
    host = Host()
    runtime = default_runtime(root=tmp_path, host=host)  # type: ignore[arg-type]
    install(runtime, [EventsSink("/dev/full", warn=lambda text: host.write("stderr", text))])
    for _ in range(2):
        assert asyncio.run(runtime.execute(STEPS, "[cell 1]", "cell-a")) == [{"status": "ok"}]
    assert host.err == [
        "Tactus: warning: cannot write the events file /dev/full: [Errno 28] No space left on device; "
        "no more events are written\n"
    ]


def events_of(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def replay(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("tactus-kernel", path=os.path.dirname(sys.executable)) or "tactus-kernel"
    return subprocess.run(
        [exe, "replay", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False
    )


def test_replay_events_writes_the_audit_trail_of_a_notebook(tmp_path: Path) -> None:
    (tmp_path / "nb").mkdir()
    notebook = tmp_path / "nb" / "human-in-the-loop.ipynb"
    shutil.copy(ROOT / "notebooks" / "human-in-the-loop.ipynb", notebook)
    events = tmp_path / "audit" / "events.jsonl"
    events.parent.mkdir()
    # relative to where the command runs, not to the kernel's folder (the notebook's)
    done = replay(str(notebook), "-o", "out.ipynb", "--events", "audit/events.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = events_of(events)
    assert {e["v"] for e in lines} == {1}
    by_proc: dict[str, list[str]] = {}
    for e in lines:
        by_proc.setdefault(e["procedure"], []).append(e["event"])
    assert by_proc == {
        "approve_demo": ["run.started", "human.answered", "run.completed"],
        "input_demo": ["run.started", "human.answered", "human.answered", "run.completed"],
        "review_demo": ["run.started", "human.answered", "run.completed"],
        "escalate_demo": ["run.started", "human.answered", "run.completed"],
        "release": ["run.started", "human.answered", "run.completed"],
    }
    assert [e["procedure"] for e in lines if e["event"] == "run.started"] == [
        "approve_demo",
        "input_demo",
        "review_demo",
        "escalate_demo",
        "release",
    ]
    answered = next(e for e in lines if e["procedure"] == "release" and e["event"] == "human.answered")
    assert {k: answered[k] for k in ("name", "request", "replayed", "wait", "source")} == {
        "name": "confirm",
        "request": "approve",
        "replayed": True,
        "wait": 0.0,
        "source": "record",
    }
    completed = next(e for e in lines if e["procedure"] == "release" and e["event"] == "run.completed")
    assert completed["replayed"] is True and completed["checkpoints"] == {"recorded": 0, "replayed": 1}
    assert completed["duration"] >= 0 and completed["cell"].startswith("[cell ")
    for e in lines:
        assert e["at"].endswith("Z") and e["at"][10] == "T"
    assert [e["at"] for e in lines] == sorted(e["at"] for e in lines)

    again = replay(str(notebook), "-o", "out.ipynb", "--events", "audit/events.jsonl", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(events_of(events)) == 2 * len(lines)  # appended, never overwritten


def test_replay_events_into_a_missing_folder_is_bad_input(tmp_path: Path) -> None:
    notebook = tmp_path / "quickstart.ipynb"
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", notebook)
    done = replay(str(notebook), "--events", "no-such-folder/events.jsonl", cwd=tmp_path)
    assert done.returncode == 4
    assert done.stderr == "tactus-kernel replay: --events no-such-folder/events.jsonl: its folder does not exist\n"


def test_replay_events_of_children_agent_turns_and_failed_children(tmp_path: Path) -> None:
    for name in ("composition.ipynb", "composition.person.json"):
        shutil.copy(ROOT / "notebooks" / name, tmp_path / name)
    events = tmp_path / "events.jsonl"
    done = replay(str(tmp_path / "composition.ipynb"), "--events", str(events))
    assert done.returncode == 0, done.stderr
    lines = events_of(events)
    release = [(e["event"], e["name"], e.get("replayed")) for e in lines if e["cell"] == "[cell 2]"]
    rollout = [e for i in range(1, 6) for e in (("checkpoint", "sleep 0.1s", True), ("step", f"rollout {i}", True))]
    assert release == [
        ("run.started", "release", None),
        ("child", "build", True),  # answered from the record: the child does not run
        ("agent.turn", "writer", True),
        ("child", "review", True),
        ("child", "review", True),
        *rollout,
        ("run.completed", "release", True),
    ]
    turn = next(e for e in lines if e["cell"] == "[cell 2]" and e["event"] == "agent.turn")
    assert turn["agent"] == "writer" and turn["model"] == "mock" and turn["usage"]["requests"] == 2
    assert [e["child"] for e in lines if e["cell"] == "[cell 2]" and e["event"] == "child"] == [
        "release/build#1",
        "release/review#1",
        "release/review#2",
    ]
    # cell 4: countdown called 9 deep fails at max_depth 5 (the 6th call is refused before it runs);
    # the record holds the failed calls, so they run again
    chain = [e for e in lines if e["cell"] == "[cell 4]"]
    failed = [e for e in chain if e["event"] == "run.failed"]
    assert len(failed) == 5 and {e["error"]["kind"] for e in failed} == {"ProcedureError"}
    assert all("max_depth 5 exceeded" in e["error"]["message"] for e in failed)
    for run in failed:  # each failed child is also reported to its caller, after its own end
        child = next(e for e in chain if e["event"] == "child" and e.get("child") == run["procedure"])
        assert (child["procedure"], child["replayed"], child["status"]) == (run["parent"], False, "failed")
        assert chain.index(child) == chain.index(run) + 1
    assert not any(e["event"] == "child" and e["replayed"] and e["status"] == "failed" for e in lines)


def test_tactus_events_in_a_kernels_environment_records_a_failure_with_its_error(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            'procedure({name = "flaky"}, function()\n'
            '  Step.run("fetch", function() return 1 end)\n'
            '  error("the service is down")\n'
            "end)"
        )
    ]
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    path = tmp_path / "flaky.ipynb"
    nbformat.write(nb, path)
    events = tmp_path / "events.jsonl"
    env = {**os.environ, "TACTUS_EVENTS": str(events)}
    done = replay(str(path), env=env)
    assert done.returncode == 1, done.stderr
    lines = events_of(events)
    assert [e["event"] for e in lines] == ["run.started", "step", "run.failed"]
    step, failed = lines[1], lines[2]
    assert {k: step[k] for k in ("name", "replayed")} == {"name": "fetch", "replayed": False}
    assert failed["error"] == {"kind": "LuaError", "message": "[cell 1]:3: the service is down"}
    assert failed["status"] == "failed" and failed["procedure"] == "flaky" and failed["cell"] == "[cell 1]"
    assert failed["duration"] >= step["duration"] >= 0


def test_otel_traces_exporter_gives_a_kernel_process_an_sdk_and_its_spans_are_exported(tmp_path: Path) -> None:
    # a fresh process that never imported OpenTelemetry, as a kernel Jupyter starts: the
    # standard variable is all it gets; the SDK's console exporter prints each span as JSON
    script = (
        "import asyncio, sys\n"
        "from tactus_kernel.features import default_runtime\n"
        "assert 'opentelemetry.trace' not in sys.modules\n"
        f"rt = default_runtime(root={str(tmp_path)!r})\n"
        f"print(asyncio.run(rt.execute({STEPS!r}, '[cell 1]', 'cell-a')), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "console"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "[{'status': 'ok'}]" in done.stderr
    decoder, text, spans = json.JSONDecoder(), done.stdout.strip(), []
    while text:
        span, end = decoder.raw_decode(text)
        spans.append(span)
        text = text[end:].strip()
    assert sorted(s["name"] for s in spans) == ["cell", "procedure deploy", "step build", "step push"]
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"tactus-kernel"}
    run = next(s for s in spans if s["name"] == "procedure deploy")
    assert run["attributes"]["tactus.run.outcome"] == "completed"

    env["OTEL_SDK_DISABLED"] = "true"  # the standard switch: no spans
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0 and done.stdout == "", done.stderr


def test_a_replayed_kernel_exports_its_spans_to_the_console_not_into_the_notebook(tmp_path: Path) -> None:
    notebook = tmp_path / "human-in-the-loop.ipynb"
    shutil.copy(ROOT / "notebooks" / "human-in-the-loop.ipynb", notebook)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "console"  # reaches the kernel through the environment it inherits
    done = replay(str(notebook), "-o", str(tmp_path / "out.ipynb"), env=env)
    assert done.returncode == 0, done.stderr
    names = sorted(line.strip() for line in done.stdout.splitlines() if line.strip().startswith('"name": "procedure'))
    assert names == [
        f'"name": "procedure {p}",'
        for p in sorted(["approve_demo", "input_demo", "review_demo", "escalate_demo", "release"])
    ]
    assert "trace_id" not in (tmp_path / "out.ipynb").read_text(encoding="utf-8")


def test_a_kernel_with_tactus_events_logs_a_card_answered_by_a_person(tmp_path: Path) -> None:
    from tactus_kernel.testing import KernelDriver

    path = tmp_path / "events.jsonl"
    kernel = KernelDriver(tmp_path, env={**os.environ, "TACTUS_EVENTS": str(path)})
    try:
        run = kernel.start(
            'procedure({name = "ship"}, function() return {ok = Human.approve({message = "Ship it?"})} end)',
            cell_id="cell-ship",
        )
        kernel.card().approve()  # a click on the card, as JupyterLab sends it
        assert kernel.wait(run).result == "{ok = true}"
    finally:
        kernel.shutdown()
    lines = events_of(path)
    assert [e["event"] for e in lines] == ["run.started", "human.requested", "human.answered", "run.completed"]
    asked, answered = lines[1], lines[2]
    assert {k: answered[k] for k in ("name", "request", "replayed", "source")} == {
        "name": "Ship it?",
        "request": "approve",
        "replayed": False,
        "source": "human",
    }
    assert answered["wait"] > 0 and answered["at"] >= asked["at"]
    assert {(e["procedure"], e["cell"], e["cell_id"]) for e in lines} == {("ship", "[cell 1]", "cell-ship")}


def test_a_failed_agent_turn_ends_with_its_error_and_is_no_longer_current(tmp_path: Path) -> None:
    t = Traced(tmp_path)
    [out] = t.run("""
    agent("remote", {model = "openai:gpt-4o-mini"})
    procedure({name = "careful"}, function()
      local ok, err = pcall(function() return Remote.turn({inject = "hello"}) end)
      Step.run("after", function() return 1 end)
      return {ok = ok}
    end)
    """)
    assert out == {"ok": False}
    turn, run = t.one("agent remote"), t.one("procedure careful")
    assert turn.status.status_code == StatusCode.ERROR and parent_of(turn, run)
    [event] = turn.events
    assert event.attributes is not None and event.attributes["exception.type"] == "AgentError"
    assert "needs the environment variable OPENAI_API_KEY" in str(event.attributes["exception.message"])
    assert parent_of(t.one("step after"), run)  # the turn's scope ended with it
    assert run.status.status_code == StatusCode.UNSET  # the procedure caught the error and went on
