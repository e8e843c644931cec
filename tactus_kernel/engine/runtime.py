"""The procedure runtime: one sandboxed Lua state, its records, its features.

A :class:`Runtime` runs cells (:meth:`Runtime.execute`) and the procedures
they declare. It is made of three parts, each in its own module:

* this one: the cells, the features and the session (records, host,
  answers) runs read and write;
* engine/bridge.py: the synchronous functions Lua calls (``B``);
* engine/driver.py: the coroutine driver that answers effects.

The primitives beyond the engine's own (``Human``, ``Procedure``, agents,
specifications, evaluations, the timeline) are features handed to it
(engine/feature.py); the engine never imports them. This module is
independent of Jupyter; the kernel is a :class:`~tactus_kernel.engine.host.Host`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from tactus_kernel.engine import errors
from tactus_kernel.engine.bridge import LUA_ERRORS, Bridge, BridgeError, internal_message, lua_message
from tactus_kernel.engine.display import displayable
from tactus_kernel.engine.driver import Driver
from tactus_kernel.engine.errors import CellError, Failure
from tactus_kernel.engine.feature import EffectHandler, Feature, FeatureError, Interceptor, Observer, Observers
from tactus_kernel.engine.host import ConsoleHost, Host
from tactus_kernel.engine.interrupts import Interrupter
from tactus_kernel.engine.limits import RunLimits
from tactus_kernel.engine.records import DivergenceError, NotRecordedError, Records
from tactus_kernel.engine.runs import (
    CURRENT,
    CellRun,
    ProcedureSpec,
    RunState,
    Scope,
    Session,
    cell_title,
    scoped,
    source_key,
)
from tactus_kernel.engine.sandbox import DEFAULT_MAX_MEMORY, HOOK_COUNT, load_prelude, new_lua
from tactus_kernel.engine.values import NotRecordable, check_value, to_lua

__all__ = [
    "LUA_ERRORS",
    "BridgeError",
    "CellRun",
    "EffectHandler",
    "ProcedureSpec",
    "RunState",
    "Runtime",
    "Session",
    "cell_title",
    "internal_message",
    "lua_message",
    "source_key",
]

log = logging.getLogger("tactus_kernel")

S = TypeVar("S")

# A line that begins so cannot begin an expression: the search for a
# cell's trailing expression skips it instead of compiling twice to learn that.
_NOT_AN_EXPRESSION = re.compile(r"(?:end|until|else|elseif|return|local|for|while|if|repeat|do|goto|break)\b|::|[)\]}]")


class Runtime(Bridge, Driver):
    """A persistent Lua runtime with procedures, records and an effect driver.

    `features` are installed in the order given (their Lua preludes run in
    that order); ``tactus_kernel.features.default_features()`` is the set a
    kernel runs with, ``default_runtime(**kw)`` builds a runtime with it.
    """

    def __init__(
        self,
        root: Path | str = ".",
        host: Host | None = None,
        max_memory: int | None = DEFAULT_MAX_MEMORY,
        hook_count: int = HOOK_COUNT,
        allow_divergence: bool = False,
        records: Records | None = None,
        features: Iterable[Feature[Any]] = (),
    ) -> None:
        self.root = Path(root).resolve()
        self.max_memory = max_memory
        self.session = Session(
            records=records if records is not None else Records(),
            host=host or ConsoleHost(),
            allow_divergence=allow_divergence,
        )
        self.procedures: dict[str, ProcedureSpec] = {}
        # cell key -> (label, code) of each cell run, latest run last (%tactus export)
        self.cell_sources: dict[str, tuple[str, str]] = {}
        self.effects: dict[str, EffectHandler] = {}
        self.runs: dict[int, RunState] = {}
        self._next_run = 0
        self._cell: CellRun | None = None
        self._interrupted = False
        self.observers = Observers()
        self.interceptors: list[Interceptor] = []  # around every effect call, outermost first
        # Stop what features started outside Lua (MCP server processes) at
        # `%tactus reset` and kernel shutdown; each takes the seconds it may wait.
        self.closers: list[Callable[[float], None]] = []
        self.limits = RunLimits(self)  # procedure({timeout = ...}): see limits.py
        self.observers.add(self.limits)
        self.features: tuple[Feature[Any], ...] = tuple(features)
        self._states: dict[type, Any] = {}
        self._owners: dict[str, str] = {}  # effect kind -> the feature that registered it
        self._installing = "the runtime"
        self.lua = new_lua(max_memory)
        bridge = {
            name: getattr(self, "_b_" + name)
            for name in (
                "write",
                "log",
                "declare",
                "begin_run",
                "end_run",
                "step_replay",
                "record",
                "record_flat",
                "checkpoint",
                "json_encode",
                "json_decode",
                "file",
            )
        }
        bridge["interrupted"] = self._poll_interrupt
        self.K = load_prelude(self.lua, bridge, hook_count, [p for f in self.features for p in f.preludes])
        self._step = self.K.step  # looked up once: the driver calls it at every effect
        self._interrupter = Interrupter(self.K)
        self._collectgarbage = self.lua.eval("collectgarbage")
        self._tostring = self.K.show_tostring
        self._install()

    # ------------------------------------------------------------- features
    def _install(self) -> None:
        for feature in self.features:
            if type(feature) in self._states:
                raise FeatureError(f"feature {feature.name or type(feature).__name__!r} is given twice")
            self._states[type(feature)] = feature.new_state(self)
        for feature in self.features:
            self._installing = feature.name or type(feature).__name__
            feature.install(self, self._states[type(feature)])
        self._installing = "the runtime"

    def register_effect(self, kind: str, handler: EffectHandler) -> None:
        """Answer the Lua effect `kind` with `handler` (see engine/feature.py).
        A kind has one handler: registering it again raises FeatureError."""
        owner = self._owners.get(kind)
        if owner is not None:
            raise FeatureError(
                f"effect kind {kind!r} is registered twice: by feature {owner!r} and by feature {self._installing!r}"
            )
        self._owners[kind] = self._installing
        self.effects[kind] = handler

    def add_observer(self, observer: Observer) -> None:
        """Tell `observer` what happens in this runtime (engine/feature.py: Observer)."""
        self.observers.add(observer)

    def add_interceptor(self, interceptor: Interceptor) -> None:
        """Run `interceptor` around every effect call (engine/feature.py: Interceptor)."""
        if not isinstance(interceptor, Interceptor):
            raise FeatureError(f"{interceptor!r} is not a tactus_kernel.engine.feature.Interceptor")
        self.interceptors.append(interceptor)

    def state(self, feature: type[Feature[S]]) -> S:
        """The per-runtime state of an installed feature (what its ``new_state`` made)."""
        try:
            return self._states[feature]
        except KeyError:
            names = ", ".join(f.name or type(f).__name__ for f in self.features) or "none"
            raise FeatureError(
                f"feature {feature.__name__} is not installed in this runtime (its features: {names})"
            ) from None

    def has_feature(self, feature: type[Feature[Any]]) -> bool:
        return feature in self._states

    # -------------------------------------------------------------- session
    def _session(self) -> Session:
        scope = CURRENT.get()
        return scope.session if scope is not None and scope.owner is self else self.session

    @property
    def records(self) -> Records:
        """Where runs record (an isolated run's own, while one runs)."""
        return self._session().records

    @records.setter
    def records(self, value: Records) -> None:
        self.session.records = value

    @property
    def host(self) -> Host:
        return self._session().host

    @host.setter
    def host(self, value: Host) -> None:
        self.session.host = value

    @property
    def batch(self) -> bool:
        return self._session().batch

    @batch.setter
    def batch(self, value: bool) -> None:
        self.session.batch = value

    @property
    def answers(self) -> dict[str, Any]:
        return self._session().answers

    @answers.setter
    def answers(self, value: dict[str, Any]) -> None:
        self.session.answers = value

    @property
    def param_overrides(self) -> dict[str, dict[str, Any]]:
        return self._session().param_overrides

    @param_overrides.setter
    def param_overrides(self, value: dict[str, dict[str, Any]]) -> None:
        self.session.param_overrides = value

    @property
    def allow_divergence(self) -> bool:
        return self._session().allow_divergence

    @allow_divergence.setter
    def allow_divergence(self, value: bool) -> None:
        self.session.allow_divergence = value

    def current_cell(self) -> CellRun | None:
        """The cell being executed (an isolated run's own cell, while one runs)."""
        scope = CURRENT.get()
        return scope.cell if scope is not None and scope.owner is self else self._cell

    @contextlib.asynccontextmanager
    async def isolated(self, cell: CellRun, session: Session) -> AsyncIterator[RunState]:
        """Run procedures in `cell` on `session` (its own records, host,
        answers): for the code in the block, and the tasks it starts, the
        runtime reads and writes `session`; everything else meanwhile (and
        everything after) sees the runtime's own. Yields the cell's top run,
        the parent to give :meth:`begin_run`. When the block ends, what the
        cell started is stopped (observers' ``cell_cancelling``) and the cell
        closed."""
        with scoped(Scope(self, session, cell)):
            try:
                yield self._new_run(cell.key, None, cell)
                await self.observers.cell_cancelling(cell)
            finally:
                self.observers.cell_closed(cell)
                for run_id in [i for i, r in self.runs.items() if r.cell is cell]:
                    del self.runs[run_id]

    def reset_interrupt(self) -> None:
        """Forget an earlier interrupt, as a cell's start does (a command that
        runs procedures outside a cell, e.g. ``%tactus test``)."""
        self._interrupted = False
        self.K.reset_interrupt()

    # ------------------------------------------------------------------ API
    def interrupt(self) -> None:
        """Stop running Lua code; safe from a signal handler or another thread."""
        self._interrupted = True
        self._interrupter.arm()

    def _poll_interrupt(self) -> bool:
        return self._interrupted

    def was_interrupted(self) -> bool:
        """Whether the running cell was interrupted (the button, or a procedure's time limit)."""
        return self._interrupted or bool(self.K.was_interrupted())

    def compile_cell(self, code: str, label: str) -> Any:
        """Compile a cell; a trailing expression becomes its return value.

        Like the Lua REPL, an expression is tried first. Otherwise the last
        top-level statement that is a valid expression gets a ``return``
        (only when the code before it compiles on its own, so a line inside
        a block is never turned into an early return). Line numbers stay
        those of the cell.
        """
        chunk = f"={label}"
        for expr in (f"return ({code}\n)", "return " + code):
            fn, err = self.K.compile(expr, chunk)
            if fn is not None:
                return fn
        lines = code.split("\n")
        last = len(lines) - 1
        while last >= 0 and (not lines[last].strip() or lines[last].strip().startswith("--")):
            last -= 1
        for i in range(last, max(-1, last - 30), -1):
            line = lines[i].lstrip()
            if not line or _NOT_AN_EXPRESSION.match(line):
                continue
            prefix = "\n".join(lines[:i])
            suffix = "\n".join(lines[i:])
            # the suffix first: it is short, and most lines of a block fail
            # to parse as an expression within a few tokens
            for ret in (f"return ({suffix}\n)", "return " + suffix):
                if self.K.compile(ret, chunk)[0] is None:
                    continue
                if self.K.compile(prefix, chunk)[0] is None:
                    break
                fn2, _ = self.K.compile(prefix + ("\n" if i else "") + ret, chunk)
                if fn2 is not None:
                    return fn2
        # compiled as it is only now: with a trailing expression found, that
        # whole-cell parse would be wasted (the cell's cost, at every run)
        fn, err = self.K.compile(code, chunk)
        if fn is None:
            raise CellError.simple("LuaSyntaxError", str(err))
        return fn

    def is_complete(self, code: str) -> str:
        """The Lua REPL rule: an error at <eof> means "keep typing"."""
        if not code.strip():
            return "complete"
        at_eof = False
        for candidate in ("return " + code, code):
            fn, err = self.K.compile(candidate, "=stdin")
            if fn is not None:
                return "complete"
            at_eof = at_eof or str(err).endswith("<eof>")
        return "incomplete" if at_eof else "invalid"

    async def execute(self, code: str, label: str = "[cell]", key: str | None = None) -> list[Any]:
        """Run one cell and the procedures it declares.

        Returns the values to show as the cell's result; raises CellError,
        and only CellError (a fault of the kernel is an InternalError).
        """
        try:
            return await self._execute(code, label, key)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            raise self._as_cell_error(exc, label) from None

    def _as_cell_error(self, exc: Exception, label: str) -> CellError:
        if isinstance(exc, CellError):
            return exc
        log.error("Tactus: internal error in %s", label, exc_info=exc)
        return errors.internal_error(exc, label)

    async def _execute(self, code: str, label: str, key: str | None) -> list[Any]:
        self._interrupted = False
        self.K.reset_interrupt()
        fn = self.compile_cell(code, label)
        cell_run = CellRun(label, key or source_key(code), title=cell_title(label, code))
        self.cell_sources.pop(cell_run.key, None)
        self.cell_sources[cell_run.key] = (label, code)
        async with self._cell_run(cell_run) as (cell, ctx):
            values = await self.drive(self.K.start(fn, ctx))
            cell.collecting = False
            # nil from a trailing call (specifications(...), step(...), print(...))
            # is no result: the procedure's own result is shown instead
            shown = [self.show(v) for v in values if v is not None and not self.K.is_handle(v)]
            for proc_key in cell.declared:
                if self._needs_params(proc_key):
                    continue  # declared, not run: it waits for its params (%tactus run)
                out = await self.drive(self.K.start(self.K.procedure_main(proc_key), ctx))
                if not shown and out and out[0] is not None:
                    shown = [self.show(out[0])]
            await self._settle(cell)
            return [v for v in shown if v is not None]

    def _needs_params(self, key: str) -> bool:
        """A procedure with required params that have no default (nor a value
        given for the notebook) is only declared when its cell runs: say which
        params it needs and how to run it, instead of failing the cell."""
        spec = self.procedures[key]
        given = self.param_overrides.get(key, {})
        missing = [n for n, f in spec.params.items() if f.required and f.default is None and n not in given]
        if not missing:
            return False
        needs = ", ".join(f"{n} ({spec.params[n].type})" for n in missing)
        example = " ".join(f"{n}=..." for n in missing)
        self.host.write(
            "stdout",
            f"procedure '{key}' is declared, not run: it needs the param"
            f"{'s' if len(missing) > 1 else ''} {needs}. Run it with "
            f'`%tactus run {key} {example}` or Procedure.run("{key}", {{...}}).\n',
        )
        return True

    async def run_procedure(self, name: str, params: dict[str, Any] | None = None, label: str = "[run]") -> Any:
        """Run a declared procedure by name (the ``%tactus run`` magic);
        raises CellError only, as :meth:`execute` does."""
        try:
            return await self._run_procedure(name, params, label)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            raise self._as_cell_error(exc, label) from None

    async def _run_procedure(self, name: str, params: dict[str, Any] | None, label: str) -> Any:
        if name not in self.procedures:
            raise CellError.simple("ProcedureError", f"unknown procedure '{name}'")
        self._interrupted = False
        self.K.reset_interrupt()
        for key, value in (params or {}).items():
            try:
                check_value(value, f"param '{key}'")
            except NotRecordable as exc:
                failure = Failure("ParamError", f"procedure '{name}': {exc}", field=key)
                raise CellError.of(failure) from None
        async with self._cell_run(CellRun(label, name, collecting=False, title=name)) as (cell, ctx):
            out = await self.drive(self.K.start(self.K.procedure_main(name, to_lua(self.lua, params or {})), ctx))
            await self._settle(cell)
            return self.show(out[0]) if out else None

    @contextlib.asynccontextmanager
    async def _cell_run(self, cell: CellRun) -> AsyncIterator[tuple[CellRun, Any]]:
        """The frame of one cell execution: its top-level run and Lua context,
        and the clean-up every way it ends."""
        self._cell = cell
        failed = True
        try:
            top = self._new_run(cell.key, None, cell)
            yield cell, self.K.cell_ctx(top.id, cell.key)
            failed = False
        finally:
            self.observers.cell_closed(cell)
            # Run logs end with their cell; a view or widget that outlives the
            # cell must not keep their entries (a record `%tactus reset` drops).
            cell.logs.clear()
            self._close_unfinished()
            self._cell = None
            self.runs = {}
            # After a cell that worked, no collection: Lua's incremental
            # collector keeps pace with allocation on its own, and even a
            # step cost 15 us warm, 110 us after a pause. A failed cell (a
            # memory bomb, say) may leave much garbage: give it back now.
            if failed:
                self._collectgarbage("collect")

    def _close_unfinished(self) -> None:
        """A procedure still running when its cell ends was stopped (an
        interrupt, an error Lua could not catch): its saved record must not
        say "running" for ever."""
        stopped = "interrupted" if self._interrupted or bool(self.K.was_interrupted()) else "failed"
        closed = False
        for run in self.runs.values():
            if run.spec is None or "/" in run.key:
                continue  # a cell's own code has no status; a child's call is closed by its caller's hub
            rec = self.records.lookup(run.key)
            if rec is not None and rec.get("status") == "running":
                self.records.set(run.key, status=stopped)
                closed = True
        if closed:
            self.host.records_changed()

    async def _settle(self, cell: CellRun) -> None:
        """Let spawned procedures nobody waited for finish, then check that
        every run used its whole record."""
        await self.observers.cell_settling(cell)
        for log in cell.logs.values():
            try:
                log.finish()
            except (DivergenceError, NotRecordedError) as exc:  # NotRecordedError: strict mode, one a pcall caught
                raise CellError.of(exc.failure) from None

    def reset(self, keys: list[str] | None = None) -> list[str]:
        """Forget the recorded checkpoints and the declarations of the named
        procedures (of every procedure with no names), and give the memory
        back: running a procedure's cell again declares and runs it afresh.
        Returns the keys whose records were forgotten."""
        targets = list(self.records.procedures) if not keys else keys
        gone = self.records.delete(targets)
        for key in list(self.procedures) if not keys else [k for k in keys if k in self.procedures]:
            del self.procedures[key]
            self.K.forget_procedure(key)
        self._collectgarbage("collect")  # the Lua code and values only they held
        self.close()  # a reset starts afresh: servers started for earlier runs stop (restarted when needed)
        return gone

    def close(self, wait: float = 0.0) -> None:
        """Stop what features started (see ``closers``); ``wait``: seconds to wait for it to end."""
        for closer in self.closers:
            closer(wait)

    def fields(self, path: str) -> list[str]:
        """Names reachable at a dotted path of globals (for completion)."""
        names = self.K.fields(path)
        return [str(n) for n in names.values()] if names is not None else []

    def show(self, value: Any) -> Any:
        """A Lua value as Python data for display; text that is not UTF-8
        shows with U+FFFD (from a sanitised copy) rather than failing.
        Call it outside coroutines: lupa 2.8 indexes Lua tables wrongly from
        Python code that a coroutine called."""
        try:
            shown = displayable(value, self._tostring)
        except UnicodeDecodeError:
            shown = displayable(self.K.safe_copy(value), self._tostring)
        if self._interrupted or bool(self.K.was_interrupted()):  # a key's __tostring looped, and was stopped
            raise self.interrupted_error()
        return shown

    def describe(self, path: str) -> str:
        return str(self.K.describe(path))
