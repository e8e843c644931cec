"""The synchronous bridge: the Python functions Lua calls directly.

Everything the primitives need from Python that does not wait (writing
output, declaring a procedure, starting and ending a run, recording a
step, Json, File) is a bridge function: a ``_b_*`` method of the runtime,
handed to the sandbox prelude as the table ``B``. Each returns ``ok, ...``
rather than raising (:func:`bridge`): an exception object must never reach
Lua code. Whatever waits is an effect instead (engine/driver.py).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lupa import lua54

from tactus_kernel.engine import errors
from tactus_kernel.engine.display import displayable
from tactus_kernel.engine.errors import BridgeError, Failure, KernelError, ParamError, raise_text, tagged
from tactus_kernel.engine.files import FileError, file_op
from tactus_kernel.engine.records import RecordLimitError
from tactus_kernel.engine.runs import CellRun, ProcedureSpec, RunState
from tactus_kernel.engine.values import NotRecordable, UnfitJson, loads, to_json, to_lua, to_plain

if TYPE_CHECKING:
    from tactus_kernel.engine.feature import Observers
    from tactus_kernel.engine.host import Host
    from tactus_kernel.engine.limits import RunLimits
    from tactus_kernel.engine.records import Records

log = logging.getLogger("tactus_kernel")

# a dict of at most this many scalars is handed between Lua and Python as
# plain arguments (see _b_step_replay and K.step_record in lua/sandbox.lua)
_MAX_FLAT = 64
_FLAT_VALUES = frozenset({str, int, float, bool})


# Kernel exceptions that reach Lua as errors under their own name.
_TAGGED: tuple[tuple[type[Exception], str], ...] = (
    (NotRecordable, "NotRecordableError"),
    (RecordLimitError, "NotRecordableError"),
    (FileError, "SandboxError"),
)
LUA_ERRORS: tuple[type[Exception], ...] = (BridgeError, KernelError, ParamError, *(cls for cls, _ in _TAGGED))


def lua_message(exc: Exception) -> str:
    """The Lua error message for one of LUA_ERRORS (an error with data keeps it: see errors.raise_text)."""
    if isinstance(exc, KernelError):
        return raise_text(exc.failure)
    if isinstance(exc, ParamError):
        return raise_text(exc.failure())
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


class Bridge:
    """The runtime's bridge functions (a part of :class:`~tactus_kernel.engine.runtime.Runtime`)."""

    lua: lua54.LuaRuntime
    root: Path
    procedures: dict[str, ProcedureSpec]
    runs: dict[int, RunState]
    observers: Observers
    limits: RunLimits
    _tostring: Any

    if TYPE_CHECKING:  # provided by Runtime (its session) and the other parts

        @property
        def host(self) -> Host:
            raise NotImplementedError

        @property
        def records(self) -> Records:
            raise NotImplementedError

        @property
        def param_overrides(self) -> dict[str, dict[str, Any]]:
            raise NotImplementedError

        def current_cell(self) -> CellRun | None:
            raise NotImplementedError

        def _new_run(self, key: str, spec: ProcedureSpec | None, cell: CellRun) -> RunState:
            raise NotImplementedError

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
        cell = self.current_cell()
        name = plain.get("name")
        if name is not None and not isinstance(name, str):
            raise BridgeError("ProcedureError: procedure name must be a string")
        if name is not None and "/" in name:  # "/" separates a child's record key from its caller's
            raise BridgeError(f"ProcedureError: procedure name {name!r} must not contain '/'")
        key = name or (cell.key if cell else None)
        if not key:
            raise BridgeError("ProcedureError: an unnamed procedure must be declared at the top level of a cell")
        owner = f"procedure '{key}'"
        self.limits.check_declared(plain.get("timeout"), owner)  # a bad timeout is refused where it is declared
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

    def begin_run(self, key: str, given: Any, cell: CellRun, record_key: str | None = None) -> tuple[RunState, Any]:
        """Start a run of procedure `key` in `cell` with the params `given`
        (a Lua table, or None); returns the run and its validated params as a
        Lua table. `record_key`, given for a child procedure (features/
        composition) or an isolated run (features/specs), is where its
        record lives; without it, the params given from outside
        (``param_overrides``) apply. Raises BridgeError (a ProcedureError or
        ParamError) for an unknown procedure or bad params."""
        from tactus_kernel.engine.fields import validate_params

        spec = self.procedures.get(key)
        if spec is None:
            raise BridgeError(f"ProcedureError: unknown procedure '{key}'")
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
        if self.records.lookup(run.key) is not None:  # a rerun leaves the record as it was, unless it changes it
            run.log.first["status"] = "running"
            self.records.set(run.key, params=validated)
        else:
            self.records.set(run.key, status="running", params=validated)
        return run, to_lua(self.lua, validated)

    @_bridge
    def _b_begin_run(self, key: str, given: Any) -> tuple[int, Any]:
        """``procedure(...)``'s run (lua/primitives.lua), in the current cell."""
        cell = self.current_cell()
        if key not in self.procedures:
            raise BridgeError(f"ProcedureError: unknown procedure '{key}'")
        if cell is None:
            raise BridgeError("ProcedureError: procedures run only inside a cell")
        run, params = self.begin_run(key, given, cell)
        return run.id, params

    @_bridge
    def _b_end_run(self, run_id: int, ok: bool, result: Any) -> Any:
        from tactus_kernel.engine.fields import validate_outputs

        run = self.runs.pop(run_id)
        records = self.records
        if not ok:
            records.set(run.key, status="failed")
            self._ended(run, False, result)
            return None
        spec = run.spec
        assert spec is not None
        try:
            value = to_json(result, "the returned value")
            out = validate_outputs(f"procedure '{run.key}'", spec.outputs, value)
        except (ParamError, NotRecordable) as exc:
            records.set(run.key, status="failed")
            problem = str(exc) if isinstance(exc, ParamError) else f"procedure '{run.key}': {exc}"
            field = exc.field if isinstance(exc, ParamError) else None
            failure = Failure("OutputError", problem, procedure=run.key, field=field)
            self._ended(run, False, failure.text)
            raise KernelError(failure) from None
        records.set(run.key, status="completed", output=out)
        self._ended(run, True, None)
        return to_lua(self.lua, out)

    def _ended(self, run: RunState, ok: bool, error: Any) -> None:
        self.observers.run_ended(run, ok, error)

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
