"""Moving values between Lua and JSON-shaped Python.

Checkpoints must survive a trip through the notebook file, so everything
recorded goes through :func:`to_json`, which refuses what JSON cannot hold
(functions, coroutines, NaN, tables mixing list and key entries, cycles)
with a message that says *where* in the value the problem is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from lupa import lua54

JSON = None | bool | int | float | str | list[Any] | dict[str, Any]

MAX_DEPTH = 100
lua_type = lua54.lua_type


class NotRecordable(ValueError):
    """A value that cannot be stored as JSON; ``path`` says where."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} is {problem}")
        self.path = path
        self.problem = problem


def _describe(value: Any) -> str:
    kind = lua_type(value)
    if kind is not None:
        return f"a Lua {kind}"
    # the Lua names of the values a Lua table holds as Python ones
    lua_name = {bool: "boolean", int: "number", float: "number", str: "string", bytes: "string"}
    return f"a {lua_name.get(type(value), type(value).__name__)}"


# values that are JSON as they are
_PLAIN = frozenset({str, int, bool, type(None)})


class _Unusual(Exception):
    """The fast conversion met something it leaves to the careful one."""


def _fast_json(value: Any, depth: int) -> JSON:
    """The common case of :func:`to_json`, without building a path string for
    every value (a recorded step converts its result on every call, so the
    paths, needed only for an error message, cost more than the data)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if value - value != 0.0:  # NaN or infinity
            raise _Unusual
        return value
    if depth >= MAX_DEPTH or lua_type(value) != "table":
        raise _Unusual
    items = list(value.items())
    if not items:
        return {}
    if type(items[0][0]) is str:
        items.sort(key=_first)
        out = {}
        for k, v in items:
            if type(k) is not str:
                raise _Unusual
            out[k] = v if type(v) in _PLAIN else _fast_json(v, depth + 1)
        return out
    items.sort(key=_first)  # TypeError for mixed keys: the careful path names it
    if type(items[0][0]) is not int or items[0][0] != 1 or items[-1][0] != len(items):
        raise _Unusual
    for k, _ in items:
        if type(k) is not int:
            raise _Unusual
    return [v if type(v) in _PLAIN else _fast_json(v, depth + 1) for _, v in items]


def _first(kv: tuple[Any, Any]) -> Any:
    return kv[0]


def to_json(value: Any, path: str = "value") -> JSON:
    """Convert a Lua value to JSON-shaped Python, or raise NotRecordable."""
    try:
        return _fast_json(value, 0)
    except (_Unusual, TypeError, UnicodeDecodeError):
        return _careful_json(value, path, 0)


def _careful_json(value: Any, path: str, depth: int) -> JSON:
    """:func:`to_json` with a path kept at every level, to say where a value
    that cannot be recorded is."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if math.isnan(value) or math.isinf(value):
            raise NotRecordable(path, f"{value} (JSON has no NaN or infinity)")
        return value
    if kind is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise NotRecordable(path, "a string that is not valid UTF-8") from None
    if lua_type(value) != "table":
        raise NotRecordable(path, _describe(value))
    if depth >= MAX_DEPTH:
        raise NotRecordable(path, f"nested more than {MAX_DEPTH} levels deep (a cycle?)")
    items = list(value.items())
    if not items:
        return {}
    key_types = {type(k) for k, _ in items}
    if key_types == {int}:
        items.sort(key=_first)
        if items[0][0] == 1 and items[-1][0] == len(items):
            return [_careful_json(v, f"{path}[{k}]", depth + 1) for k, v in items]
        raise NotRecordable(path, "a table with integer keys that are not 1..n (a sparse array)")
    if key_types != {str}:
        for k, _ in items:
            if not isinstance(k, (str, bytes)):
                raise NotRecordable(path, f"a table mixing string keys with {_describe(k)} key ({k!r})")
        items = [(k.decode("utf-8", "replace") if isinstance(k, bytes) else k, v) for k, v in items]
    # Lua's table order is arbitrary; sorted keys keep records (and their
    # diffs in a pull request) stable from one run to the next.
    items.sort(key=_first)
    return {k: _careful_json(v, f"{path}.{k}", depth + 1) for k, v in items}


