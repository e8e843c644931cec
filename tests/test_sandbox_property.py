"""Property-based sandbox test: random Lua made of dangerous building blocks.

Hypothesis builds expressions from the sandbox's sharp edges (removed
globals, dunder fields, binary ``load``, metatables, coroutines, the
bridge-backed primitives fed odd arguments) and runs each one in a cell on
a runtime with a small memory limit. Whatever the expression does, it must
not hand a Python object (a Lua ``userdata``) to Lua code, not write a file
outside the notebook's folder, and leave the runtime answering ``1+1``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.host import NullHost
from tactus_kernel.engine.runtime import BridgeError, Runtime
from tactus_kernel.features import default_runtime

GLOBALS = [
    "io",
    "os",
    "debug",
    "package",
    "require",
    "dofile",
    "loadfile",
    "python",
    "string",
    "load",
    "setmetatable",
    "getmetatable",
    "rawget",
    "rawset",
    "rawequal",
    "next",
    "pairs",
    "select",
    "type",
    "tostring",
    "error",
    "pcall",
    "xpcall",
    "coroutine",
    "collectgarbage",
    "_G",
    "_ENV",
    "params",
    "State",
    "Json",
    "File",
    "Log",
    "Step",
    "Checkpoint",
    "Stage",
    "Procedure",
    "Retry",
    "Sleep",
    "Human",
    "print",
    "table",
    "utf8",
    "math",
]
FIELDS = [
    "__class__",
    "__globals__",
    "__builtins__",
    "__subclasses__",
    "__import__",
    "__dict__",
    "__index",
    "__metatable",
    "__gc",
    "dump",
    "execute",
    "getenv",
    "remove",
    "eval",
    "builtins",
    "as_attrgetter",
    "loadlib",
    "getupvalue",
    "sethook",
    "getregistry",
    "rep",
    "format",
    "char",
    "read",
    "write",
    "exists",
    "decode",
    "encode",
    "get",
    "set",
    "all",
    "run",
    "info",
    "create",
    "resume",
    "yield",
    "wrap",
    "close",
    "running",
    "date",
    "time",
    "pack",
    "unpack",
    "concat",
]
LITERALS = [
    "nil",
    "true",
    "false",
    "0",
    "1",
    "-1",
    "2^31",
    "2^53",
    "1e308",
    "0/0",
    "math.huge",
    '"x"',
    '"\\xff"',
    '"\\27Lua"',
    '"\\27LuaT\\0\\25\\147\\r\\n\\26\\n"',
    '"../x"',
    '"/etc/passwd"',
    '"a\\0b"',
    '"[1]"',
    '"{\\"a\\": 1}"',
    '"return io"',
    '"return debug"',
    '"return python"',
    '"return _ENV"',
    '"b"',
    '"bt"',
    '"t"',
    '"*t"',
    '"%c"',
    '"collect"',
    '"stop"',
    '"generational"',
    "{}",
    "{1, 2}",
    "{__index = _G}",
    "function() end",
    "function(...) return ... end",
    "print",
    "setmetatable({}, {__index = function(_, k) return k end})",
    "coroutine.create(function() end)",
    "(function() local t = {} t[1] = t return t end)()",
]

# What a call most often calls: the primitives that reach Python, and the
# builtins the sandbox wraps.
CALLABLES = [
    "Json.decode",
    "Json.encode",
    "File.read",
    "File.write",
    "File.exists",
    "File.size",
    "Log.info",
    "Log.error",
    "print",
    "Step.run",
    "Checkpoint.get",
    "Checkpoint.exists",
    "State.set",
    "State.get",
    "State.append",
    "Stage.set",
    "Sleep",
    "Human.approve",
    "Human.notify",
    "Procedure.run",
    "Retry.with_backoff",
    "procedure",
    "load",
    "setmetatable",
    "getmetatable",
    "rawget",
    "rawset",
    "pcall",
    "xpcall",
    "error",
    "tostring",
    "select",
    "next",
    "pairs",
    "collectgarbage",
    "string.rep",
    "string.format",
    "string.char",
    "os.date",
    "os.time",
    "coroutine.wrap",
    "coroutine.create",
    "coroutine.resume",
    "coroutine.close",
    "coroutine.running",
    "table.pack",
    "table.unpack",
    "table.concat",
    "utf8.char",
]

atoms = st.one_of(
    st.sampled_from(GLOBALS),
    st.sampled_from(LITERALS),
    st.builds(lambda g, f: f"{g}.{f}", st.sampled_from(GLOBALS), st.sampled_from(FIELDS)),
)


def _args(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(children, max_size=3).map(", ".join)


def _extend(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    a = _args(st.one_of(st.sampled_from(LITERALS), e))
    name = st.sampled_from(FIELDS)
    callee = st.one_of(st.sampled_from(CALLABLES), e)
    return st.one_of(
        st.builds(lambda f, x: f"{f}({x})", st.sampled_from(CALLABLES), a),
        st.builds(lambda f, x: f"select(2, pcall({f}, {x}))", st.sampled_from(CALLABLES), a),
        st.builds(lambda f, x: f"({f})({x})", callee, a),
        st.builds(lambda o, m, x: f"({o}):{m}({x})", e, name, a),
        st.builds(lambda o, f: f"({o}).{f}", e, name),
        st.builds(lambda o, k: f"({o})[{k}]", e, e),
        st.builds(lambda f, x: f"select(2, pcall({f}, {x}))", callee, a),
        st.builds(lambda x: f"pcall(function() return {x} end)", e),
        st.builds(lambda x: f"getmetatable({x})", e),
        st.builds(lambda x, y: f"setmetatable({{}}, {{__index = {x}, __call = {y}}})", e, e),
        st.builds(lambda x: f"setmetatable(_G, {{__index = {x}}})", e),
        st.builds(lambda t, x: f"setmetatable({t}, {{__tostring = {x}}})", e, e),
        st.builds(lambda x, m: f"load({x}, 'x', {m})", e, st.sampled_from(['"b"', '"bt"', '"t"', "nil"])),
        st.builds(lambda x, env: f"load({x}, 'x', 't', {env})", e, e),
        st.builds(lambda x: f"coroutine.wrap(function() return {x} end)()", e),
        st.builds(lambda f, x: f"coroutine.resume(coroutine.create({f}), {x})", e, a),
        st.builds(lambda x: f"coroutine.yield({x})", e),
        st.builds(lambda x, y: f"rawget({x}, {y})", e, e),
        st.builds(lambda x, y: f"rawset({{}}, {x}, {y})", e, e),
        st.builds(lambda x: f"Json.decode(Json.encode({x}))", e),
        st.builds(lambda x, y: f"Log.info({x}, {y})", e, e),
        st.builds(lambda x, y: f"File.write({x}, {y})", e, e),
        st.builds(lambda x: f"Step.run('s', function() return {x} end)", e),
        st.builds(lambda x: f"table.pack({x})", a),
        st.builds(lambda x: f"tostring({x})", e),
    )


expressions = st.recursive(atoms, _extend, max_leaves=8)

PROBE = """
__probe = (function()
  local type, next, getmetatable, select, tostring = type, next, getmetatable, select, tostring
  local function find(v, path, seen)
    if type(v) == "userdata" then return path end
    if type(v) ~= "table" or seen[v] then return nil end
    seen[v] = true
    local mt = getmetatable(v)
    if type(mt) == "table" then
      local hit = find(mt, path .. "<metatable>", seen)
      if hit then return hit end
    end
    for k, x in next, v do
      local hit = find(k, path .. "<key>", seen) or find(x, path .. "[" .. type(k) .. "]", seen)
      if hit then return hit end
    end
    return nil
  end
  return function(...)
    local seen = {}
    for i = 1, select("#", ...) do
      local hit = find((select(i, ...)), "value " .. i, seen)
      if hit then return "userdata at " .. hit end
    end
    return "clean"
  end
end)()
"""


# The errors that can get out of `pcall(function() return EXPR end)`, by
# name, with the form of their message (a KeyError: any other name).
ESCAPING = {
    "LuaSyntaxError": r"\[fuzz\]:\d+: .+",
    "LuaMemoryError": r"the cell ran out of memory \(limit 64 MiB\); the kernel is still running",
    "KeyboardInterrupt": r"interrupted by the user( at \[fuzz\]:\d+)?",
}


class Fuzz:
    """One runtime shared by every example (state piles up, as in a notebook)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "notebook"
        self.root.mkdir()
        self.outside = base / "outside"
        self.outside.mkdir()
        (self.outside / "secret.txt").write_text("top secret", "utf-8")
        # output is not what this test looks at
        self.runtime = default_runtime(root=self.root, host=NullHost(), max_memory=64 * 2**20)

        async def refuse(runtime: Runtime, run: Any, request: Any) -> tuple[Any, ...]:
            raise BridgeError("SandboxError: effects are switched off in this test")

        for kind in list(self.runtime.effects):
            self.runtime.effects[kind] = refuse
        self.keys = itertools.count()
        self.run(PROBE)

    def run(self, code: str) -> list[Any]:
        return asyncio.run(self.runtime.execute(code, "[fuzz]", f"fuzz-{next(self.keys)}"))

    def outside_files(self) -> list[Path]:
        return sorted(p for p in self.base.rglob("*") if self.root not in (p, *p.parents))


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    yield Fuzz(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=expressions)
def test_random_dangerous_lua_leaks_nothing(fuzz: Fuzz, expr: str) -> None:
    before = fuzz.outside_files()
    # Some expressions run for very long (load with a reader that never ends);
    # the interrupt must stop them, and that is all that is asked of them.
    timer = threading.Timer(5, fuzz.runtime.interrupt)
    timer.daemon = True
    timer.start()
    try:
        verdict = fuzz.run(f"return __probe(pcall(function() return {expr}\nend))")
    except CellError as err:
        # what can get out of the pcall: a syntax error, running out of
        # memory, the interrupt; never another error, nor a fault of the kernel
        assert isinstance(err.evalue, str) and all(isinstance(line, str) for line in err.traceback)
        assert re.fullmatch(ESCAPING[err.ename], err.evalue), f"{expr}: {err}"
    else:
        assert verdict == ["clean"], f"{expr}: {verdict}"
    finally:
        timer.cancel()
    assert fuzz.outside_files() == before
    assert (fuzz.outside / "secret.txt").read_text("utf-8") == "top secret"
    assert fuzz.run("return 1+1") == [2]
