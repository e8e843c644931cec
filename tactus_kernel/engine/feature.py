"""The seam between the engine and the features built on it.

The engine (this package) runs sandboxed Lua cells, keeps records and
drives coroutines; it knows no primitive beyond ``Step``, ``State``,
``Json``, ``File`` and the like. Everything else (``Human.*``,
``Procedure.*``, agents, specifications, evaluations, the timeline) is a
:class:`Feature`, handed to the runtime by whoever builds it::

    from tactus_kernel.features import default_features
    runtime = Runtime(features=default_features())

A feature declares three things, and the runtime owns all of them:

* its **Lua preludes** (:class:`Prelude`), run in the order the features
  are given, after ``engine/lua/primitives.lua`` and before
  ``engine/lua/limits.lua`` (which stays last: it wraps the library
  functions the preludes captured). Each chunk is called with ``(B, K)``:
  the bridge table and the kernel's private Lua API;
* its **per-runtime state**, made by :meth:`Feature.new_state` and held by
  the runtime (``runtime.state(MyFeature)``), never in a module-level side
  table, so it dies with its runtime and an isolated test run sees the
  same one;
* what it **installs**: effect handlers (``runtime.register_effect``; a
  kind registered twice is refused with :class:`FeatureError`, so no
  feature silently wraps another's handler), observers
  (``runtime.add_observer``) and, rarely, interceptors
  (``runtime.add_interceptor``: code around every effect call, in the
  order added, such as telemetry's spans; see :class:`Interceptor`).

An effect is the Python half of a Lua primitive that waits: the Lua side
yields ``{kind = "...", run = <run id>, ...}`` through ``K.perform``, the
driver awaits ``handler(runtime, run, request)`` and resumes the coroutine
with the values it returns (or raises ``BridgeError`` with a tagged
message, raised as a Lua error at the call site).

:class:`Observer` is how anything (the timeline, composition, telemetry)
learns what happens in a run without wrapping another feature's code: the
engine and the features call :class:`Observers`, which fans each event out
to the observers that override it.

This module lies below ``runtime.py`` (the runtime takes features, calls
their hooks and fans events out through :class:`Observers`), so it does not
import the :class:`~tactus_kernel.engine.runtime.Runtime` back, not even for
hints. A hook or an effect handler is given the Runtime itself, and each
feature names the concrete ``Runtime`` in its own signatures; here it is
:data:`AnyRuntime` (``Any``). That is the simplest honest choice: a Protocol
here would have to repeat the runtime's whole public API, and a feature's
hook that names the concrete Runtime would then break the override rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import CellRun, RunState

AnyRuntime = Any
"""The engine's Runtime, as the seam names it (see the module docstring)."""

EffectHandler = Callable[[AnyRuntime, "RunState", Any], Awaitable[tuple[Any, ...]]]
"""``handler(runtime, run, request) -> values``: what the Lua call returns."""

S = TypeVar("S")


class FeatureError(Exception):
    """A feature set that cannot be installed (a kind registered twice, a
    state asked of a feature the runtime does not have)."""


@dataclass(frozen=True)
class Prelude:
    """One Lua chunk of a feature: a file inside a package, or source text.

    ``Prelude("tactus_kernel.features.human", "human.lua")`` or
    ``Prelude.text("counter", "Counter = {}")``.
    """

    package: str
    name: str
    source: str | None = None

    @classmethod
    def text(cls, name: str, source: str) -> Prelude:
        """A chunk given as text (tests, small features)."""
        return cls("", name, source)

    @property
    def chunk_name(self) -> str:
        """How Lua error messages name it: ``[tactus human]``."""
        return "[tactus " + self.name.rsplit("/", 1)[-1].removesuffix(".lua") + "]"

    def read(self) -> str:
        if self.source is not None:
            return self.source
        return resources.files(self.package).joinpath(self.name).read_text("utf-8")


class Feature(Generic[S]):
    """A primitive family: Lua preludes, effect handlers, per-runtime state.

    Subclass it, set :attr:`name` and :attr:`preludes`, override
    :meth:`new_state` if the feature keeps anything per runtime, and
    :meth:`install` to register effects and observers. Instances hold no
    per-runtime data, so one instance may serve several runtimes.
    """

    name: ClassVar[str] = ""
    preludes: ClassVar[Sequence[Prelude]] = ()

    def new_state(self, runtime: AnyRuntime) -> S:
        """The feature's state in `runtime` (``runtime.state(type(self))``).
        Called once per runtime, after every prelude ran and before any
        feature's :meth:`install`."""
        return None  # type: ignore[return-value]

    def install(self, runtime: AnyRuntime, state: S) -> None:
        """Register effects (``runtime.register_effect``) and observers
        (``runtime.add_observer``). Called in the order the features are given."""


