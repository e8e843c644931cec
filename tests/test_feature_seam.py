"""The feature seam (engine/feature.py), used as README "How to add a
primitive or a feature" says: a small ``Counter.bump()`` primitive with its
own Lua prelude, effect and per-runtime state, run in a real runtime beside
the default features; a kind registered twice is refused; an observer hears
the documented events in order."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import RecordingHost

from tactus_kernel.engine.errors import CellError, KernelError
from tactus_kernel.engine.feature import Feature, FeatureError, Observer, Prelude
from tactus_kernel.engine.runs import CellRun, RunState
from tactus_kernel.engine.runtime import Runtime
from tactus_kernel.features import default_features
from tactus_kernel.features.sleep import sleep_effect

# 1. the Lua half: a global table whose function yields an effect request
COUNTER_LUA = """
local B, K = ...
local perform, current_ctx, raise = K.perform, K.current_ctx, K.raise
Counter = {}
function Counter.bump(by)
  if by ~= nil and math.type(by) ~= "integer" then raise("Counter.bump: by must be an integer") end
  return perform({kind = "counter.bump", run = current_ctx().run, by = by or 1})
end
"""


# 2. the per-runtime state the feature keeps (the runtime holds it)
class Tally:
    def __init__(self) -> None:
        self.total = 0
        self.bumps = 0


# 3. the Python half: an effect handler, recorded so a replay returns the same
async def bump_effect(runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
    entry = run.log.replay("counter", "bump")
    if entry is not None:
        return (entry["value"],)
    tally = runtime.state(CounterFeature)
    tally.total += int(request["by"])
    tally.bumps += 1
    run.log.append("counter", "bump", tally.total)
    runtime.host.records_changed()
    return (tally.total,)


# 4. the feature: its name, prelude, state and what it installs
class CounterFeature(Feature[Tally]):
    name = "counter"
    preludes = (Prelude.text("counter", COUNTER_LUA),)

    def new_state(self, runtime: Runtime) -> Tally:
        return Tally()

    def install(self, runtime: Runtime, state: Tally) -> None:
        runtime.register_effect("counter.bump", bump_effect)


def run_cell(runtime: Runtime, code: str, key: str = "cell-a", label: str = "[cell 1]") -> list[Any]:
    return asyncio.run(runtime.execute(code, label, key))


COUNT_TWICE = """
procedure({name = "count"}, function()
  local a = Counter.bump()
  local b = Counter.bump(2)
  return {a = a, b = b}
end)
"""


def test_a_feature_added_the_documented_way_runs_and_replays(tmp_path: Path):
    runtime = Runtime(root=tmp_path, host=RecordingHost(), features=[*default_features(), CounterFeature()])
    assert run_cell(runtime, COUNT_TWICE) == [{"a": 1, "b": 3}]
    tally = runtime.state(CounterFeature)
    assert (tally.total, tally.bumps) == (3, 2)
    checkpoints = runtime.records.procedures["count"]["checkpoints"]
    assert [(c["kind"], c["name"], c["value"]) for c in checkpoints] == [("counter", "bump", 1), ("counter", "bump", 3)]

    # run again: the record answers, the effect does not count again
    assert run_cell(runtime, COUNT_TWICE) == [{"a": 1, "b": 3}]
    assert tally.bumps == 2

    # its Lua prelude's own error reaches the cell like any primitive's
    with pytest.raises(CellError) as info:
        run_cell(runtime, "Counter.bump(1.5)", "cell-b")
    err = info.value
    assert (err.ename, err.evalue) == ("LuaError", "[cell 1]:1: Counter.bump: by must be an integer")


def test_each_runtime_holds_its_own_state_of_a_feature(tmp_path: Path):
    feature = CounterFeature()  # one instance serves both: it holds no state
    one = Runtime(root=tmp_path, host=RecordingHost(), features=[feature])
    two = Runtime(root=tmp_path, host=RecordingHost(), features=[feature])
    assert run_cell(one, "return Counter.bump(5)") == [5]
    assert run_cell(two, "return Counter.bump(1)") == [1]
    assert (one.state(CounterFeature).total, two.state(CounterFeature).total) == (5, 1)


def test_a_runtime_without_the_feature_has_neither_its_primitive_nor_its_state(tmp_path: Path):
    runtime = Runtime(root=tmp_path, host=RecordingHost())
    with pytest.raises(CellError) as info:
        run_cell(runtime, "return Counter.bump()")
    err = info.value
    assert (err.ename, err.evalue) == ("LuaError", "[cell 1]:1: attempt to index a nil value (global 'Counter')")
    with pytest.raises(
        FeatureError, match=r"^feature CounterFeature is not installed in this runtime \(its features: none\)$"
    ):
        runtime.state(CounterFeature)


class Clash(Feature[None]):
    name = "clash"

    def install(self, runtime: Runtime, state: None) -> None:
        runtime.register_effect("sleep", sleep_effect)


def test_an_effect_kind_registered_twice_is_refused(tmp_path: Path):
    with pytest.raises(FeatureError) as info:
        Runtime(root=tmp_path, host=RecordingHost(), features=[*default_features(), Clash()])
    assert str(info.value) == "effect kind 'sleep' is registered twice: by feature 'sleep' and by feature 'clash'"


def test_a_feature_given_twice_is_refused(tmp_path: Path):
    with pytest.raises(FeatureError, match=r"^feature 'counter' is given twice$"):
        Runtime(root=tmp_path, host=RecordingHost(), features=[CounterFeature(), CounterFeature()])


# ------------------------------------------------------------------ observers
class Log(Observer):
    """Every event, as (event, run key or cell label, detail)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def run_started(self, run: RunState) -> None:
        self.events.append(("run_started", run.key, run.spec is not None))

    def run_ended(self, run: RunState, ok: bool, error: Any) -> None:
        self.events.append(("run_ended", run.key, ok))

    def checkpoint_recorded(self, run: RunState, entry: dict[str, Any]) -> None:
        self.events.append(("checkpoint_recorded", run.key, f"{entry['kind']} {entry['name']}"))

    def effect_failed(self, run: RunState, kind: str, error: BaseException, since: float) -> None:
        # a kernel error is data: its text is "Kind: message" (what Lua sees)
        text = error.failure.text if isinstance(error, KernelError) else str(error)
        self.events.append(("effect_failed", run.key, f"{kind}: {text}"))

    def human_wait_started(self, run: RunState, request: Any) -> None:
        self.events.append(("human_wait_started", run.key, request.message))

    def human_wait_ended(self, run: RunState, request: Any) -> None:
        self.events.append(("human_wait_ended", run.key, request.message))

    def agent_turn_started(self, run: RunState, agent: str) -> None:
        self.events.append(("agent_turn_started", run.key, agent))

    def agent_turn_ended(self, run: RunState, agent: str, ok: bool) -> None:
        self.events.append(("agent_turn_ended", run.key, ok))

    def child_called(self, parent: RunState, name: str, mode: str) -> None:
        self.events.append(("child_called", parent.key, f"{mode} {name}"))

    def child_started(self, parent: RunState, child: RunState, entry: dict[str, Any]) -> None:
        self.events.append(("child_started", parent.key, child.key))

    def child_ended(self, parent: RunState, child: RunState | None, entry: dict[str, Any]) -> None:
        self.events.append(("child_ended", parent.key, entry["status"]))

    def message_injected(self, run: RunState, message: str) -> None:
        self.events.append(("message_injected", run.key, message))

    async def cell_settling(self, cell: CellRun) -> None:
        self.events.append(("cell_settling", cell.label, None))

    async def cell_cancelling(self, cell: CellRun) -> None:
        self.events.append(("cell_cancelling", cell.label, None))

    def cell_closed(self, cell: CellRun) -> None:
        self.events.append(("cell_closed", cell.label, None))


