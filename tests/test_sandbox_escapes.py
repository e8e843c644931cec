"""Adversarial tests: ways out of the Lua sandbox, each of which must fail.

Every test is one attempt. It asserts what the attempt must run into (a
nil, a clear error, a refused path) and that nothing escaped: no Python
object came back (results and error values are plain data, never a Lua
``userdata``), no file appeared outside the notebook's folder, and the
runtime still answers ``1+1`` after the resource attacks.

The attempts are grouped in tables; each row's id says what it tries.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cells

from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.runtime import BridgeError, Runtime
from tactus_kernel.features import default_runtime

SMALL_MEMORY = 64 * 2**20


# --------------------------------------------------------------------- helpers
def assert_plain(value: Any, where: str = "result") -> None:
    """Only JSON-shaped Python came back: a leaked Python object would be
    returned as itself (an exception, a module, a function...)."""
    if isinstance(value, list):
        for i, x in enumerate(value):
            assert_plain(x, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, x in value.items():
            assert isinstance(k, str), f"{where}: key {k!r} is a {type(k).__name__}"
            assert_plain(x, f"{where}.{k}")
    else:
        assert value is None or isinstance(value, (bool, int, float, str)), (
            f"{where} is a Python {type(value).__name__}: {value!r}"
        )


def run(cells: Cells, code: str) -> list[Any]:
    values = cells(code)
    assert_plain(values)
    return values


def still_works(cells: Cells) -> None:
    assert cells("1+1") == [2]
    assert cells("return Json.decode(Json.encode({a = {1, 2}})).a[2]") == [2]


def interrupt_after(cells: Cells, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, cells.runtime.interrupt)
    timer.daemon = True
    timer.start()
    return timer


@pytest.fixture
def small(tmp_path: Path) -> Cells:
    """Cells on a runtime with a 64 MiB memory limit (resource attacks)."""
    c = Cells(tmp_path)
    c.runtime = default_runtime(root=tmp_path, host=c.host, max_memory=SMALL_MEMORY)
    return c


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Path]:
    """A folder outside the notebook's, with a secret in it; after the test
    it must hold exactly what it held before."""
    place = tmp_path_factory.mktemp("outside")
    (place / "secret.txt").write_text("top secret", "utf-8")
    before = sorted(p.relative_to(place) for p in place.rglob("*"))
    yield place
    assert sorted(p.relative_to(place) for p in place.rglob("*")) == before
    assert (place / "secret.txt").read_text("utf-8") == "top secret"


# ------------------------------------------------- things that must be nil/false
NOTHING_THERE = [
    pytest.param("return io == nil and rawget(_G, 'io') == nil", id="io-removed"),
    pytest.param("return os.execute == nil", id="os.execute-removed"),
    pytest.param("return os.remove == nil", id="os.remove-removed"),
    pytest.param("return os.rename == nil", id="os.rename-removed"),
    pytest.param("return os.getenv == nil", id="os.getenv-removed"),
    pytest.param("return os.exit == nil", id="os.exit-removed"),
    pytest.param("return os.tmpname == nil", id="os.tmpname-removed"),
    pytest.param("return os.setlocale == nil", id="os.setlocale-removed"),
    pytest.param("return debug == nil and rawget(_G, 'debug') == nil", id="debug-removed"),
    pytest.param("return package == nil and rawget(_G, 'package') == nil", id="package-removed"),
    pytest.param("return require == nil", id="require-removed"),
    pytest.param("return dofile == nil", id="dofile-removed"),
    pytest.param("return loadfile == nil", id="loadfile-removed"),
    pytest.param("return python == nil and rawget(_G, 'python') == nil", id="python-global-removed"),
    pytest.param("return warn == nil", id="warn-removed"),
    pytest.param("return string.dump == nil and ('').dump == nil", id="string.dump-removed"),
    pytest.param(
        "return B == nil and K == nil and EFFECT == nil and THREADS == nil and raw_load == nil",
        id="kernel-privates-not-globals",
    ),
    pytest.param(
        "return _ENV == _G and _ENV.io == nil and _ENV.debug == nil and _ENV.python == nil", id="_ENV-is-the-sandbox"
    ),
    pytest.param(
        "return select('#', load('return io, debug, python, package, require', 'x', 't', {})()) == 5 "
        "and load('return io or debug or python or package or require', 'x', 't', {})() == nil",
        id="load-with-empty-env-sees-nothing",
    ),
    pytest.param(
        "return load('return io == nil and debug == nil and python == nil and string.dump == nil')()",
        id="load-default-env-is-the-sandbox",
    ),
    pytest.param(
        "local env = setmetatable({}, {__index = _G}) "
        "return load('return B or K or raw_load or THREADS or check_interrupt', 'x', 't', env)() == nil",
        id="load-custom-env-reaches-no-upvalue",
    ),
    pytest.param("return getmetatable('') == false", id="string-metatable-hidden"),
    pytest.param(
        "return getmetatable(1) == nil and getmetatable(print) == nil and getmetatable(true) == nil "
        "and getmetatable(nil) == nil and getmetatable(coroutine.create(print)) == nil",
        id="no-metatable-on-other-types",
    ),
    pytest.param(
        "return ('x').__class__ == nil and ('x').__globals__ == nil and ('x').__import__ == nil",
        id="dunders-on-a-string",
    ),
    pytest.param(
        'local t = Json.decode(\'{"a": [1, {"b": 2}]}\') '
        "return type(t) == 'table' and getmetatable(t) == nil and t.__class__ == nil "
        "and t.a.__class__ == nil and t.a[2].__dict__ == nil",
        id="json-values-are-plain-tables",
    ),
    pytest.param(
        "State.set('k', {1, 2}) local a = State.all() "
        "return getmetatable(a) == nil and a.__class__ == nil and getmetatable(a.k) == nil",
        id="state-values-are-plain-tables",
    ),
    pytest.param(
        """
        for _, t in ipairs({Json, File, Log, State, Step, Checkpoint, Stage, Procedure, Retry, params}) do
          for _, name in ipairs({'__class__', '__globals__', '__builtins__', '__subclasses__', '__import__',
                                 '__dict__', '__code__', '__self__'}) do
            if t[name] ~= nil then return name end
          end
        end
        return true""",
        id="dunders-on-every-primitive-table",
    ),
    pytest.param(
        "return rawget(_G, '__builtins__') == nil and rawget(_G, '__import__') == nil "
        "and rawget(_G, '__globals__') == nil",
        id="dunders-on-_G",
    ),
    pytest.param(
        "local f, e = load('return 1', 'x', 'b') return f == nil and e:find('only text') ~= nil",
        id="load-mode-b-refused",
    ),
    pytest.param(
        "local f, e = load('return 1', 'x', 'bt') return f == nil and e:find('only text') ~= nil",
        id="load-mode-bt-refused",
    ),
    pytest.param(
        "local f, e = load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n') return f == nil and e:find('binary') ~= nil",
        id="load-binary-chunk-string",
    ),
    pytest.param(
        "local f, e = load('\\27Lua', 'x', 't', {}) return f == nil and e:find('binary') ~= nil",
        id="load-binary-chunk-with-env",
    ),
    pytest.param(
        "local parts, i = {'\\27Lua', 'T\\0\\25'}, 0 "
        "local f, e = load(function() i = i + 1 return parts[i] end) "
        "return f == nil and e:find('binary') ~= nil",
        id="load-binary-chunk-from-reader",
    ),
    pytest.param("return load(function() return {} end) == nil", id="load-reader-returns-a-table"),
    pytest.param(
        "local f = load('error(\"x\")', '=[tactus sandbox]') local ok, e = pcall(f) "
        "return not ok and not e:find('^%[tactus')",
        id="load-chunkname-cannot-pose-as-kernel",
    ),
    pytest.param(
        "local mt = {} local t = setmetatable({}, mt) mt.__gc = function() RAN = true end "
        "t = nil collectgarbage() collectgarbage() return RAN == nil",
        id="__gc-added-after-setmetatable-never-runs",
    ),
    pytest.param(
        "return type(collectgarbage('count')) == 'number' and collectgarbage('isrunning') == true "
        "and collectgarbage('step') ~= nil and collectgarbage() == 0",
        id="collectgarbage-safe-options",
    ),
    pytest.param(
        "local co = coroutine.create(function() end) coroutine.resume(co) "
        "local ok, e = coroutine.resume(co) return ok == false and e == 'cannot resume dead coroutine'",
        id="resume-dead-coroutine",
    ),
    pytest.param(
        "local co = coroutine.create(function() coroutine.yield() end) coroutine.resume(co) "
        "return coroutine.close(co) == true and coroutine.status(co) == 'dead'",
        id="close-suspended-coroutine",
    ),
    pytest.param(
        "local co = coroutine.create(function() coroutine.yield({kind = 'sleep', seconds = 1000, run = 1}) "
        "end) local ok, v = coroutine.resume(co) return ok and v.kind == 'sleep' and v.seconds == 1000",
        id="fake-effect-in-coroutine-is-a-plain-value",
    ),
    pytest.param(
        "local f = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end) "
        "return f(1) == 2 and f(5) == 10",
        id="coroutine-wrap-round-trip",
    ),
    pytest.param(
        "return coroutine.isyieldable() == true and select(2, coroutine.running()) == false",
        id="cell-runs-in-a-coroutine",
    ),
]


@pytest.mark.parametrize("code", NOTHING_THERE)
def test_nothing_there(cells: Cells, code: str) -> None:
    assert run(cells, code) == [True]


# ------------------------------------------------- attempts that must raise
RAISES = [
    pytest.param("return python.eval('1')", "LuaError", "global 'python'", id="python.eval"),
    pytest.param("return python.builtins.open", "LuaError", "global 'python'", id="python.builtins"),
    pytest.param("return python.as_attrgetter(Json)", "LuaError", "global 'python'", id="python.as_attrgetter"),
    pytest.param("return package.loadlib('libc.so.6', 'system')", "LuaError", "global 'package'", id="package.loadlib"),
    pytest.param("return require('io')", "LuaError", "global 'require'", id="require-io"),
    pytest.param("return dofile('/etc/passwd')", "LuaError", "global 'dofile'", id="dofile"),
    pytest.param("return loadfile('/etc/passwd')", "LuaError", "global 'loadfile'", id="loadfile"),
    pytest.param("return debug.getupvalue(Json.decode, 1)", "LuaError", "global 'debug'", id="debug.getupvalue"),
    pytest.param("return debug.sethook()", "LuaError", "global 'debug'", id="debug.sethook"),
    pytest.param("return debug.getregistry()", "LuaError", "global 'debug'", id="debug.getregistry"),
    pytest.param("return string.dump(print)", "LuaError", "field 'dump'", id="string.dump-call"),
    pytest.param("return ('x').dump(print)", "LuaError", "field 'dump'", id="string-method-dump"),
    pytest.param("os.execute('touch /tmp/tactus-pwned')", "LuaError", "field 'execute'", id="os.execute-call"),
    pytest.param("return io.open('/etc/passwd')", "LuaError", "global 'io'", id="io.open"),
    pytest.param("return getmetatable('').__index", "LuaError", "boolean value", id="string-metatable-index"),
    pytest.param("getmetatable('').__index = {}", "LuaError", "boolean value", id="string-metatable-modify"),
    pytest.param("setmetatable('', {})", "LuaError", "table expected", id="setmetatable-on-a-string"),
    pytest.param(
        "setmetatable({}, {__gc = function() while true do end end})",
        "LuaError",
        "__gc",
        id="setmetatable-__gc-refused",
    ),
    pytest.param("setmetatable(_G, {__gc = true})", "LuaError", "__gc", id="setmetatable-_G-__gc-refused"),
    pytest.param("collectgarbage('stop')", "LuaError", "not allowed", id="collectgarbage-stop"),
    pytest.param("collectgarbage('restart')", "LuaError", "not allowed", id="collectgarbage-restart"),
    pytest.param("collectgarbage('generational')", "LuaError", "not allowed", id="collectgarbage-generational"),
    pytest.param("collectgarbage('incremental', 1, 1, 1)", "LuaError", "not allowed", id="collectgarbage-incremental"),
    pytest.param("collectgarbage('setpause', 1000)", "LuaError", "not allowed", id="collectgarbage-setpause"),
    pytest.param("collectgarbage('setstepmul', 1)", "LuaError", "not allowed", id="collectgarbage-setstepmul"),
    pytest.param(
        "coroutine.close(coroutine.running())", "LuaError", "running coroutine", id="close-the-cell-coroutine"
    ),
    pytest.param(
        "local main = coroutine.running() "
        "local co = coroutine.create(function() return coroutine.resume(main) end) "
        "local _, ok, e = coroutine.resume(co) error(e)",
        "LuaError",
        "non-suspended",
        id="resume-the-cell-coroutine-from-inside",
    ),
    pytest.param("return os.date('%Ez')", "LuaError", "invalid conversion specifier", id="os.date-%Ez"),
    pytest.param("return os.date('%')", "LuaError", "invalid conversion specifier", id="os.date-lone-%"),
    pytest.param("return os.date('%Q')", "LuaError", "invalid conversion specifier", id="os.date-%Q"),
    pytest.param("return os.date('*t', 2^60)", "LuaError", "cannot be represented", id="os.date-far-future"),
    pytest.param("return os.date('!%c', -2^62)", "LuaError", "cannot be represented", id="os.date-far-past"),
    pytest.param(
        "return os.time({year = 2^62, month = 1, day = 1})", "LuaError", "out-of-bound", id="os.time-huge-year"
    ),
    pytest.param(
        "return Procedure.run('no-such-procedure')",
        "LuaError|ProcedureError",
        "unknown procedure",
        id="run-unknown-procedure",
    ),
]


@pytest.mark.parametrize(("code", "ename", "fragment"), RAISES)
def test_raises(cells: Cells, code: str, ename: str, fragment: str) -> None:
    err = cells.error(code)
    assert err.ename in ename.split("|"), err
    assert fragment in err.evalue
    assert isinstance(err.evalue, str) and all(isinstance(line, str) for line in err.traceback)
    still_works(cells)


# ------------------- bridge-backed primitives with hostile arguments, under pcall
# The error a pcall catches must be a string: lupa turns a Python exception
# raised while converting arguments or results into a userdata error value.
DEEP_DAG = "(function() local t = {} for i = 1, 60 do t = {t, t} end return t end)()"
CYCLE = "(function() local t = {} t[1] = t return t end)()"
HOSTILE_CALLS = [
    pytest.param('Json.decode("\\xff")', "not be passed", id="Json.decode-invalid-utf8"),
    pytest.param("Json.decode(42)", "must be a string", id="Json.decode-number"),
    pytest.param("Json.decode(print)", "must be a string", id="Json.decode-function"),
    pytest.param("Json.decode(coroutine.create(print))", "must be a string", id="Json.decode-coroutine"),
    pytest.param('Json.decode("\\"\\\\ud800\\"")', "surrogates", id="Json.decode-lone-surrogate"),
    pytest.param('Json.decode("1234567890123456789012345678901234567890")', "too large", id="Json.decode-huge-integer"),
    pytest.param(
        'Json.decode(string.rep("[", 100000))',
        "Json.decode: value is nested more than 100 levels deep",
        id="Json.decode-deep-nesting",
    ),
    pytest.param(
        "Json.decode('[NaN, Infinity]')",
        "Json.decode: value[1] is nan (JSON has no NaN or infinity)",
        id="Json.decode-nan",
    ),
    pytest.param(
        "Json.decode('{\"a\": [1, 1e400]}')",
        "Json.decode: value.a[2] is inf (JSON has no NaN or infinity)",
        id="Json.decode-overflowing-float",
    ),
    pytest.param('Json.decode("{")', "invalid JSON", id="Json.decode-truncated"),
    pytest.param("Json.encode(print)", "function", id="Json.encode-function"),
    pytest.param("Json.encode(coroutine.create(print))", "is a Lua", id="Json.encode-coroutine"),
    pytest.param(f"Json.encode({CYCLE})", "levels deep", id="Json.encode-cycle"),
    pytest.param(f"Json.encode({DEEP_DAG})", "too large", id="Json.encode-shared-subtables"),
    pytest.param("Json.encode(0/0)", "NaN", id="Json.encode-nan"),
    pytest.param(
        'Json.encode({["\\xff"] = "\\xff"})',
        "NotRecordableError: json_encode: a string in the value is "
        "not valid UTF-8 text (decode binary data before recording it)",
        id="Json.encode-invalid-utf8",
    ),
    pytest.param(f"Log.info('x', {DEEP_DAG})", "too large", id="Log.info-shared-subtables"),
    pytest.param("File.read(123)", "must be a string", id="File.read-number"),
    pytest.param("File.read({})", "must be a string", id="File.read-table"),
    pytest.param('File.read("\\xff")', "not be passed", id="File.read-invalid-utf8-path"),
    pytest.param('File.write("f.txt", "\\xff")', "not be passed", id="File.write-invalid-utf8-data"),
    pytest.param("File.exists(print)", "must be a string", id="File.exists-function"),
    pytest.param("Step.run(123, print)", "must be a string", id="Step.run-number-name"),
    pytest.param('Step.run("s1", 5)', "must be a function", id="Step.run-number-fn"),
    pytest.param('Step.run("s2", function() return print end)', "function", id="Step.run-returns-function"),
    pytest.param(
        'Step.run("s3", function() return coroutine.running() end)', "is a Lua", id="Step.run-returns-coroutine"
    ),
    pytest.param(
        'Step.run("s4", function() return "\\xff" end)',
        "SandboxError: a value could not be passed between "
        "Lua and the kernel: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        id="Step.run-returns-invalid-utf8",
    ),
    pytest.param(
        f'Step.run("s5", function() return {DEEP_DAG} end)', "too large", id="Step.run-returns-shared-subtables"
    ),
    pytest.param("procedure({name = {}}, function() end)", "must be a string", id="procedure-table-name"),
    pytest.param(
        f"procedure({{params = {DEEP_DAG}}}, function() end)", "too large", id="procedure-shared-subtables-config"
    ),
    pytest.param('Sleep("soon")', "non-negative number", id="Sleep-string"),
    pytest.param("Sleep(-1)", "non-negative number", id="Sleep-negative"),
    pytest.param('Retry.with_backoff("x")', "must be a function", id="Retry-string"),
    pytest.param("Human.approve(42)", "expected a table", id="Human.approve-number"),
    pytest.param(
        "error(setmetatable({}, {__tostring = function() return 'custom' end}))",
        "custom",
        id="error-object-with-__tostring",
    ),
]


def test_printing_text_that_is_not_utf8_shows_replacement_characters(cells: Cells) -> None:
    cells('print("a\\xffb")\nLog.info("c\\xfe", {k = "\\xfd"})')
    assert cells.host.stdout == "a\ufffdb\n[INFO] c\ufffd (a context holding text that is not UTF-8)\n"
    still_works(cells)


@pytest.mark.parametrize(("call", "fragment"), HOSTILE_CALLS)
def test_hostile_bridge_call_fails_with_a_string(cells: Cells, call: str, fragment: str) -> None:
    ok, kind, message = run(cells, f"local ok, e = pcall(function() return {call} end) return ok, type(e), tostring(e)")
    assert ok is False
    assert kind in ("string", "table"), f"pcall caught a {kind}: {message}"
    assert fragment in message
    still_works(cells)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param("Log.info('x', print)", id="Log.info-function-context"),
        pytest.param(f"Log.info('x', {CYCLE})", id="Log.info-cyclic-context"),
        pytest.param("Log.info('x', {co = coroutine.create(print)})", id="Log.info-coroutine-context"),
        pytest.param("Log.info({}, {[{}] = 1})", id="Log.info-table-key-context"),
        pytest.param("Checkpoint.get({})", id="Checkpoint.get-table"),
        pytest.param("Checkpoint.exists(print)", id="Checkpoint.exists-function"),
        pytest.param("File.write('t.txt', {})", id="File.write-table-data"),
        pytest.param("Json.encode({a = {b = {c = {}}}})", id="Json.encode-nested"),
        pytest.param("State.set(print, coroutine.create(print))", id="State.set-odd-key"),
    ],
)
def test_odd_but_harmless_calls_return_nothing_python(cells: Cells, call: str) -> None:
    code = f"""
    local r = table.pack(pcall(function() return {call} end))
    for i = 1, r.n do
      if type(r[i]) == 'userdata' then return 'userdata at ' .. i end
    end
    return 'clean'"""
    assert run(cells, code) == ["clean"]
    assert "userdata" not in cells.host.stdout + cells.host.stderr


# ------------------------------------------------------------ File confinement
@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        pytest.param('File.read("/etc/passwd")', "absolute path", id="read-absolute"),
        pytest.param('File.write("{out}/pwned.txt", "x")', "absolute path", id="write-absolute"),
        pytest.param('File.read("{rel}/secret.txt")', "leaves the notebook", id="read-dotdot"),
        pytest.param('File.write("{rel}/pwned.txt", "x")', "leaves the notebook", id="write-dotdot"),
        pytest.param('File.write("a/../../{name}/pwned.txt", "x")', "leaves the notebook", id="write-a-dotdot-dotdot"),
        pytest.param('File.read("link/secret.txt")', "leaves the notebook", id="read-through-dir-symlink"),
        pytest.param('File.write("link/pwned.txt", "x")', "leaves the notebook", id="write-through-dir-symlink"),
        pytest.param('File.read("secret-link")', "leaves the notebook", id="read-file-symlink"),
        pytest.param('File.write("secret-link", "overwritten")', "leaves the notebook", id="write-file-symlink"),
        pytest.param('File.write("dangling", "x")', "leaves the notebook", id="write-dangling-symlink"),
        pytest.param('File.size("link/secret.txt")', "leaves the notebook", id="size-through-symlink"),
        pytest.param('File.exists("{rel}/secret.txt")', "leaves the notebook", id="exists-outside"),
        pytest.param('File.write("ok.txt\\0/../../x", "x")', "invalid path", id="nul-byte"),
        pytest.param('File.read("")', "invalid path", id="empty-path"),
        pytest.param(
            'File.write(".", "x")', "File.write: cannot write '.': Is a directory", id="write-the-folder-itself"
        ),
        pytest.param('File.read("sub/../../{name}/secret.txt")', "leaves the notebook", id="read-sub-dotdot"),
    ],
)
def test_file_confinement(cells: Cells, tmp_path: Path, outside: Path, call: str, fragment: str) -> None:
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "secret-link").symlink_to(outside / "secret.txt")
    (tmp_path / "dangling").symlink_to(outside / "made-by-dangling.txt")
    (tmp_path / "sub").mkdir()
    call = call.format(out=outside, rel=os.path.relpath(outside, tmp_path), name=outside.name)
    err = cells.error(call)
    assert err.ename in ("SandboxError", "LuaError"), err
    assert fragment in err.evalue
    assert "top secret" not in err.evalue + "".join(err.traceback)
    assert not (outside / "made-by-dangling.txt").exists()
    assert not Path("/tmp/tactus-pwned").exists()


def test_file_paths_that_look_odd_stay_inside(cells: Cells, tmp_path: Path, outside: Path) -> None:
    """``~``, backslashes and dot segments that stay inside are just names."""
    assert run(
        cells,
        'File.write("~/x.txt", "a") File.write("a\\\\..\\\\..\\\\y.txt", "b") '
        'File.write("d/./e/../f.txt", "c") return File.read("d/f.txt")',
    ) == ["c"]
    assert (tmp_path / "~" / "x.txt").read_text() == "a"
    assert (tmp_path / "a\\..\\..\\y.txt").read_text() == "b"


# ------------------------------------------------------- globals and metatables
def test_clobbering_the_string_library_leaves_primitives_working(cells: Cells) -> None:
    """Cell code may wreck `string` (it is the strings' method table), but the
    kernel's primitives and error reports keep working."""
    run(cells, "for k in pairs(string) do string[k] = function() error('clobbered') end end")
    values = run(
        cells,
        """
        print('a', 1, {})
        Log.info('x', {a = 1})
        local j = Json.encode({a = {1, 2}})
        File.write('f.txt', j)
        return File.read('f.txt'), Json.decode(j).a[2], State.increment('n'), Step.run('s', function() return 5 end)""",
    )
    assert values == ['{"a":[1,2]}', 2, 1, 5]
    assert cells.host.stdout.startswith("a\t1\ttable: ")
    err = cells.error("error('boom')")
    assert err.ename == "LuaError" and "boom" in err.evalue
    assert cells.error("return ('x'):rep(2)").evalue.endswith("clobbered")


def test_strict_globals_do_not_crash_the_kernel(cells: Cells) -> None:
    """An _G whose __index raises (the "strict" idiom) used to abort the
    process: lupa reads the global `debug` unprotected before each call."""
    run(
        cells,
        "local _ = setmetatable(_G, {__index = function(_, k) error('undefined variable ' .. tostring(k), 2) end})",
    )
    still_works(cells)
    err = cells.error("return not_defined")
    assert "undefined variable not_defined" in err.evalue


def test_a_debug_global_is_not_used_by_the_kernel(cells: Cells) -> None:
    """A cell's own `debug` (raising on access, or a traceback that loops)
    is not picked up as the error handler of the kernel's calls."""
    run(cells, "debug = setmetatable({}, {__index = function() error('boom') end})")
    still_works(cells)
    run(cells, "debug = {traceback = function() while true do end end}")
    still_works(cells)
    assert cells.error("error('x')").evalue.endswith("x")


def test_replaced_globals_do_not_reach_the_kernels_own_helpers(cells: Cells) -> None:
    """The kernel's Python-side helpers (showing a value, collecting garbage)
    do not call a cell's replacement of tostring/pcall/collectgarbage."""
    timer = interrupt_after(cells, 10)  # a regression fails instead of hanging
    try:
        run(
            cells,
            "rawset(_G, 'tostring', nil) rawset(_G, 'pcall', nil) rawset(_G, 'collectgarbage', nil) "
            "local _ = setmetatable(_G, {__index = function() while true do end end})",
        )
        values = run(cells, "return rawget(_G, 'print')")
        assert values[0].startswith("function: ")
        assert cells("return 1+1") == [2]
    finally:
        timer.cancel()


def test_setting_G_to_nil_does_not_brick_the_kernel(cells: Cells) -> None:
    run(cells, "_G = nil")
    run(cells, "print('still here')")
    assert cells.host.stdout == "still here\n"
    assert cells("return load('return 1 + 1')()") == [2]


def test_ENV_tricks_stay_in_their_cell(cells: Cells) -> None:
    run(cells, "local _ENV = {print = print} print(io, debug, python)")
    assert cells.host.stdout == "nil\tnil\tnil\n"
    run(cells, "_ENV = nil")
    still_works(cells)


def test_rawset_on_G_cannot_plant_kernel_state(cells: Cells) -> None:
    """Writing names the kernel uses internally into _G changes nothing."""
    run(cells, "for _, n in ipairs({'B', 'K', 'EFFECT', 'THREADS', 'debug', 'python'}) do rawset(_G, n, {}) end")
    still_works(cells)
    assert run(cells, "Step.run('x', function() return 1 end) return Checkpoint.get('x')") == [1]


# ------------------------------------------------------------------ coroutines
def test_yielding_a_fake_effect_from_the_top_level_does_nothing(cells: Cells) -> None:
    started = time.monotonic()
    assert run(cells, "local r = coroutine.yield({kind = 'sleep', seconds = 1000, run = 1}) return r == nil") == [True]
    assert time.monotonic() - started < 5


def test_a_stashed_cell_coroutine_is_dead_in_the_next_cell(cells: Cells) -> None:
    run(cells, "CELL_THREAD = coroutine.running()")
    assert run(cells, "return coroutine.status(CELL_THREAD), coroutine.resume(CELL_THREAD)") == [
        "dead",
        False,
        "cannot resume dead coroutine",
    ]


def test_yield_from_a_metamethod_the_kernel_calls(cells: Cells) -> None:
    """The kernel calls __tostring outside any coroutine: a yield there fails cleanly."""
    err = cells.error("error(setmetatable({}, {__tostring = function() coroutine.yield() end}))")
    assert err.ename == "LuaError" and isinstance(err.evalue, str)
    still_works(cells)


# --------------------------------------------------------------- error values
@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        # the kernel's own error tables are known by identity: these are plain
        # tables, shown as their constructors (read raw: no __tostring runs)
        pytest.param(
            "error({__tactus_error = true, message = setmetatable({}, {__tostring = function() error('x') end})})",
            "{__tactus_error = true, message = {}}",
            id="forged-error-with-raising-message",
        ),
        pytest.param(
            "error({__tactus_error = true, message = print, traceback = {}, ename = {}})",
            "  message = function: 0x",
            id="forged-error-with-odd-fields",
        ),
        pytest.param(
            "error(setmetatable({}, {__tostring = function() error('again') end}))",
            "without a message",
            id="error-object-whose-tostring-raises",
        ),
        pytest.param(
            "error(setmetatable({}, {__tostring = function() return {} end}))",
            "without a message",
            id="error-object-whose-tostring-returns-a-table",
        ),
        pytest.param("error(coroutine.create(print))", "thread", id="error-object-coroutine"),
    ],
)
def test_odd_error_values_give_a_clean_error(cells: Cells, code: str, fragment: str) -> None:
    err = cells.error(code)
    assert isinstance(err.ename, str) and isinstance(err.evalue, str)
    assert all(isinstance(line, str) for line in err.traceback)
    assert fragment in err.evalue
    still_works(cells)


