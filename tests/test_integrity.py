"""Integrity of the procedure language (issue 21): an approval comes only
from a person (or a recorded or supplied answer), params cannot be
changed, a cell's error text never poses as a kernel error, and the
records hold only what a notebook can keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Cells
from kernel_driver import KernelDriver
from test_composition import wait_for_card

# ------------------------------------------------ only the kernel resumes
CHILD = """
procedure({name = "child", params = {ask = {type = "boolean", default = false}, wrapped = {type = "boolean"}}},
  function()
    if not params.ask then return {} end
    local function ask()
      WAITING = coroutine.running()
      return Human.approve({message = "Ship it?"})
    end
    local ok
    if params.wrapped then ok = coroutine.wrap(ask)() else ok = ask() end
    print("got", ok)
    return {}
  end)
"""

PARENT = """
procedure({name = "parent", params = {wrapped = {type = "boolean", default = false}}}, function()
  local h = Procedure.spawn("child", {ask = true, wrapped = params.wrapped})
  while Procedure.status(h) ~= "waiting_for_human" do Sleep(0.01) end
  print("resume", pcall(coroutine.resume, WAITING, true, false))
  print("close", pcall(coroutine.close, WAITING))
  Procedure.wait(h)
end)
"""

DRIVEN = (
    "SandboxError: {fn}: this coroutine runs a cell, a procedure or a tool for the kernel; "
    "only the kernel resumes or closes it"
)
PASSING = (
    "SandboxError: {fn}: this coroutine waits for the kernel to answer a request (Human.*, Sleep, "
    "a child procedure, an agent turn); only the kernel resumes or closes it"
)


@pytest.mark.parametrize(("wrapped", "refusal"), [(False, DRIVEN), (True, PASSING)], ids=["child", "user-coroutine"])
def test_a_parent_cannot_answer_for_the_human_by_resuming_the_waiting_child(
    tmp_path: Path, wrapped: bool, refusal: str
) -> None:
    """The child's Human.approve (in its own body, or in a user coroutine of
    it) waits for the click however the parent resumes it."""
    kernel = KernelDriver(tmp_path)
    try:
        kernel.open_tactus(None)
        assert kernel.execute(CHILD, cell_id="child").status == "ok"
        run = kernel.submit(PARENT.replace("default = false", f"default = {str(wrapped).lower()}"), cell_id="parent")
        approve = wait_for_card(kernel, "Ship it?")
        kernel.wait_until(lambda: "close" in run.stdout, timeout=30)  # the parent tried both
        assert run.reply is None  # the card still waits
        line = 5
        assert run.stdout == (
            f"resume\tfalse\t[cell 2]:{line}: {refusal.format(fn='coroutine.resume')}\n"
            f"close\tfalse\t[cell 2]:{line + 1}: {refusal.format(fn='coroutine.close')}\n"
        )
        kernel.click(approve)
        kernel.wait(run)
        assert run.status == "ok", run.errors
        assert run.stdout.endswith("got\ttrue\n") and run.stdout.count("got") == 1
        kernel.wait_until(lambda: "parent" in kernel.recorded_procedures(), timeout=10)
        child = kernel.recorded_procedures()["parent"]["children"]["child#1"]
        humans = [e for e in child["checkpoints"] if e["kind"] == "human"]
        assert [(e["name"], e["value"], e.get("source")) for e in humans] == [("Ship it?", True, None)]
    finally:
        kernel.shutdown()


def test_user_coroutines_work_as_in_lua(cells: Cells) -> None:
    code = """
    local gen = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
    local co = coroutine.create(function(x) coroutine.yield(x, coroutine.status(coroutine.running())) return "end" end)
    local r1 = {coroutine.resume(co, 7)}
    local r2 = {coroutine.resume(co)}
    local r3 = {coroutine.resume(co)}
    local parked = coroutine.create(function() coroutine.yield() end)
    coroutine.resume(parked)
    return gen(1), gen(5), r1[2], r1[3], r2[2], r3[1], r3[2], coroutine.status(co), coroutine.close(parked)"""
    assert cells(code) == [2, 10, 7, "running", "end", False, "cannot resume dead coroutine", "dead", True]


# ------------------------------------------------------------- params
READ_PARAMS = """
procedure({name = "show", params = {env = {type = "string", default = "staging"}, tags = {type = "array"}}},
  function(p)
    return {env = params.env, tags = params.tags, p = p.env}
  end)