class Answering(RecordingHost):
    async def ask_human(self, req: Any) -> Any:
        await asyncio.sleep(0)  # a real wait: the event loop turns
        return True


CHILD = """
agent("helper", {model = "test", mock = {responses = {"noted"}}})
procedure({name = "child"}, function()
  Helper.turn({inject = "note it"})
  return {}
end)
"""
EVERYTHING = """
procedure({name = "main"}, function()
  Step.run("prepare", function() return 1 end)
  Human.approve({message = "Go?"})
  Procedure.run("child")
  return {}
end)
"""


def test_an_observer_hears_the_documented_events_in_order(tmp_path: Path):
    runtime = Runtime(root=tmp_path, host=Answering(), features=default_features())
    run_cell(runtime, CHILD, key="cell-c")
    log = Log()
    runtime.add_observer(log)
    run_cell(runtime, EVERYTHING, key="cell-x", label="[cell 7]")
    assert log.events == [
        ("run_started", "cell-x", False),  # the cell's own code
        ("run_started", "main", True),  # the procedure it declares, run at the cell's end
        ("checkpoint_recorded", "main", "step prepare"),
        ("human_wait_started", "main", "Go?"),
        ("human_wait_ended", "main", "Go?"),
        ("checkpoint_recorded", "main", "human Go?"),
        ("child_called", "main", "run child"),
        ("checkpoint_recorded", "main", "procedure child"),  # the call's checkpoint, filled in when it ends
        ("run_started", "main/child#1", True),
        ("child_started", "main", "main/child#1"),
        ("agent_turn_started", "main/child#1", "helper"),
        ("checkpoint_recorded", "main/child#1", "agent helper"),
        ("agent_turn_ended", "main/child#1", True),
        ("run_ended", "main/child#1", True),
        ("child_ended", "main", "completed"),
        ("run_ended", "main", True),
        ("cell_settling", "[cell 7]", None),
        ("cell_closed", "[cell 7]", None),
    ]

    # the same cell again: everything replays, so no checkpoint, wait or turn is told
    log.events.clear()
    run_cell(runtime, EVERYTHING, key="cell-x", label="[cell 8]")
    assert [e[0] for e in log.events] == [
        "run_started",
        "run_started",
        "child_called",
        "run_ended",
        "cell_settling",
        "cell_closed",
    ]