# ------------------------------------------------------------------ procedures
def test_params_checkpoints_and_step_results_hold_no_python(cells: Cells) -> None:
    code = """
    procedure({name = "inspect", params = {x = {type = "string", default = "a"},
                                           n = {type = "object", default = {k = {1, 2}}}}},
      function()
        local seen = {}
        local function check(v, path)
          if type(v) == "userdata" then error("userdata at " .. path) end
          if type(v) ~= "table" or seen[v] then return end
          seen[v] = true
          for _, name in ipairs({"__class__", "__dict__", "__globals__"}) do
            if rawget(v, name) ~= nil then error(name .. " at " .. path) end
          end
          for k, x in next, v do check(k, path .. "[key]") check(x, path .. "." .. tostring(k)) end
        end
        local s = Step.run("s", function() return {a = {1, "two", true}} end)
        check(params.x, "params.x") check(params.n, "params.n") check(s, "step")
        check(Checkpoint.get("s"), "checkpoint") check(State.all(), "state")
        for k, v in pairs(params) do check(v, "params." .. k) end
        WALKED = true
      end)"""
    cells(code, key="procedure")
    assert cells("return WALKED", key="check") == [True]
    # replayed: the recorded value comes back from Python
    cells("WALKED = nil", key="reset")
    cells(code, key="procedure")
    assert cells("return WALKED", key="check") == [True]