_FLAT_PLAIN = frozenset({str, int, float, bool})  # what to_plain hands back unchanged


def to_plain(value: Any, depth: int = 0) -> Any:
    """Lenient conversion for declarations: functions become the marker
    ``"<function>"`` instead of failing, so a config table with guards or
    filters can still be read for its data."""
    if lua_type(value) == "table" and depth < MAX_DEPTH:
        items = list(value.items())
        if all(type(k) is str and type(v) in _FLAT_PLAIN for k, v in items):
            return dict(sorted(items))  # a flat table, such as a turn's options: no walk
        keys = [k for k, _ in items]
        if items and all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
            return [to_plain(v, depth + 1) for _, v in sorted(items, key=lambda kv: kv[0])]
        # sorted, as in to_json: declarations read the same in every kernel
        # (Lua's table order changes from one process to the next)
        named = sorted(((_plain_key(k), v) for k, v in items), key=_first)
        return {k: to_plain(v, depth + 1) for k, v in named}
    if lua_type(value) is not None:
        return f"<{lua_type(value)}>"
    return value


_LUA_INT = (-(2**63), 2**63 - 1)


def _lua_problem(value: Any) -> tuple[str, int] | None:
    """What makes JSON-shaped Python unfit for Lua and the record, and at
    which depth; iterative, so no nesting can crash it."""
    stack = [([value], -1)]
    while stack:
        container, depth = stack.pop()
        for v in container.values() if type(container) is dict else container:
            kind = type(v)
            if kind is str or kind is bool or v is None:
                continue
            if kind is float:
                if v - v != 0.0:
                    return f"{v} (JSON has no NaN or infinity)", depth + 1
            elif kind is int:
                if not _LUA_INT[0] <= v <= _LUA_INT[1]:
                    return f"{str(v)[:40]}, an integer too large for Lua (beyond 64 bits)", depth + 1
            elif kind is dict or kind is list:
                if depth + 1 >= MAX_DEPTH:
                    return f"nested more than {MAX_DEPTH} levels deep", depth + 1
                stack.append((v, depth + 1))
    return None


def check_value(value: Any, path: str = "value") -> None:
    """Refuse JSON-shaped Python that a Lua cell cannot hold as it is or a
    notebook cannot record (NaN, infinity, an integer beyond 64 bits, more
    than MAX_DEPTH levels), with a NotRecordable naming where it is."""
    found = _lua_problem(value)
    if found is None:
        return
    if found[0].startswith("nested"):
        raise NotRecordable(path, found[0])

    # a second walk, in order and keeping the path (only on the way to an
    # error; nesting is known to be within MAX_DEPTH here)
    def first(v: Any, p: str) -> tuple[str, str] | None:
        if isinstance(v, dict):
            items: Any = ((f"{p}.{k}", x) for k, x in v.items())
        elif isinstance(v, list):
            items = ((f"{p}[{i + 1}]", x) for i, x in enumerate(v))
        else:
            hit = _lua_problem(v)
            return None if hit is None else (p, hit[0])
        for sub, x in items:
            hit2 = first(x, sub)
            if hit2 is not None:
                return hit2
        return None

    where, problem = first(value, path) or (path, found[0])
    raise NotRecordable(where, problem)


class UnfitJson(ValueError):
    """Valid JSON that a Lua cell cannot hold or a notebook cannot record."""