def test_an_observer_hears_a_failed_effect_and_an_injected_message(tmp_path: Path):
    runtime = Runtime(root=tmp_path, host=RecordingHost(), features=default_features())
    runtime.batch = True  # a request with no recorded answer fails at once
    log = Log()
    runtime.add_observer(log)
    code = """
    -- a required param: declared, not run on its own at the cell's end
    procedure({name = "asks", params = {x = {type = "string", required = true}}}, function()
      Human.approve({message = "Ship?"})
    end)
    procedure({name = "main"}, function()
      local h = Procedure.spawn("asks", {x = "a"})
      Procedure.inject(h, "hello")
      return {ok = pcall(Procedure.wait, h)}
    end)
    """
    assert run_cell(runtime, code) == [{"ok": False}]
    failed = [e for e in log.events if e[0] in ("effect_failed", "message_injected")]
    assert failed == [
        ("message_injected", "main/asks#1", "hello"),
        (
            "effect_failed",
            "main/asks#1",
            'human: NoRecordedAnswer: procedure "main/asks#1": Human.approve "Ship?" has no recorded answer '
            "(record it by running the notebook interactively and saving it, "
            'or pass --answer "Ship?=VALUE")',
        ),
        (  # the caller's wait raises the child's failure: that effect failed too
            "effect_failed",
            "main",
            'procedure.wait: NoRecordedAnswer: procedure "main/asks#1": Human.approve "Ship?" has no recorded '
            'answer (record it by running the notebook interactively and saving it, or pass --answer "Ship?=VALUE")',
        ),
    ]


# ------------------------------------------------------------- isolated runs
ISOLATED = """
agent("helper", {model = "openai:gpt-4o-mini"})
procedure({name = "iso", params = {n = {type = "number", required = true}}}, function(p)
  Step.run("one", function() return p.n end)
  Sleep(0.05)
  return {reply = Helper.turn({inject = "hi"}).data}
end)
"""