# ----------------------------------------------------------- resource attacks
OUT_OF_MEMORY = "the cell ran out of memory (limit 64 MiB); the kernel is still running"
RESOURCE_ATTACKS = [
    pytest.param(
        "return string.rep('x', 2^40)",
        "string.rep: the result would be 1 TiB, over the memory limit of 64 MiB",
        id="string.rep-2^40",
    ),
    pytest.param(
        "return string.rep('x', 2^28)",
        "string.rep: the result would be 256 MiB, over the memory limit of 64 MiB",
        id="string.rep-256MiB",
    ),
    pytest.param(
        "return ('x'):rep(2^20):rep(2^10)",
        "string.rep: the result would be 1024 MiB, over the memory limit of 64 MiB",
        id="string.rep-of-rep",
    ),
    pytest.param("local t = {} for i = 1, 1e9 do t[i] = i end", "out of memory", id="table-fill"),
    pytest.param("local s = 'x' while true do s = s .. s end", "out of memory", id="string-doubling"),
    pytest.param(
        "local t = {} for i = 1, 1e8 do t[i] = 'x' .. i end return table.concat(t)",
        "out of memory",
        id="table.concat-huge",
    ),
    pytest.param(
        "local t = {} for i = 1, 1e8 do t[i] = coroutine.create(print) end", "out of memory", id="coroutine-bomb"
    ),
    pytest.param("function f() return f() + 1 end return f()", OUT_OF_MEMORY, id="deep-recursion"),
    pytest.param(
        "local function f() return ('x'):gsub('x', f) end return f()", "C stack overflow", id="recursion-through-gsub"
    ),
    pytest.param(
        "local t = setmetatable({}, {}) getmetatable(t).__index = function(s, k) return s[k] end return t.x",
        "C stack overflow",
        id="recursion-through-__index",
    ),
    pytest.param(
        "local function f() return coroutine.wrap(f)() end return f()",
        "C stack overflow",
        id="recursion-through-coroutines",
    ),
    pytest.param(
        "local t = setmetatable({}, {__tostring = function(s) return tostring(s) end}) return tostring(t)",
        "C stack overflow",
        id="recursion-through-__tostring",
    ),
    pytest.param(
        "return assert(load(string.rep('(', 1e6) .. '1' .. string.rep(')', 1e6)))", "overflow", id="load-deep-nesting"
    ),
    pytest.param(f"return {DEEP_DAG}", "too large", id="show-shared-subtables"),
    pytest.param(
        "local t = {} for i = 1, 1100 do local r = {} for j = 1, 1000 do r[j] = j end t[i] = r end return t",
        "too large",
        id="show-huge-table",
    ),
    pytest.param(
        "return #os.date(string.rep('%c', 1e6)), string.rep('x', 2^29)",
        "string.rep: the result would be 512 MiB, over the memory limit of 64 MiB",
        id="os.date-huge-format",
    ),
]


