"""How a failed cell reads: a table error value as a Lua constructor, and a
traceback of cell lines and the library calls they made, never the kernel's
own frames (its preludes, the raw_xpcall that runs a procedure body, the
driver's coroutine.yield)."""

from __future__ import annotations

import pytest

from tactus_kernel.engine.errors import clean_traceback


def lines(err) -> list[str]:
    return [line.replace("\t", "    ") for line in err.traceback]


def test_a_table_error_value_shows_as_a_lua_constructor(cells):
    err = cells.error("error({code = 42})")
    assert (err.ename, err.evalue) == ("LuaError", "{code = 42}")
    assert lines(err) == ["LuaError: {code = 42}", "stack traceback:", "    [cell 1]:1: in main chunk"]


def test_a_table_raised_in_a_procedure_body_and_a_step(cells):
    err = cells.error("""procedure({name = "ship"}, function()
  Step.run("build", function()
    Sleep(0.001)
    error({reason = "late", tries = {1, 2}})
  end)
end)""")
    assert lines(err) == [
        'LuaError: {reason = "late", tries = {1, 2}}',
        "stack traceback:",
        "    [cell 1]:4: in local 'fn'",
        "    [cell 1]:2: in function <[cell 1]:1>",
    ]


@pytest.mark.parametrize(
    ("raised", "shown"),
    [
        # a hostile metatable runs nothing: the fields are read raw
        (
            'setmetatable({a = 1}, {__index = function() error("idx") end, __pairs = function() error("pairs") end, '
            '__metatable = "locked", __name = "Thing"})',
            "{a = 1}",
        ),
        # a __tostring of its own says what the error is
        ('setmetatable({}, {__tostring = function() return "custom" end})', "custom"),
        ('setmetatable({}, {__tostring = function() error("broken") end})', "(error object without a message)"),
        ('{"\\xff", f = print}', None),  # text that is not UTF-8, a function: shown, not failed
        ("{}", "{}"),
        ('{[1] = "a", [3] = "c"}', '{[1] = "a", [3] = "c"}'),
    ],
)
def test_table_error_values_are_shown_safely(cells, raised, shown):
    err = cells.error(f"error({raised})")
    assert err.ename == "LuaError"
    if shown is not None:
        assert err.evalue == shown
    else:
        assert err.evalue.startswith('{[1] = "\ufffd", f = function: 0x') and err.evalue.endswith("}")
    assert cells("1 + 1") == [2]  # the kernel goes on


def test_a_table_too_large_or_cyclic_keeps_its_address(cells):
    for code in ("local big = {} for i = 1, 5000 do big[i] = i end error(big)", "local t = {} t.me = t error(t)"):
        err = cells.error(code)
        assert err.ename == "LuaError" and err.evalue.startswith("table: 0x"), err.evalue


def test_a_procedure_traceback_has_no_kernel_frames(cells):
    err = cells.error("""local function check(x)
  if x > 1 then error("too big: " .. x) end
end
procedure({name = "p"}, function()
  Step.run("a", function() check(2) end)
end)""")
    assert lines(err) == [
        "LuaError: [cell 1]:2: too big: 2",
        "stack traceback:",
        "    [cell 1]:2: in upvalue 'check'",
        "    [cell 1]:5: in local 'fn'",
        "    [cell 1]:5: in function <[cell 1]:4>",
    ]


def test_a_library_call_the_user_made_stays(cells):
    err = cells.error('procedure({name = "q"}, function()\n  return table.concat({{}})\nend)')
    assert lines(err) == [
        "LuaError: [cell 1]:2: invalid value (table) at index 1 in table for 'concat'",
        "stack traceback:",
        "    [C]: in function 'table.concat'",
        "    [cell 1]:2: in function <[cell 1]:1>",
    ]


def test_a_multi_line_message_is_not_repeated_in_the_traceback(cells):
    cells("Sleep(0.001)", key="k")
    err = cells.error('Step.run("z", function() return 1 end)', key="k")
    assert err.ename == "DivergenceError"
    assert lines(err) == [
        "DivergenceError: [cell 2]:1: replay diverged in procedure 'k' at checkpoint #1:\n"
        "  recorded: sleep 'sleep 0.001s'\n"
        "  now:      step 'z'\n"
        "Run `%tactus reset k` to record it afresh, or restore the code that made the record.",
        "stack traceback:",
        "    [cell 2]:1: in main chunk",
    ]


def test_c_frames_belong_to_their_caller():
    tb = "\n".join(
        [
            "stack traceback:",
            "\t[C]: in function 'coroutine.yield'",
            "\t[tactus sandbox]:292: in function <[tactus sandbox]:291>",
            "\t(...tail calls...)",
            "\t[C]: in function 'string.rep'",
            "\t[cell 4]:3: in upvalue 'pad'",
            "\t[cell 4]:5: in function <[cell 4]:4>",
            "\t(...tail calls...)",
            "\t[C]: in upvalue 'raw_xpcall'",
            "\t[tactus sandbox]:490: in function 'xpcall'",
            "\t[tactus primitives]:337: in function <[tactus primitives]:325>",
            "\t(...tail calls...)",
            "\t[C]: in ?",
        ]
    )
    assert clean_traceback(tb) == [
        "stack traceback:",
        "\t[C]: in function 'string.rep'",
        "\t[cell 4]:3: in upvalue 'pad'",
        "\t[cell 4]:5: in function <[cell 4]:4>",
    ]


def test_kernel_error_reply_reads_as_the_cell_wrote_it(kernel):
    run = kernel.execute('procedure({name = "deploy"}, function()\n  error({code = 42, why = "no quota"})\nend)')
    assert run.status == "error"
    [error] = run.errors
    assert (error["ename"], error["evalue"]) == ("LuaError", '{code = 42, why = "no quota"}')
    assert error["traceback"] == [
        'LuaError: {code = 42, why = "no quota"}',
        "stack traceback:",
        "\t[cell 1]:2: in function <[cell 1]:1>",
    ]
    assert kernel.execute("1 + 1").result == "2"