def loads(text: str, what: str) -> Any:
    """JSON text as a value Lua can hold. Raises json.JSONDecodeError for
    text that is not JSON, and UnfitJson (naming `what`) for JSON nested
    more than MAX_DEPTH levels or holding NaN, infinity or an integer
    beyond 64 bits (see check_value)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnfitJson(f"{what}: value is nested more than {MAX_DEPTH} levels deep") from None
    try:
        check_value(value)
    except NotRecordable as exc:
        raise UnfitJson(f"{what}: {exc}") from None
    return value


def parse_value(text: str, what: str = "the value", load: Callable[[str, str], Any] = loads) -> Any:
    """A value a person typed (a command-line option, a magic's argument, a
    spec step's word): JSON when the text parses as JSON (``3``, ``true``,
    ``{"a": 1}``), else the text itself (``prod``). `load` parses and vets
    the JSON, raising its caller's error for JSON it will not take (the
    default: :func:`loads`, whose UnfitJson names `what`)."""
    try:
        return load(text, what)
    except json.JSONDecodeError:  # not JSON: the text is the value
        return text


def _plain_key(k: Any) -> str:
    """A key as text without running Lua code: str() of a Lua table would
    run its __tostring, which may fail, loop or yield."""
    if isinstance(k, str):
        return k
    if isinstance(k, bytes):
        return k.decode("utf-8", "replace")
    kind = lua_type(k)
    return f"<{kind}>" if kind is not None else str(k)


# What lupa's table_from costs in Lua 5.4 (64-bit), measured and rounded up:
# a table ~77 bytes, an array slot ~21, a string key's node and string ~72,
# a string 24 + its bytes. Generous, so a value that fits is never refused
# for want of a few bytes it did not need.
_TABLE, _SLOT, _NODE, _STRING = 96, 32, 64, 48
# Room kept free for what else Lua allocates on the way (stack, string table).
MEMORY_MARGIN = 1 << 20


def lua_size(value: Any, limit: float = float("inf")) -> int:
    """An upper estimate of the bytes Lua needs to hold ``to_lua(value)``;
    the walk stops once the sum passes ``limit``."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        v = stack.pop()
        kind = type(v)
        if kind is str:
            total += _STRING + (len(v) if v.isascii() else 4 * len(v))
        elif kind is dict:
            total += _TABLE + _NODE * len(v)
            for k, x in v.items() if total <= limit else ():
                if type(k) is str:
                    total += _STRING + (len(k) if k.isascii() else 4 * len(k))
                if type(x) in _NESTED:
                    stack.append(x)
        elif kind is list or kind is tuple:
            total += _TABLE + _SLOT * len(v)
            if total <= limit:
                stack.extend(x for x in v if type(x) in _NESTED)
        elif kind is bytes:
            total += _STRING + len(v)
    return total


_NESTED = frozenset({str, dict, list, tuple, bytes})


def make_room(runtime: lua54.LuaRuntime, need: int) -> None:
    """Raise LuaMemoryError unless Lua's memory cap leaves ``need`` bytes
    free (after a full collection, if it takes one to find them).

    Python must never run into the cap while it builds Lua values itself:
    the allocation error is a C ``longjmp`` that skips lupa's Python frames
    and its release of the GIL, so the next wait for the GIL (lupa's own,
    when the Lua call returns, and every other Python thread's, the SIGINT
    watcher's included) waits for ever. Outside a Lua call it is a
    "PANIC: unprotected error in call to Lua API" that aborts the process.
    """
    limit = runtime.get_max_memory()
    if not limit:
        return
    need += MEMORY_MARGIN
    if runtime.get_memory_used() + need <= limit:
        return
    runtime.eval("collectgarbage")("collect")
    if runtime.get_memory_used() + need > limit:
        raise lua54.LuaMemoryError("not enough memory")


def to_lua(runtime: lua54.LuaRuntime, value: Any) -> Any:
    """Convert JSON-shaped Python to Lua values (lists become 1-based tables).

    Raises LuaMemoryError, before building anything, when the value would
    not fit under the runtime's memory cap (see :func:`make_room`); a string
    is checked too, since lupa copies it into Lua when it hands it over."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        limit = runtime.get_max_memory()
        if not limit:
            return runtime.table_from(value, recursive=True)
        make_room(runtime, lua_size(value, limit))
        # The estimate is generous, but it is an estimate: lift the cap while
        # lupa builds the table, so a miss costs a little memory over the
        # cap (Lua's next allocation then fails, in Lua, as it should)
        # rather than a deadlock.
        runtime.set_max_memory(0)
        try:
            return runtime.table_from(value, recursive=True)
        finally:
            runtime.set_max_memory(limit)
    if kind is str and len(value) > MEMORY_MARGIN:
        make_room(runtime, lua_size(value))
    return value