@pytest.mark.parametrize(("code", "fragment"), RESOURCE_ATTACKS)
def test_resource_attack_is_a_clear_error(small: Cells, code: str, fragment: str) -> None:
    started = time.monotonic()
    err = small.error(code)
    assert err.ename in ("LuaError", "LuaMemoryError", "SandboxError"), err
    assert fragment in err.evalue
    if err.ename == "LuaMemoryError" and "string.rep: the result would be" not in err.evalue:  # refused up front
        assert "the kernel is still running" in err.evalue
    assert time.monotonic() - started < 30
    still_works(small)


def test_deep_recursion_with_room_to_spare_is_a_stack_overflow(cells: Cells) -> None:
    err = cells.error("function f() return f() + 1 end\nreturn f()")
    assert err.ename == "LuaError" and "stack overflow" in err.evalue
    still_works(cells)


def test_deep_but_narrow_values_are_fine(small: Cells) -> None:
    """A 100 000-level chain is shown cut at the display depth; encoding it
    is refused with a message saying where."""
    values = run(small, "local t = {} for i = 1, 1e5 do t = {t} end DEEP = t return t")
    assert values and isinstance(values[0], list)
    err = small.error("return Json.encode(DEEP)")
    assert "levels deep" in err.evalue
    still_works(small)