class Observer:
    """What happens in a runtime, told as it happens. Every method is a
    no-op here: subclass and override the events you need (only overridden
    methods are called, so an unused event costs nothing).

    The order of events for one cell that runs a procedure which records a
    step, asks a person and calls a child that takes an agent turn (as
    tests/test_feature_seam.py checks)::

        run_started(top)                       the cell's own code (run.spec is None)
        run_started(main)                      a procedure the cell declares
          checkpoint_recorded(main, step)
          human_wait_started(main, request)    a card is shown ...
          human_wait_ended(main, request)      ... and answered (or timed out, or stopped)
          checkpoint_recorded(main, human)
          child_called(main, "child", "run")
          checkpoint_recorded(main, procedure) the call's checkpoint, filled in at its end
          run_started(child)
          child_started(main, child, entry)
            agent_turn_started(child, "helper")
            checkpoint_recorded(child, agent)
            agent_turn_ended(child, "helper", True)
          run_ended(child, True, None)
          child_ended(main, child, entry)      entry["status"] is the outcome
        run_ended(main, True, None)
        cell_settling(cell)                    awaited: spawned children may still finish
        cell_closed(cell)                      always, also after an error or an interrupt

    A replayed run tells only the runs, ``child_called`` and the cell events.
    ``effect_failed`` and ``message_injected`` come where they happen;
    ``cell_cancelling`` only at the end of an isolated run (a spec scenario).

    Runs are :class:`~tactus_kernel.engine.runs.RunState` (``run.key`` is
    its record key, ``run.title`` how a person knows it, ``run.id`` unique
    in the kernel); entries are the record's checkpoint dicts
    (docs/metadata.md). Observers must not raise: an exception here is a
    kernel fault.
    """

    # -------------------------------------------------------------- runs
    def run_started(self, run: RunState) -> None:
        """A run began: a cell's own code, a procedure, or a child procedure."""

    def run_ended(self, run: RunState, ok: bool, error: Any) -> None:
        """A procedure run returned (`ok`) or failed (`error`: the message,
        a string or the Lua error table). A cell's own code has no end
        event; :meth:`cell_closed` ends it."""

    def checkpoint_recorded(self, run: RunState, entry: dict[str, Any]) -> None:
        """A new checkpoint was appended to the run's record (a step's
        value, a human answer, an agent turn, a sleep, a wait outcome).
        Replayed checkpoints are not told."""

    def effect_failed(self, run: RunState, kind: str, error: BaseException, since: float) -> None:
        """The handler of effect `kind` raised (or was cancelled); it began
        at ``time.perf_counter() == since``."""

    # ------------------------------------------------------------ humans
    def human_wait_started(self, run: RunState, request: Any) -> None:
        """The run now waits for a person (`request`: the HumanRequest the
        host shows). Not told for answers taken from the record or given
        in advance."""

    def human_wait_ended(self, run: RunState, request: Any) -> None:
        """The wait is over: answered, timed out, or stopped."""

    # ------------------------------------------------------------ agents
    def agent_turn_started(self, run: RunState, agent: str) -> None:
        """An agent turn of `agent` begins (replayed turns included)."""

    def agent_turn_ended(self, run: RunState, agent: str, ok: bool) -> None:
        """The turn returned (`ok`) or failed."""

    # ----------------------------------------------- child procedures
    def child_called(self, parent: RunState, name: str, mode: str) -> None:
        """``Procedure.run`` / ``spawn`` (`mode` ``"run"`` / ``"spawn"``) of
        procedure `name` was called by `parent`, before its record is read."""

    def child_started(self, parent: RunState, child: RunState, entry: dict[str, Any]) -> None:
        """The child's run began; `entry` is the parent's checkpoint of the call."""

    def child_ended(self, parent: RunState, child: RunState | None, entry: dict[str, Any]) -> None:
        """The call has its outcome in ``entry["status"]`` (completed,
        failed, cancelled, interrupted). `child` is None when the call
        failed before its run began (bad params)."""

    def message_injected(self, run: RunState, message: str) -> None:
        """``Procedure.inject`` queued `message` for the run's next agent turn."""

    # -------------------------------------------------------------- cells
    async def cell_settling(self, cell: CellRun) -> None:
        """The cell's code returned: awaited before the record is checked
        (work started by the cell may still finish here)."""

    async def cell_cancelling(self, cell: CellRun) -> None:
        """An isolated run is over: stop what it started, and wait until it
        has stopped (told before :meth:`cell_closed`)."""

    def cell_closed(self, cell: CellRun) -> None:
        """The cell is over, however it ended."""


