"""Library calls whose cost a cell controls, on a real kernel (issue 21,
"The kernel stops answering").

Each case runs in a procedure that records a step first, then either is
refused up front with an error naming the function and its limit, or runs
until the test interrupts it (``KeyboardInterrupt``). Either way the kernel
answers ``kernel_info`` within 2 s, and the step recorded before the bomb is
still in the procedure's record. A fresh kernel per case: a kernel that
failed to stop would spoil the next.

The cell writes ``started.txt`` (a synchronous file write) just before the
bomb, and the test waits for that file before it interrupts: while Lua runs
C code the kernel sends nothing, so printed output cannot say when.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_driver import CellRun, KernelDriver

TIMEOUT = 60  # generous: two cores shared with other test runs

PROCEDURE = """
procedure({{name = "bomb"}}, function()
  Step.run("before", function() return 1 end)
  {setup}
  File.write("started.txt", "yes")
  {body}
  return {{}}
end)
"""

INTERRUPT = ("KeyboardInterrupt", "interrupted by the user")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[KernelDriver, Path]]:
    driver = KernelDriver(tmp_path)
    driver.open_tactus(None)
    try:
        yield driver, tmp_path
    finally:
        driver.shutdown()


def run_bomb(kernel: KernelDriver, folder: Path, body: str, *, interrupt: bool, setup: str = "") -> CellRun:
    """Run `body` after a recorded step; interrupt it once it has started if
    asked. Checks what every case must hold: one error reply, kernel_info
    within 2 s of the interrupt (or of the reply), the step kept."""
    run = kernel.submit(PROCEDURE.format(body=body, setup=setup))
    if interrupt:
        kernel.wait_until(lambda: (folder / "started.txt").exists(), TIMEOUT)
        t0 = time.monotonic()
        kernel.interrupt()
        kernel.wait(run, timeout=TIMEOUT)
    else:
        kernel.wait(run, timeout=TIMEOUT)
        t0 = time.monotonic()
    info = kernel.kc.kernel_info(reply=True, timeout=TIMEOUT)
    assert info["content"]["status"] == "ok"
    assert time.monotonic() - t0 < 2.0
    assert run.status == "error"
    assert len(run.errors) == 1
    record = kernel.recorded_procedures().get("bomb", {})
    assert [(c["kind"], c["name"], c["value"]) for c in record.get("checkpoints", [])] == [("step", "before", 1)]
    return run


def error_of(run: CellRun) -> tuple[str, str]:
    err = run.errors[0]
    return err["ename"], err["evalue"]


def interrupted(run: CellRun) -> tuple[str, str]:
    """The error of an interrupted cell, without the line it names (a C
    function deep in a pattern may leave no cell line within reach)."""
    ename, evalue = error_of(run)
    return ename, evalue.split(" at [", 1)[0]


# --------------------------------------------------------------- up front
def test_an_empty_string_repeated_2_to_the_40_is_empty_at_once(fresh):
    kernel, _ = fresh
    run = kernel.execute("return #string.rep('', 2^40), #string.rep('', 2^40, ''), ('x'):rep(0)")
    assert run.status == "ok"
    assert run.result == "0\t0\t"


def test_string_rep_over_the_memory_cap_is_refused_before_allocating(fresh):
    kernel, folder = fresh
    run = run_bomb(kernel, folder, "local s = string.rep('x', 2^40)", interrupt=False)
    assert error_of(run) == (
        "LuaMemoryError",
        "[cell 1]:6: string.rep: the result would be 1 TiB, over the memory limit of 512 MiB",
    )


def test_string_rep_with_a_separator_counts_the_separator(fresh):
    kernel, folder = fresh
    run = run_bomb(kernel, folder, "local s = ('ab'):rep(2^28, ',')", interrupt=False)
    assert error_of(run) == (
        "LuaMemoryError",
        "[cell 1]:6: string.rep: the result would be 768 MiB, over the memory limit of 512 MiB",
    )


def test_json_decode_of_an_array_too_big_for_the_cap_is_a_memory_error(fresh):
    """Lua building a Python list's table ran into the cap inside lupa: the
    allocation error skipped lupa's release of the GIL, and the kernel hung
    for ever (issue 21)."""
    kernel, folder = fresh
    body = "local t = Json.decode('[' .. string.rep('1,', 20 * 2^20) .. '1]')"
    run = run_bomb(kernel, folder, body, interrupt=False)
    assert error_of(run) == (
        "LuaMemoryError",
        "the cell ran out of memory (limit 512 MiB); the kernel is still running",
    )
    assert kernel.execute("return #Json.decode('[1, 2, 3]')").result == "3"


def test_reading_a_file_bigger_than_the_memory_left_is_a_memory_error(tmp_path):
    (tmp_path / "big.txt").write_text("x" * (48 * 2**20))
    driver = KernelDriver(tmp_path, env={**os.environ, "TACTUS_MAX_MEMORY": str(32 * 2**20)})
    try:
        run = driver.execute("local s = File.read('big.txt') return #s", timeout=TIMEOUT)
        assert error_of(run) == (
            "LuaMemoryError",
            "the cell ran out of memory (limit 32 MiB); the kernel is still running",
        )
        assert driver.kc.kernel_info(reply=True, timeout=TIMEOUT)["content"]["status"] == "ok"
        assert driver.execute("return 1 + 1").result == "2"
    finally:
        driver.shutdown()


def test_huge_counts_of_values_are_refused_by_lua_at_once(fresh):
    kernel, folder = fresh
    run = run_bomb(kernel, folder, "local n = select('#', table.unpack({}, 1, 2^40))", interrupt=False)
    assert error_of(run) == ("LuaError", "[cell 1]:6: too many results to unpack")


def test_a_format_width_beyond_two_digits_is_refused_by_lua_at_once(fresh):
    kernel, folder = fresh
    run = run_bomb(kernel, folder, "local s = string.format('%099999d', 1)", interrupt=False)
    assert error_of(run) == ("LuaError", "[cell 1]:6: invalid conversion specification: '%099999d'")


# ------------------------------------------------------------- interrupted
def test_table_move_of_2_to_the_40_elements_stops_on_interrupt(fresh):
    kernel, folder = fresh
    run = run_bomb(kernel, folder, "table.move({}, 1, 2^40, 1, {})", interrupt=True)
    assert interrupted(run) == INTERRUPT


@pytest.mark.parametrize("call", ["table.insert(t, 1, 'x')", "table.remove(t, 1)"])
def test_insert_and_remove_under_a_len_of_2_to_the_40_stop_on_interrupt(fresh, call):
    kernel, folder = fresh
    body = f"local t = setmetatable({{}}, {{__len = function() return 2^40 end}}) {call}"
    run = run_bomb(kernel, folder, body, interrupt=True)
    assert interrupted(run) == INTERRUPT


def test_sorting_a_long_array_stops_on_interrupt(fresh):
    """2^22 numbers: C alone would sort them in a second or two, deaf to the interrupt."""
    kernel, folder = fresh
    setup = "local t = {} for i = 1, 2^22 do t[i] = (i * 7919) % 1000003 end"
    run = run_bomb(kernel, folder, "table.sort(t)", interrupt=True, setup=setup)
    assert interrupted(run) == INTERRUPT


@pytest.mark.parametrize(
    "call",
    [
        "string.find(string.rep('a', 40), string.rep('a*', 40) .. 'b')",
        "string.match(string.rep('a', 40), string.rep('a*', 40) .. 'b')",
        "string.gsub(string.rep('a', 40), string.rep('a*', 40) .. 'b', 'x')",
        "for _ in string.gmatch(string.rep('a', 40), string.rep('a*', 40) .. 'b') do end",
        "string.find(string.rep('(', 300000), '%b()')",
        "string.find(string.rep('a', 2^20), 'a*b')",
    ],
)
def test_catastrophic_patterns_stop_on_interrupt(fresh, call):
    kernel, folder = fresh
    run = run_bomb(kernel, folder, call, interrupt=True)
    assert interrupted(run) == INTERRUPT


# ------------------------------------------------------ ordinary use works
def test_ordinary_patterns_on_a_megabyte_still_work_quickly(kernel):
    """Trimming, splitting lines and replacing words in a megabyte of text
    give the right results in under 2 s (the bound keeps them in C: about
    80, 30 and 40 ms a call in the micro-benchmark of the report)."""
    code = r"""