def test_memory_is_given_back_after_a_bomb(small: Cells) -> None:
    small.error("local t = {} for i = 1, 1e9 do t[i] = i end")
    assert small.runtime.lua.get_memory_used() < SMALL_MEMORY // 4
    assert run(small, "local t = {} for i = 1, 1e5 do t[i] = i end return #t") == [100000]


# ------------------------------------------------------------------ interrupts
INTERRUPTIBLE = [
    pytest.param("while true do end", id="tight-loop"),
    pytest.param("pcall(function() while true do end end) while true do end", id="tight-loop-in-pcall"),
    pytest.param("while true do pcall(error, 'x') end", id="loop-of-pcall-error"),
    pytest.param(
        "xpcall(function() while true do end end, function(e) while true do end end)", id="xpcall-with-looping-handler"
    ),
    pytest.param(
        "while true do pcall(coroutine.wrap(function() while true do end end)) end",
        id="loop-in-coroutine.wrap-in-pcall",
    ),
    pytest.param("while true do load(function() while true do end end) end", id="loop-in-load-reader"),
    pytest.param(
        "local co = coroutine.create(function() "
        "local x <close> = setmetatable({}, {__close = function() while true do end end}) "
        "coroutine.yield() end) coroutine.resume(co) while true do coroutine.close(co) end",
        id="loop-in-__close-during-coroutine.close",
    ),
    pytest.param(
        "local x <close> = setmetatable({}, {__close = function() while true do end end}) while true do end",
        id="loop-in-__close-of-the-cell",
    ),
    pytest.param("pcall(string.gsub, 'aaa', 'a', function() while true do end end)", id="loop-in-gsub-callback"),
    pytest.param("pcall(table.sort, {3, 2, 1}, function() while true do end end)", id="loop-in-sort-comparator"),
    pytest.param(
        "error(setmetatable({}, {__tostring = function() while true do end end}))", id="loop-in-__tostring-of-the-error"
    ),
    pytest.param(
        "Log.info('x', {[setmetatable({}, {__tostring = function() while true do end end})] = 1})",
        id="loop-in-__tostring-run-by-Python",
    ),
    pytest.param("pcall(Step.run, 's', function() while true do end end)", id="loop-in-Step.run"),
    pytest.param("procedure(function() pcall(function() while true do end end) end)", id="loop-in-procedure"),
    pytest.param(
        "error(setmetatable({}, {__tostring = load('while true do end', '=[tactus sandbox]')}))",
        id="loop-in-chunk-named-like-the-kernel-run-by-Python",
    ),
]


