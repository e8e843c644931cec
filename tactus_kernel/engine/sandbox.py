"""The Lua state every cell of a kernel runs in, locked down.

Three walls keep cell code away from Python and the machine:

1. lupa is built without its ``python`` global helpers (no eval, no
   builtins), and the sandbox prelude removes ``io``, ``debug``,
   ``package``, ``require``, ``dofile``, ``loadfile``, ``string.dump`` and
   binary ``load``, and trims ``os`` to time functions.
2. Python callables (the bridge) are only upvalues of prelude closures, and
   every bridge function catches its own exceptions, so no Python object -
   not even an exception - is ever handed to cell code.
3. Should a Python object leak anyway, the attribute handlers refuse every
   attribute, so there is no ``__class__``/``__globals__`` path to follow.

Memory is bounded by lupa's allocator limit; time by an instruction-count
hook that polls for an interrupt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from lupa import lua54

from tactus_kernel.engine.feature import Prelude

DEFAULT_MAX_MEMORY = 512 * 1024 * 1024
# The engine's own Lua, around the features' preludes (engine/feature.py):
# primitives first; limits last, as it wraps the library functions every
# chunk before it captured unwrapped.
PRIMITIVES = Prelude("tactus_kernel.engine", "lua/primitives.lua")
LIMITS = Prelude("tactus_kernel.engine", "lua/limits.lua")
HOOK_COUNT = 100_000


def _deny_get(obj: object, name: object) -> Any:
    raise AttributeError("Python attributes are not reachable from the Tactus sandbox")


def _deny_set(obj: object, name: object, value: object) -> None:
    raise AttributeError("Python attributes are not reachable from the Tactus sandbox")


def lua_source(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text("utf-8")


def new_lua(max_memory: int | None) -> lua54.LuaRuntime:
    return lua54.LuaRuntime(
        register_eval=False,
        register_builtins=False,
        unpack_returned_tuples=True,
        attribute_handlers=(_deny_get, _deny_set),
        max_memory=max_memory,
    )


def load_prelude(
    lua: lua54.LuaRuntime,
    bridge: dict[str, Callable[..., Any]],
    hook_count: int = HOOK_COUNT,
    preludes: Sequence[Prelude] = (),
) -> Any:
    """Run the sandbox, the primitives, the features' `preludes` (in order)
    and the limits; returns the kernel's private Lua API table (``K``)."""
    b = lua.table_from(bridge)
    config = lua.table_from({"hook_count": hook_count})
    # the raw load, taken before the sandbox replaces it; always two results.
    # Captured as an upvalue: the global `load` becomes the cell's version,
    # which renames chunks that call themselves "[tactus ...]".
    load = lua.eval(
        "(function(load) return function(src, name, mode) local f, e = load(src, name, mode); "
        "return f, e end end)(load)"
    )
    sandbox_chunk, err = load(lua_source("tactus_kernel.engine", "lua/sandbox.lua"), "=[tactus sandbox]", "t")
    if sandbox_chunk is None:
        raise RuntimeError(f"tactus sandbox prelude does not compile: {err}")
    k = sandbox_chunk(b, config)
    try:
        k.max_memory = lua.get_max_memory() or 0  # limits.lua bounds results against it
    except RuntimeError:  # a runtime made without a cap
        k.max_memory = 0
    for prelude in (PRIMITIVES, *preludes, LIMITS):
        chunk, err = load(prelude.read(), "=" + prelude.chunk_name, "t")
        if chunk is None:
            raise RuntimeError(f"tactus prelude {prelude.name} does not compile: {err}")
        chunk(b, k)
    # Last, once every module has its globals: give lupa (and Python's own
    # lua.eval helpers) a globals table of their own; see K.seal_globals.
    k.seal_globals()
    return k
