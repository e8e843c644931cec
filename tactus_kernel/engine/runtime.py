"""The procedure runtime: one sandboxed Lua state, its records, its driver.

Cell code and procedure bodies run as Lua coroutines. Whatever must wait
(Sleep, a human answer, an agent turn) is yielded to :meth:`Runtime._drive`
as an effect request, awaited here, and the coroutine resumed with the
answer, so the event loop stays free while a procedure waits. Everything
else the primitives need from Python goes through the synchronous bridge
functions below, each of which returns ``ok, ...`` rather than raising:
an exception object must never reach Lua code.

This module is independent of Jupyter; the kernel is a :class:`Host`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lupa import lua54

from tactus_kernel.engine import errors
from tactus_kernel.engine.display import displayable, lua_repr
from tactus_kernel.engine.errors import CellError, ParamError, not_utf8, tagged
from tactus_kernel.engine.files import FileError, file_op
from tactus_kernel.engine.host import ConsoleHost, Host
from tactus_kernel.engine.interrupts import Interrupter
from tactus_kernel.engine.records import DivergenceError, RecordLimitError, Records, RunLog
from tactus_kernel.engine.sandbox import DEFAULT_MAX_MEMORY, HOOK_COUNT, load_prelude, new_lua
from tactus_kernel.engine.values import NotRecordable, UnfitJson, check_value, loads, to_json, to_lua, to_plain
from tactus_kernel.features import register_effects

if TYPE_CHECKING:
    from tactus_kernel.engine.fields import FieldSpec

log = logging.getLogger("tactus_kernel")

EffectHandler = Callable[["Runtime", "RunState", Any], Awaitable[tuple[Any, ...]]]


class BridgeError(Exception):
    """Raised inside a bridge function; its text (already tagged with an
    error name) becomes the Lua error message."""


@dataclass
class ProcedureSpec:
    """A declared procedure, as far as Python needs to know it."""

    key: str
    params: dict[str, FieldSpec]
    outputs: dict[str, FieldSpec]
    config: dict[str, Any]
    cell: str


# A line that begins so cannot begin an expression: the search for a
# cell's trailing expression skips it instead of compiling twice to learn that.
_NOT_AN_EXPRESSION = re.compile(r"(?:end|until|else|elseif|return|local|for|while|if|repeat|do|goto|break)\b|::|[)\]}]")
# a dict of at most this many scalars is handed between Lua and Python as
# plain arguments (see _b_step_replay and K.step_record in lua/sandbox.lua)
_MAX_FLAT = 64
_FLAT_VALUES = frozenset({str, int, float, bool})


@dataclass
class RunState:
    """One running procedure (or a cell's top-level code)."""

    id: int
    key: str
    log: RunLog
    spec: ProcedureSpec | None
    cell: CellRun
    params: dict[str, Any] = field(default_factory=dict)
    # How a person knows this run (cards, the timeline, the record's "title"):
    # a named procedure by its key; a cell's own code, a procedure with no
    # name (keyed by the cell id, a UUID) and their children by the cell
    # ("cell 3: local ok = Human.approve(…"). See Runtime._new_run.
    title: str = ""


@dataclass
class CellRun:
    """What one cell execution has touched."""

    label: str
    key: str
    logs: dict[str, RunLog] = field(default_factory=dict)
    declared: list[str] = field(default_factory=list)
    collecting: bool = True
    title: str = ""  # see RunState.title and cell_title


def source_key(code: str) -> str:
    """Stable identity for a cell when the client sends no cell id."""
    return "cell-" + hashlib.sha256(code.encode("utf-8")).hexdigest()[:12]


TITLE_LINE = 48  # characters of a cell's first line in its title


def cell_title(label: str, code: str) -> str:
    """``cell 3: local ok = Human.approve({message = "Sh…``: the cell's label
    (from its execution count) and its first non-blank line, shortened."""
    name = label.strip("[]")
    line = next((s.strip() for s in code.splitlines() if s.strip()), "")
    if len(line) > TITLE_LINE:
        line = line[: TITLE_LINE - 1].rstrip() + "…"
    return f"{name}: {line}" if line else name


# Kernel exceptions that reach Lua as errors under their own name.
_TAGGED: tuple[tuple[type[Exception], str], ...] = (
    (DivergenceError, "DivergenceError"),
    (ParamError, "ParamError"),
    (NotRecordable, "NotRecordableError"),
    (RecordLimitError, "NotRecordableError"),
    (FileError, "SandboxError"),
)
LUA_ERRORS: tuple[type[Exception], ...] = (BridgeError, *(cls for cls, _ in _TAGGED))


def lua_message(exc: Exception) -> str:
    """The Lua error message for one of LUA_ERRORS."""
    if isinstance(exc, BridgeError):
        return str(exc)
    for cls, name in _TAGGED:
        if isinstance(exc, cls):
            return tagged(name, str(exc))
    raise TypeError(f"not a kernel error: {exc!r}")


def internal_message(where: str, exc: BaseException) -> str:
    """The Lua error message of a fault in the kernel's own Python code."""
    return tagged("InternalError", errors.internal_error(exc, where).evalue)


def _bridge(method: Callable[..., Any]) -> Callable[..., Any]:
    """Make a method safe to call from Lua: never raises, returns ok first."""

    @functools.wraps(method)
    def wrapper(*args: Any) -> Any:
        try:
            result = method(*args)
        except LUA_ERRORS as exc:
            return False, lua_message(exc)
        except lua54.LuaMemoryError:
            return False, "not enough memory"
        except UnicodeDecodeError:
            return False, tagged(
                "NotRecordableError",
                f"{method.__name__.removeprefix('_b_')}: a string in the value "
                "is not valid UTF-8 text (decode binary data before recording it)",
            )
        except Exception as exc:
            log.error("Tactus: internal error in %s", method.__name__, exc_info=exc)
            return False, internal_message(method.__name__.removeprefix("_b_"), exc)
        if result is None:
            return (True,)
        if isinstance(result, tuple):
            return (True, *result)
        return True, result

    return wrapper


class Runtime:
    """A persistent Lua runtime with procedures, records and an effect driver."""

    def __init__(
        self,
        root: Path | str = ".",
        host: Host | None = None,
        max_memory: int | None = DEFAULT_MAX_MEMORY,
        hook_count: int = HOOK_COUNT,
        allow_divergence: bool = False,
        records: Records | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.host: Host = host or ConsoleHost()
        self.max_memory = max_memory
        self.allow_divergence = allow_divergence
        # Batch mode (replay in CI): a human request with no recorded answer
        # fails at once instead of waiting; `answers` may supply some.
        self.batch = False
        self.answers: dict[str, Any] = {}
        # Params given from outside (``tactus-kernel replay -P``) for procedures
        # run by their own cell: {procedure: {param: value}}.
        self.param_overrides: dict[str, dict[str, Any]] = {}
        self.records = records if records is not None else Records()
        self.procedures: dict[str, ProcedureSpec] = {}
        # cell key -> (label, code) of each cell run, latest run last (%tactus export)
        self.cell_sources: dict[str, tuple[str, str]] = {}
        self.effects: dict[str, EffectHandler] = {}
        self.runs: dict[int, RunState] = {}
        self._next_run = 0
        self._cell: CellRun | None = None
        self._interrupted = False
        # Told when a procedure run starts and ends and when a cell finishes:
        # the composition hub and the live timeline (primitives/composition.py).
        self.run_observers: list[Any] = []
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
        self.K = load_prelude(self.lua, bridge, hook_count)
        self._step = self.K.step  # looked up once: the driver calls it at every effect
        self._interrupter = Interrupter(self.K)
        register_effects(self)
        self._collectgarbage = self.lua.eval("collectgarbage")
        self._tostring = self.K.show_tostring

    # ------------------------------------------------------------------ API
    def interrupt(self) -> None:
        """Stop running Lua code; safe from a signal handler or another thread."""
        self._interrupted = True
        self._interrupter.arm()

    def _poll_interrupt(self) -> bool:
        return self._interrupted

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
            values = await self._drive(self.K.start(fn, ctx))
            cell.collecting = False
            # nil from a trailing call (specifications(...), step(...), print(...))
            # is no result: the procedure's own result is shown instead
            shown = [self.show(v) for v in values if v is not None and not self.K.is_handle(v)]
            for proc_key in cell.declared:
                if self._needs_params(proc_key):
                    continue  # declared, not run: it waits for its params (%tactus run)
                out = await self._drive(self.K.start(self.K.procedure_main(proc_key), ctx))
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
                raise CellError.simple("ParamError", f"procedure '{name}': {exc}") from None
        async with self._cell_run(CellRun(label, name, collecting=False, title=name)) as (cell, ctx):
            out = await self._drive(self.K.start(self.K.procedure_main(name, to_lua(self.lua, params or {})), ctx))
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
            for observer in self.run_observers:
                observer.cell_closed(cell)
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
                rec["status"] = stopped
                self.records.touch(run.key)
                closed = True
        if closed:
            self.host.records_changed()

    async def _settle(self, cell: CellRun) -> None:
        """Let spawned procedures nobody waited for finish, then check that
        every run used its whole record."""
        for observer in self.run_observers:
            await observer.cell_settling(cell)
        for log in cell.logs.values():
            try:
                log.finish()
            except DivergenceError as exc:
                raise CellError.simple("DivergenceError", str(exc)) from None

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
        return gone

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

    # --------------------------------------------------------------- driver
    def _new_run(self, key: str, spec: ProcedureSpec | None, cell: CellRun) -> RunState:
        log = cell.logs.get(key)
        if log is None:
            log = cell.logs[key] = RunLog(self.records, key, self.allow_divergence)
        self._next_run += 1
        root, slash, rest = key.partition("/")
        declared = self.procedures.get(root)
        named = declared is not None and bool(declared.config.get("name"))
        title = cell.title + slash + rest if root == cell.key and cell.title and not named else key
        run = RunState(self._next_run, key, log, spec, cell, title=title)
        if not slash:  # a child's record is nested in its caller's, which has the title
            log.title = title
        self.runs[run.id] = run
        for observer in self.run_observers:
            observer.run_started(run)
        return run

    async def _drive(self, thread: int) -> list[Any]:
        """Resume a coroutine until it finishes, answering its effects."""
        send: tuple[Any, ...] = ()
        self._interrupter.add(thread, self.K.address(thread))
        if self._interrupted:
            self._interrupter.arm()
        try:
            while True:
                try:
                    status, *rest = self._step(thread, *send)
                except lua54.LuaMemoryError:
                    raise self._memory_error() from None
                if status == "done":
                    packed = rest[0]
                    try:
                        return [packed[i] for i in range(1, int(packed["n"]) + 1)]
                    except UnicodeDecodeError:  # text that is not UTF-8: show it with U+FFFD
                        packed = self.K.safe_copy(packed)
                        return [packed[i] for i in range(1, int(packed["n"]) + 1)]
                if status == "error":
                    raise self._lua_error(*rest)
                request = rest[0]
                if request is None:
                    send = ()
                    continue
                send = await self._perform(request, rest[1], rest[2])
        finally:
            self.K.close_thread(thread)  # __close handlers may loop: still interruptible here
            self._interrupter.remove(thread)
            self.K.drop(thread)

    async def _perform(self, request: Any, kind: Any, run_id: Any) -> tuple[Any, ...]:
        """Answer one effect (K.step reads its kind and run in Lua and hands them over with it)."""
        handler = self.effects.get(kind)
        run = self.runs.get(run_id)
        if handler is None or run is None:
            return False, tagged("InternalError", f"no handler for effect {kind!r} of run {run_id!r}")
        try:
            values = await handler(self, run, request)
            for value in values:  # lupa copies an answer's text into Lua: it must fit under the cap
                if type(value) is str:
                    to_lua(self.lua, value)
        except LUA_ERRORS as exc:
            return False, lua_message(exc)
        except lua54.LuaMemoryError:
            return False, "not enough memory"
        except UnicodeDecodeError as exc:  # lupa reading a string the effect was given
            return False, tagged("SandboxError", not_utf8(exc))
        except Exception as exc:
            log.error("Tactus: internal error in the %s effect", kind, exc_info=exc)
            return False, internal_message(f"the {kind} effect", exc)
        return (True, *values)

    def _lua_error(
        self, message: Any, traceback: Any, ename: Any = None, trusted: Any = False, value: Any = None
    ) -> CellError:
        """The CellError of a failed thread. `trusted` says the kernel raised
        the message itself (lua/sandbox.lua: mark_raised), so its "Name: "
        prefix is a kind; a cell's own text never is. `value`: a table raised
        as the error (``error({code = 42})``), shown as a Lua constructor
        rather than its address (see K.step)."""
        message = str(message)
        if self._interrupted or bool(self.K.was_interrupted()):
            return self.interrupted_error()
        if "not enough memory" in message:
            return self._memory_error()
        for prefix in ("[tactus primitives]", "[tactus sandbox]"):
            while message.startswith(prefix):
                message = message.split(": ", 1)[-1]
        tb = None if traceback is None else str(traceback)
        shown = None
        if value is not None:
            with contextlib.suppress(Exception):  # a value that cannot be shown keeps its "table: 0x..."
                shown = lua_repr(self.show(value))
        return errors.from_lua(message, tb, None if ename is None else str(ename), shown, trusted=bool(trusted))

    def interrupted_error(self) -> CellError:
        """The error of an interrupted cell, naming the line of cell code
        that was running when it came (if Lua code was running)."""
        where = self.K.interrupted_at()
        return CellError.simple("KeyboardInterrupt", "interrupted by the user" + (f" at {where}" if where else ""))

    def _memory_error(self) -> CellError:
        self._collectgarbage("collect")
        limit = f"{self.max_memory / 2**20:g} MiB" if self.max_memory else "the machine's"
        msg = f"the cell ran out of memory (limit {limit}); the kernel is still running"
        return CellError.simple("LuaMemoryError", msg)

    def _run(self, run_id: int) -> RunState:
        run = self.runs.get(run_id)
        if run is None:
            raise BridgeError("CheckpointError: this call was made outside a running cell or procedure")
        return run

    # ---------------------------------------------------------------- bridge
    @_bridge
    def _b_write(self, stream: str, text: str) -> None:
        self.host.write("stderr" if stream == "stderr" else "stdout", str(text))

    @_bridge
    def _b_log(self, level: str, message: str, context: Any) -> None:
        line = f"[{level.upper()}] {message}"
        if context is not None:
            try:
                shown = json.dumps(displayable(context, self._tostring), ensure_ascii=False, default=str)
            except UnicodeDecodeError:
                shown = "(a context holding text that is not UTF-8)"
            line += " " + shown
        self.host.write("stderr" if level in ("warn", "error") else "stdout", line + "\n")

    @_bridge
    def _b_declare(self, config: Any) -> str:
        from tactus_kernel.engine.fields import parse_fields  # pydantic, loaded by the first declaration

        plain = to_plain(config) if config is not None else {}
        if not isinstance(plain, dict):
            plain = {}
        cell = self._cell
        name = plain.get("name")
        if name is not None and not isinstance(name, str):
            raise BridgeError("ProcedureError: procedure name must be a string")
        if name is not None and "/" in name:  # "/" separates a child's record key from its caller's
            raise BridgeError(f"ProcedureError: procedure name {name!r} must not contain '/'")
        key = name or (cell.key if cell else None)
        if not key:
            raise BridgeError("ProcedureError: an unnamed procedure must be declared at the top level of a cell")
        owner = f"procedure '{key}'"
        spec = ProcedureSpec(
            key=key,
            # input / output: the names some reference Tactus versions give params / outputs
            params=parse_fields(plain.get("params", plain.get("input")), f"{owner}: params"),
            outputs=parse_fields(plain.get("outputs", plain.get("output")), f"{owner}: outputs"),
            config=plain,
            cell=cell.label if cell else "",
        )
        self.procedures[key] = spec
        if cell is not None and cell.collecting and key not in cell.declared:
            cell.declared.append(key)
        return key

    @_bridge
    def _b_begin_run(self, key: str, given: Any, parent_run: Any, record_key: str | None = None) -> tuple[int, Any]:
        """Start a run of procedure `key`; `record_key` (given for a child
        procedure, see primitives/composition.py) is where its record lives."""
        from tactus_kernel.engine.fields import validate_params

        spec = self.procedures.get(key)
        if spec is None:
            raise BridgeError(f"ProcedureError: unknown procedure '{key}'")
        cell = self._cell
        if cell is None:
            raise BridgeError("ProcedureError: procedures run only inside a cell")
        given_py = to_json(given, "params") if given is not None else {}
        if given_py == []:
            given_py = {}
        if not isinstance(given_py, dict):
            raise BridgeError(f"ParamError: procedure '{key}': params must be a table of name = value")
        if record_key is None:
            given_py = {**self.param_overrides.get(key, {}), **given_py}
        validated = validate_params(f"procedure '{key}'", spec.params, given_py)
        run = self._new_run(record_key or key, spec, cell)
        run.params = validated
        rec = self.records.record(run.key)
        rec.update(status="running", params=validated)
        self.records.touch(run.key)
        return run.id, to_lua(self.lua, validated)

    @_bridge
    def _b_end_run(self, run_id: int, ok: bool, result: Any) -> Any:
        from tactus_kernel.engine.fields import validate_outputs

        run = self.runs.pop(run_id)
        rec = self.records.record(run.key)
        self.records.touch(run.key)
        if not ok:
            rec["status"] = "failed"
            self._ended(run, False, result)
            return None
        spec = run.spec
        assert spec is not None
        try:
            value = to_json(result, "the returned value")
            out = validate_outputs(f"procedure '{run.key}'", spec.outputs, value)
        except (ParamError, NotRecordable) as exc:
            rec["status"] = "failed"
            problem = str(exc) if isinstance(exc, ParamError) else f"procedure '{run.key}': {exc}"
            self._ended(run, False, tagged("OutputError", problem))
            raise BridgeError(tagged("OutputError", problem)) from None
        rec["status"] = "completed"
        rec["output"] = out
        self._ended(run, True, None)
        return to_lua(self.lua, out)

    def _ended(self, run: RunState, ok: bool, error: Any) -> None:
        for observer in self.run_observers:
            observer.run_ended(run, ok, error)

    def _b_step_replay(self, run_id: int, name: str) -> tuple[Any, ...]:
        """Step.run's look-up, the hottest call of all: a small flat table
        comes back as ``"flat", k1, v1, ...`` for Lua to rebuild (cheaper
        than lupa building it), anything else as ``"value", v``, and no
        record as nothing. Catches its own errors, as ``_bridge`` would,
        without the cost of the general wrapper."""
        try:
            run = self.runs.get(run_id) or self._run(run_id)  # _run, inlined but for its error
            entry = run.log.replay("step", name)
            if entry is None:
                return (True,)
            value: Any = entry.get("value")
            if type(value) is dict and len(value) <= _MAX_FLAT:
                out: list[Any] = [True, "flat"]
                for item in value.items():
                    if type(item[1]) not in _FLAT_VALUES:
                        break
                    out += item
                else:
                    return tuple(out)
            return True, "value", to_lua(self.lua, value)
        except LUA_ERRORS as exc:
            return False, lua_message(exc)
        except lua54.LuaMemoryError:
            return False, "not enough memory"

    @_bridge
    def _b_record(self, run_id: int, kind: str, name: str, value: Any) -> None:
        run = self._run(run_id)
        try:
            py = to_json(value, "the result")
        except NotRecordable as exc:
            raise BridgeError(
                tagged(
                    "NotRecordableError",
                    f"Step '{name}': {exc}; a recorded value must be JSON (tables, strings, numbers, booleans, nil)",
                )
            ) from None
        run.log.append(kind, name, py)
        self.host.records_changed()

    @_bridge
    def _b_record_flat(self, run_id: int, kind: str, name: str, *entries: Any) -> None:
        """:meth:`_b_record` of a small table of scalars with string keys,
        handed over as ``k1, v1, k2, v2, ...`` (the Lua side checked them)."""
        run = self._run(run_id)
        run.log.append(kind, name, dict(sorted(zip(entries[::2], entries[1::2], strict=True))))
        self.host.records_changed()

    @_bridge
    def _b_checkpoint(self, run_id: int, op: str, name: str | None = None) -> Any:
        log = self._run(run_id).log
        if op == "clear_all":
            log.clear_from(0)
            self.host.records_changed()
            return None
        index = log.find(str(name))
        if op == "exists":
            return index is not None
        if op == "get":
            return None if index is None else to_lua(self.lua, log.entries[index].get("value"))
        if op == "clear_after":
            if index is not None:
                log.clear_from(index)
                self.host.records_changed()
            return None
        raise BridgeError(f"CheckpointError: unknown operation {op}")

    @_bridge
    def _b_json_encode(self, value: Any) -> str:
        try:
            # lupa copies the text into Lua: it must fit under the cap (see make_room)
            return to_lua(self.lua, json.dumps(to_json(value), ensure_ascii=False, separators=(",", ":")))
        except NotRecordable as exc:
            raise BridgeError(f"Json.encode: {exc}") from None

    @_bridge
    def _b_json_decode(self, text: str) -> Any:
        try:
            return to_lua(self.lua, loads(text, "Json.decode"))
        except json.JSONDecodeError as exc:
            raise BridgeError(f"Json.decode: invalid JSON: {exc}") from None
        except UnfitJson as exc:
            raise BridgeError(str(exc)) from None

    @_bridge
    def _b_file(self, op: str, path: str, data: str | None = None) -> Any:
        return to_lua(self.lua, file_op(self.root, op, path, data))  # a big file must fit under the cap