@pytest.mark.parametrize("code", INTERRUPTIBLE)
def test_interrupt_stops_it(cells: Cells, code: str) -> None:
    timer = interrupt_after(cells, 0.3)
    try:
        err = cells.error(code)
    finally:
        timer.cancel()
    assert err.ename == "KeyboardInterrupt", err
    still_works(cells)


def test_a_coroutine_stopped_by_an_interrupt_is_never_closed(cells: Cells) -> None:
    """It died inside the count hook, where Lua leaves hooks off: running its
    looping __close later could never be interrupted."""
    timer = interrupt_after(cells, 0.3)
    try:
        cells.error(
            "CO = coroutine.create(function() "
            "local x <close> = setmetatable({}, {__close = function() while true do end end}) "
            "while true do end end) coroutine.resume(CO)"
        )
    finally:
        timer.cancel()
    assert run(cells, "return coroutine.close(CO)") == [False, "KeyboardInterrupt: interrupted by the user"]
    still_works(cells)


def test_interrupt_while_the_kernel_shows_a_value(cells: Cells) -> None:
    """Showing a table whose key has a looping __tostring runs cell code from
    Python; the interrupt stops it."""
    timer = interrupt_after(cells, 0.3)
    try:
        err = cells.error("return {[setmetatable({}, {__tostring = function() while true do end end})] = 1}")
    finally:
        timer.cancel()
    assert (err.ename, err.evalue) == ("KeyboardInterrupt", f"interrupted by the user at [cell {cells.count}]:1")
    still_works(cells)