EVENTS = tuple(name for name, value in vars(Observer).items() if callable(value) and not name.startswith("_"))


class Interceptor:
    """Code around every effect call (telemetry needs the whole call: its
    start, its answer and its exception). ``intercept`` must await
    ``proceed()`` exactly once and return (or raise) what it gives; the
    first interceptor added is the outermost. The default passes through."""

    async def intercept(
        self, kind: str, run: RunState, request: Any, proceed: Callable[[], Awaitable[tuple[Any, ...]]]
    ) -> tuple[Any, ...]:
        return await proceed()


class Observers:
    """The observers of one runtime, called as one: ``observers.run_started(run)``
    calls ``run_started`` of every observer that overrides it, in the order
    they were added."""

    def __init__(self) -> None:
        self.all: list[Observer] = []
        # event -> the observers that override it (their methods are looked up
        # at each call, so a method replaced later is the one called)
        self._subscribed: dict[str, list[Observer]] = {name: [] for name in EVENTS}

    def add(self, observer: Observer) -> None:
        if not isinstance(observer, Observer):
            raise FeatureError(f"{observer!r} is not a tactus_kernel.engine.feature.Observer")
        self.all.append(observer)
        for name in EVENTS:
            if getattr(type(observer), name) is not getattr(Observer, name):
                self._subscribed[name].append(observer)

    def wants(self, event: str) -> bool:
        """Whether any observer listens to `event` (to skip preparing its data)."""
        return bool(self._subscribed[event])

    def run_started(self, run: RunState) -> None:
        for o in self._subscribed["run_started"]:
            o.run_started(run)

    def run_ended(self, run: RunState, ok: bool, error: Any) -> None:
        for o in self._subscribed["run_ended"]:
            o.run_ended(run, ok, error)

    def checkpoint_recorded(self, run: RunState, entry: dict[str, Any]) -> None:
        for o in self._subscribed["checkpoint_recorded"]:
            o.checkpoint_recorded(run, entry)

    def effect_failed(self, run: RunState, kind: str, error: BaseException, since: float) -> None:
        for o in self._subscribed["effect_failed"]:
            o.effect_failed(run, kind, error, since)

    def human_wait_started(self, run: RunState, request: Any) -> None:
        for o in self._subscribed["human_wait_started"]:
            o.human_wait_started(run, request)

    def human_wait_ended(self, run: RunState, request: Any) -> None:
        for o in self._subscribed["human_wait_ended"]:
            o.human_wait_ended(run, request)

    def agent_turn_started(self, run: RunState, agent: str) -> None:
        for o in self._subscribed["agent_turn_started"]:
            o.agent_turn_started(run, agent)

    def agent_turn_ended(self, run: RunState, agent: str, ok: bool) -> None:
        for o in self._subscribed["agent_turn_ended"]:
            o.agent_turn_ended(run, agent, ok)

    def child_called(self, parent: RunState, name: str, mode: str) -> None:
        for o in self._subscribed["child_called"]:
            o.child_called(parent, name, mode)

    def child_started(self, parent: RunState, child: RunState, entry: dict[str, Any]) -> None:
        for o in self._subscribed["child_started"]:
            o.child_started(parent, child, entry)

    def child_ended(self, parent: RunState, child: RunState | None, entry: dict[str, Any]) -> None:
        for o in self._subscribed["child_ended"]:
            o.child_ended(parent, child, entry)

    def message_injected(self, run: RunState, message: str) -> None:
        for o in self._subscribed["message_injected"]:
            o.message_injected(run, message)

    async def cell_settling(self, cell: CellRun) -> None:
        for o in self._subscribed["cell_settling"]:
            await o.cell_settling(cell)

    async def cell_cancelling(self, cell: CellRun) -> None:
        for o in self._subscribed["cell_cancelling"]:
            await o.cell_cancelling(cell)

    def cell_closed(self, cell: CellRun) -> None:
        for o in self._subscribed["cell_closed"]:
            o.cell_closed(cell)