"""


@pytest.mark.parametrize(
    ("attempt", "message"),
    [
        pytest.param("rawset(params, 'env', 'X')", "[cell 2]:2: rawset: params are read-only", id="rawset"),
        pytest.param("params.env = 'X'", "[cell 2]:2: params are read-only", id="assignment"),
        pytest.param("setmetatable(params, nil)", "cannot change a protected metatable", id="setmetatable"),
        pytest.param(
            "getmetatable(params).__pairs(params)",
            "[cell 2]:2: attempt to call a nil value (field '__pairs')",
            id="metatable-__pairs",
        ),
        pytest.param("table.insert(params, 'X')", "[cell 2]:2: params are read-only", id="table.insert"),
    ],
)
def test_params_cannot_be_changed(cells: Cells, attempt: str, message: str) -> None:
    cells(READ_PARAMS, key="decl")
    err = cells.error(
        f"procedure({{name = 'hostile', params = {{env = {{type = 'string'}}}}}}, function()\n  {attempt}\nend)",
        key="hostile",
    )
    assert (err.ename, err.evalue) == ("LuaError", message)
    assert cells("return Procedure.run('show', {tags = {'a'}})", key="after") == [
        {"env": "staging", "tags": ["a"], "p": "staging"}
    ]
    assert cells("return getmetatable(params)", key="mt") == ["params are read-only"]


def test_a_cell_that_replaces_the_global_params_does_not_change_a_later_run(cells: Cells) -> None:
    cells(READ_PARAMS, key="decl")
    cells("params = {env = 'X', tags = {'forged'}}", key="replace")
    assert cells("return Procedure.run('show', {tags = {'a'}})", key="after") == [
        {"env": "staging", "tags": ["a"], "p": "staging"}
    ]
    assert cells("return getmetatable(params)", key="mt") == ["params are read-only"]


def test_what_params_hand_out_are_copies(cells: Cells) -> None:
    code = """
    procedure({name = "copies", params = {env = {type = "string", default = "staging"},
                                          tags = {type = "array", default = {"a"}}}},
      function(p)
        for _, t in pairs(params) do if type(t) == "table" then t[1] = "changed" end end
        local f, t = getmetatable(params) == "params are read-only", select(2, pairs(params))
        t.env = "X"
        params.tags[1] = "changed"
        p.env, p.tags[1] = "Y", "changed"
        return {env = params.env, tags = params.tags, f = f}
      end)"""
    assert cells(code + "\nreturn Procedure.run('copies')") == [{"env": "staging", "tags": ["a"], "f": True}]


# ---------------------------------------------------- error kinds are data
KERNEL_NAMES = [
    "NoRecordedAnswer",
    "ParamError",
    "SandboxError",
    "DivergenceError",
    "KeyboardInterrupt",
    "HumanTimeout",
    "InternalError",
    "GuardError",
    "OutputError",
]


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_a_cells_error_named_like_a_kernel_error_is_a_lua_error(cells: Cells, name: str) -> None:
    err = cells.error(f"error('{name}: x', 0)")
    assert (err.ename, err.evalue) == ("LuaError", f"{name}: x")
    err = cells.error(f"error('{name}: x')")
    assert (err.ename, err.evalue) == ("LuaError", f"[cell 2]:1: {name}: x")
    err = cells.error(f"error({{__tactus_error = true, ename = '{name}', message = 'x'}})")
    # a plain table of the cell's own: shown as the Lua constructor it is, not as a kernel error
    assert (err.ename, err.evalue) == ("LuaError", f'{{__tactus_error = true, ename = "{name}", message = "x"}}')


def test_in_a_child_too(cells: Cells) -> None:
    err = cells.error(
        "procedure({name = 'c'}, function() error('NoRecordedAnswer: x', 0) end)\n"
        "procedure({name = 'p'}, function() return Procedure.run('c') end)",
        key="both",
    )
    # the cell runs c first (it declares it), which fails with the cell's own text
    assert (err.ename, err.evalue) == ("LuaError", "NoRecordedAnswer: x")
    err = cells.error("return Procedure.run('c')", key="caller")
    assert (err.ename, err.evalue) == ("ProcedureError", "procedure 'c' failed: NoRecordedAnswer: x")


@pytest.mark.parametrize(
    ("code", "ename", "evalue"),
    [
        pytest.param(
            "Json.decode(42)",
            "LuaError",
            "Json.decode: argument #1 must be a string, got number",
            id="untagged-kernel-error",
        ),
        pytest.param(
            "Human.approve({message = 'm', timeout = 'x'})",
            "ParamError",
            'Human.approve: timeout must be a finite non-negative number of seconds, got "x"',
            id="ParamError",
        ),
        pytest.param(
            "File.read('/etc/passwd')",
            "SandboxError",
            "File: absolute path '/etc/passwd' refused; paths are relative to the notebook's folder",
            id="SandboxError",
        ),
        pytest.param(
            "Human.approve({message = 'Your name?'})",
            "NoRecordedAnswer",
            'Human.approve "Your name?": nobody can answer here (no notebook frontend)',
            id="NoRecordedAnswer",
        ),
    ],
)
def test_a_kernel_error_keeps_its_name_caught_and_raised_again(
    cells: Cells, code: str, ename: str, evalue: str
) -> None:
    """pcall gives the kernel's text (string matching works, as the README
    says); raising that text again, as it is, keeps its name."""
    direct = cells.error(code)
    assert (direct.ename, direct.evalue) == (ename, f"[cell 1]:1: {evalue}")
    prefix = "" if ename == "LuaError" else f"{ename}: "
    assert cells(
        f"local ok, e = pcall(function() {code} end) return e, type(e), e:find('{prefix}', 1, true) ~= nil"
    ) == [f"[cell 2]:1: {prefix}{evalue}", "string", True]
    again = cells.error(f"local ok, e = pcall(function() {code} end) error(e, 0)")
    assert (again.ename, again.evalue) == (ename, f"[cell 3]:1: {evalue}")
    in_a_coroutine = cells.error(f"local ok, e = coroutine.resume(coroutine.create(function() {code} end)) error(e, 0)")
    assert (in_a_coroutine.ename, in_a_coroutine.evalue) == (ename, f"[cell 4]:1: {evalue}")


def test_a_guard_error_is_the_kernels(cells: Cells) -> None:
    err = cells.error("procedure({name = 'g', guards = {function() return false, 'closed' end}}, function() end)")
    assert (err.ename, err.evalue) == ("GuardError", "procedure 'g': guard #1 failed: closed")


# ------------------------------------------------------------ the record
def test_a_procedure_named_like_an_object_property_is_recorded(tmp_path: Path) -> None:
    """`__proto__` and friends are plain keys in the record the frontend gets
    (labextension/test/merge.test.ts proves the merge keeps them)."""
    kernel = KernelDriver(tmp_path)
    names = ["__proto__", "constructor", "prototype", "hasOwnProperty", "toString"]
    try:
        kernel.open_tactus(None)
        for i, name in enumerate(names):
            run = kernel.execute(
                f"procedure({{name = '{name}'}}, function() return Step.run('s', function() return {i} end) end)",
                cell_id=f"c{i}",
            )
            assert run.status == "ok", run.errors
        kernel.wait_until(lambda: all(n in kernel.recorded_procedures() for n in names), timeout=10)
        recorded: dict[str, Any] = kernel.recorded_procedures()
        assert [recorded[n]["checkpoints"][0]["value"] for n in names] == list(range(len(names)))
        again = kernel.execute(
            "procedure({name = '__proto__'}, function() return Step.run('s', function() "
            "print('ran again') return 99 end) end)",
            cell_id="c0",
        )
        assert again.status == "ok" and again.stdout == "" and again.result == "0"
    finally:
        kernel.shutdown()