# ----------------------------------------------------------------- the walker
WALKER = """
local seen, found, count = {}, {}, 0
local function visit(v, path, depth)
  local t = type(v)
  if t == "userdata" then found[#found + 1] = path return end
  if (t ~= "table" and t ~= "function" and t ~= "thread") or seen[v] or depth > 40 then return end
  seen[v] = true
  count = count + 1
  local mt = getmetatable(v)
  if mt ~= nil then visit(mt, path .. "<metatable>", depth + 1) end
  if t == "table" then
    for k, x in next, v do
      visit(k, path .. "<key>", depth + 1)
      visit(x, path .. "." .. tostring(k), depth + 1)
    end
  end
end
visit(_G, "_G", 0)
visit(getmetatable(""), "<string metatable>", 0)
visit(getmetatable(_G), "<_G metatable>", 0)
visit(params, "params", 0)
for k, v in pairs(params) do visit(v, "params." .. k, 0) end
visit(State.all(), "State.all()", 0)
visit(Stage.history(), "Stage.history()", 0)
visit(Json.decode('{"a": [1, {"b": null}], "c": "d"}'), "Json.decode()", 0)
visit(Step.run("walk", function() return {x = {1, 2}} end), "Step.run()", 0)
visit(Checkpoint.get("walk"), "Checkpoint.get()", 0)
visit(table.pack(pcall(Json.decode, "\\xff")), "pcall(Json.decode)", 0)
visit(table.pack(pcall(File.read, "/etc/passwd")), "pcall(File.read)", 0)
WALK = {found = table.concat(found, ", "), count = count}
"""