local text = string.rep("lorem ipsum dolor sit amet\n", 2^20 // 27)
local t0 = os.clock()
local trimmed = ("  " .. text .. "  "):match("^%s*(.-)%s*$")
local lines = 0
for _ in text:gmatch("([^\n]*)\n") do lines = lines + 1 end
local _, words = text:gsub("%a+", "w")
return #trimmed == #text - 1, lines, words, os.clock() - t0 < 2
"""
    run = kernel.execute(code, timeout=TIMEOUT)
    assert run.result == "true\t38836\t194180\ttrue"


def test_the_lua_matcher_gives_the_c_matchers_results(cells):
    """Over the budget a pattern runs in the Lua port of Lua's matcher: with
    the budget at -1 every call does, and each of 3000 random patterns and
    subjects (captures, back-references, %b, %f, anchors, sets, every
    quantifier, malformed ones) gives what C gives, errors included."""
    rng = random.Random(21)
    pieces = [
        "a",
        "b",
        ".",
        "%a",
        "%d",
        "[ab]",
        "[^a]",
        "[a-c]",
        "%s",
        "(",
        ")",
        "()",
        "%1",
        "%b()",
        "%f[%a]",
        "^",
        "$",
        "x",
        "%%",
        "[%]]",
        "-",
    ]
    quantifiers = ["", "", "*", "+", "-", "?"]
    cases = []
    for _ in range(3000):
        pattern = "".join(
            rng.choice(pieces) + (rng.choice(quantifiers) if rng.random() < 0.5 else "")
            for _ in range(rng.randint(1, 5))
        )
        subject = "".join(rng.choice("aabbc1 ()x%]") for _ in range(rng.randint(0, 12)))
        init = rng.choice(["nil", "1", "2", "-3", "0", "20"])
        cases.append(f"{{[==[{subject}]==], [==[{pattern}]==], {init}, [==[{rng.choice(['<%0>', '%1', 'z'])}]==]}}")
    cells("CASES = {" + ",\n".join(cases) + "}")
    run_all = r"""
local out = {}
local function show(ok, ...)
  local t = {tostring(ok)}
  for i = 1, select("#", ...) do t[#t + 1] = tostring((select(i, ...))) end
  return table.concat(t, ",")
end
for _, c in ipairs(CASES) do
  local s, p, init, repl = c[1], c[2], c[3], c[4]
  out[#out + 1] = show(pcall(string.find, s, p, init)) .. "|" .. show(pcall(string.match, s, p, init))
    .. "|" .. show(pcall(function()
      local g = {}
      for a, b in string.gmatch(s, p, init) do g[#g + 1] = tostring(a) .. "/" .. tostring(b) end
      return table.concat(g, " ")
    end)) .. "|" .. show(pcall(string.gsub, s, p, repl))
end
return out
"""
    in_c = cells(run_all)[0]
    cells.runtime.K.set_pattern_budget(-1)
    in_lua = cells(run_all)[0]
    # errors may differ in the cell line they name (C's gmatch iterator names the `for`)
    at_line = re.compile(r"\[cell \d+\]:\d+: ")
    differ = [
        (cases[i], in_c[i], in_lua[i])
        for i in range(len(cases))
        if at_line.sub("", in_c[i]) != at_line.sub("", in_lua[i])
    ]
    assert len(in_c) == len(cases)
    assert differ == []


def test_a_replayed_step_bigger_than_the_memory_left_is_a_memory_error(tmp_path):
    """A recorded value comes back into Lua when its step replays: built by
    Python, it must fit under the cap before lupa starts on it."""
    import asyncio

    from conftest import RecordingHost

    from tactus_kernel.engine.errors import CellError
    from tactus_kernel.features import default_runtime

    rt = default_runtime(root=tmp_path, host=RecordingHost(), max_memory=48 * 2**20)
    code = """
procedure({name = "big"}, function()
  HOLD = HOLD_NEXT and string.rep("y", 30 * 2^20) or nil
  return {n = #Step.run("text", function() return string.rep("x", 20 * 2^20) end)}
end)"""
    assert asyncio.run(rt.execute(code, "[cell 1]", "big")) == [{"n": 20 * 2**20}]
    asyncio.run(rt.execute("HOLD_NEXT = true", "[cell 2]", "flag"))
    with pytest.raises(CellError) as info:
        asyncio.run(rt.execute(code, "[cell 3]", "big"))
    assert (info.value.ename, info.value.evalue) == (
        "LuaMemoryError",
        "the cell ran out of memory (limit 48 MiB); the kernel is still running",
    )
    assert asyncio.run(rt.execute("HOLD_NEXT = false return 1 + 1", "[cell 4]", "after")) == [2]


def test_json_encode_of_text_bigger_than_the_memory_left_is_a_memory_error(tmp_path):
    """The encoded text is copied into Lua too: 30 MB of text held, 30 MB
    more encoded, under a 48 MiB cap."""
    import asyncio

    from conftest import RecordingHost

    from tactus_kernel.engine.errors import CellError
    from tactus_kernel.features import default_runtime

    rt = default_runtime(root=tmp_path, host=RecordingHost(), max_memory=48 * 2**20)
    with pytest.raises(CellError) as info:
        asyncio.run(rt.execute("local s = string.rep('x', 30 * 2^20) local j = Json.encode({s}) return #j", "[cell 1]"))
    assert (info.value.ename, info.value.evalue) == (
        "LuaMemoryError",
        "the cell ran out of memory (limit 48 MiB); the kernel is still running",
    )
    assert asyncio.run(rt.execute("return Json.encode({1, 'a'})", "[cell 2]")) == ['[1,"a"]']