class Started(Observer):
    """Sets `event` when a run of `key` starts."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.event = asyncio.Event()

    def run_started(self, run: RunState) -> None:
        if run.key == self.key:
            self.event.set()


def test_an_isolated_run_is_seen_only_by_its_own_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A scenario's run (features/specs/runner.py) replaces the records, host,
    answers and agents' model only for itself: a task running meanwhile
    sees the notebook's, and os.environ is never touched."""
    from tactus_kernel.engine.runs import offline
    from tactus_kernel.features.specs.runner import run_isolated

    for var in ("TACTUS_OFFLINE", "OPENAI_API_KEY", "TACTUS_MODEL"):
        monkeypatch.delenv(var, raising=False)
    host = RecordingHost()
    runtime = Runtime(root=tmp_path, host=host, features=default_features())
    run_cell(runtime, ISOLATED)  # declared, not run: it needs its param
    notebook_records = runtime.records
    started = Started("iso")
    runtime.add_observer(started)
    seen: dict[str, Any] = {}

    async def meanwhile() -> None:
        await started.event.wait()  # the isolated run has begun, and now sleeps
        seen.update(
            host=runtime.host,
            records=runtime.records,
            batch=runtime.batch,
            offline=offline(),
            env=os.environ.get("TACTUS_OFFLINE"),
        )

    async def both() -> Any:
        watcher = asyncio.ensure_future(meanwhile())
        outcome = await run_isolated(runtime, "iso", {"n": 3}, {})
        await watcher
        return outcome

    outcome = asyncio.run(both())
    assert (outcome.ok, outcome.error) == (True, "")
    assert isinstance(outcome.output["reply"], str)  # the offline model answered: no API key was needed
    assert [c["name"] for c in outcome.records.procedures["iso"]["checkpoints"]] == ["one", "sleep 0.05s", "helper"]
    assert seen == {"host": host, "records": notebook_records, "batch": False, "offline": False, "env": None}
    assert runtime.records is notebook_records and "iso" not in notebook_records.procedures
    # outside the isolated run the agent has no offline model: it needs its key
    with pytest.raises(CellError) as info:
        run_cell(runtime, 'return Procedure.run("iso", {n = 1})', "cell-b")
    assert (info.value.ename, info.value.evalue) == (
        "ProcedureError",
        "procedure 'iso' failed: AgentError: [cell 1]:6: agent 'helper': model 'openai:gpt-4o-mini' needs the "
        "environment variable OPENAI_API_KEY (set OPENAI_API_KEY, or run offline with TACTUS_OFFLINE=1 or "
        'model = "test")',
    )


# ------------------------------------------------------------------ layout
PACKAGE = Path(__file__).resolve().parent.parent / "tactus_kernel"
LAYERS = {"engine": 0, "features": 1, "jupyter": 2, "replay": 2}


def _imports(typing: bool = False) -> dict[str, set[str]]:
    """Module -> the tactus_kernel modules it imports when it runs (lazy
    imports in functions included; ``if TYPE_CHECKING:`` blocks left out
    unless `typing`: a hint's import ties modules as much as a run-time one)."""
    import ast

    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
        if "labextension" not in p.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"))
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
            for n in ast.walk(node)
        }
        graph[name] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only and not typing:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_imports_point_down_and_make_no_circle():
    graph = _imports()
    upward = sorted(
        (a, b) for a, bs in graph.items() for b in bs if None not in (_layer(a), _layer(b)) and _layer(b) > _layer(a)
    )
    assert upward == []

    def circles(graph: dict[str, set[str]]) -> list[str]:
        def reaches(start: str, goal: str, seen: set[str]) -> bool:
            for nxt in graph[start]:
                if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                    return True
            return False

        return sorted(a for a in graph if reaches(a, a, set()))

    assert circles(graph) == []
    # the imports of ``if TYPE_CHECKING:`` blocks too: a type named both ways is a circle as well
    # (a type several modules need lives in a lower module, or is a Protocol of what is used)
    assert circles(_imports(typing=True)) == []


def test_no_module_outside_the_engine_uses_its_private_names():
    import re

    private = re.compile(r"\b(?:runtime|rt|self\.runtime)\._[a-z]\w*|\._drive\b|_b_begin_run|engine\.\w+ import _")
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for part in ("features", "jupyter", "replay")
        for path in (PACKAGE / part).rglob("*.py")
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if private.search(line)
    ]
    assert found == []