def test_walker_finds_no_python_object(cells: Cells) -> None:
    """Everything reachable from the cells' globals, their metatables, the
    string metatable and the values primitives return is Lua data."""
    cells("State.set('nested', {a = {b = {c = {}}}})", key="setup")
    cells(
        "procedure({name = 'walker', params = {p = {type = 'object', default = {q = {1, 2}}}}}, function()\n"
        + WALKER
        + "\nend)",
        key="walker",
    )
    walk = cells("return WALK", key="check")[0]
    assert walk["found"] == ""
    assert walk["count"] > 100  # it did walk the globals


def test_every_reachable_function_returns_no_python_object(cells: Cells) -> None:
    """Call every function reachable from _G (two levels deep) with a few
    argument shapes; nothing returned or raised may be a userdata."""

    async def refuse(runtime: Runtime, run: Any, request: Any) -> tuple[Any, ...]:
        raise BridgeError("SandboxError: effects are switched off in this test")

    for kind in list(cells.runtime.effects):
        cells.runtime.effects[kind] = refuse
    code = """
    local leaks, calls = {}, 0
    local function has_userdata(v, seen)
      if type(v) == "userdata" then return true end
      if type(v) ~= "table" or seen[v] then return false end
      seen[v] = true
      local mt = getmetatable(v)
      if type(mt) == "table" and has_userdata(mt, seen) then return true end
      for k, x in next, v do
        if has_userdata(k, seen) or has_userdata(x, seen) then return true end
      end
      return false
    end
    local shapes = {
      {n = 0}, {n = 2, nil, "a"}, {n = 2, "a", 1}, {n = 2, {}, {}}, {n = 1, function() end}, {n = 1, 0},
      {n = 2, "\\xff", "\\xff"}, {n = 1, "../../etc/passwd"},
    }
    local funcs, seen_f = {}, {}
    local function collect(t, path, depth)
      for k, v in next, t do
        if type(v) == "function" and not seen_f[v] then
          seen_f[v] = true
          funcs[#funcs + 1] = {path .. "." .. tostring(k), v}
        elseif type(v) == "table" and depth < 2 and v ~= _G then
          collect(v, path .. "." .. tostring(k), depth + 1)
        end
      end
    end
    collect(_G, "_G", 0)
    table.sort(funcs, function(a, b) return a[1] < b[1] end)
    local skip = {}
    for _, entry in ipairs(funcs) do
      if not skip[entry[1]] then
        for _, args in ipairs(shapes) do
          calls = calls + 1
          local r = table.pack(pcall(entry[2], table.unpack(args, 1, args.n)))
          if has_userdata(r, {}) then leaks[#leaks + 1] = entry[1] end
        end
      end
    end
    CALLED = {leaks = table.concat(leaks, ", "), calls = calls}
    """
    timer = interrupt_after(cells, 60)  # something blocking fails the test instead of hanging it
    try:
        try:
            cells(code)
        except CellError as err:
            # a call may have set up a procedure that then fails: the walk itself must have finished
            assert err.ename != "KeyboardInterrupt", err
    finally:
        timer.cancel()
    called = cells("return CALLED")[0]
    assert called["leaks"] == ""
    assert called["calls"] > 500


def test_runtime_helpers_are_not_reachable_from_python_globals(cells: Cells) -> None:
    """From Python's side too: lupa's globals (what lua.eval sees) pin the
    kernel's helpers, and nothing reachable from the cells' _G is a Python
    callable."""
    lua = cells.runtime.lua
    g = lua.globals()
    assert g["debug"] is False
    assert lua.eval("tostring")(1) == "1"
    cells("tostring = function() return 'hijacked' end")
    assert lua.eval("tostring")(1) == "1"
    assert cells("return tostring(1)") == ["hijacked"]
