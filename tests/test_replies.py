"""Every cell gets exactly one reply, on a real kernel (issue 21).

Each case used to let a Python exception escape ``do_execute``: the
frontend never got an ``execute_reply`` and showed the cell running for
ever. Each now ends in one clear error (or a correct result), the kernel
answers the next cell, and a fault of the kernel itself (injected by
tests/faulty_kernel.py) is one ``InternalError`` reply whose Python
traceback stays in the kernel's log.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_driver import CellRun, KernelDriver

HERE = Path(__file__).parent
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelDriver]:
    """One kernel for the cases whose state does not matter."""
    driver = KernelDriver(tmp_path_factory.mktemp("replies"))
    try:
        yield driver
    finally:
        driver.shutdown()


def one_reply(kernel: KernelDriver, code: str) -> CellRun:
    """Run a cell; it must get its reply, at most one error output, and
    leave the kernel answering the next cell."""
    run = kernel.execute(code, timeout=60)
    assert run.reply is not None
    assert len(run.errors) == (1 if run.status == "error" else 0), run.errors
    assert kernel.execute("1 + 1").result == "2"
    return run


def error_of(run: CellRun) -> tuple[str, str]:
    assert run.status == "error", run.messages
    reply = run.reply["content"]  # type: ignore[index]
    assert (reply["ename"], reply["evalue"]) == (run.errors[0]["ename"], run.errors[0]["evalue"])
    return reply["ename"], reply["evalue"]


def cell(run: CellRun) -> str:
    return f"[cell {run.reply['content']['execution_count']}]"  # type: ignore[index]


# ------------------------------------------------- a shown key's __tostring
@pytest.mark.parametrize(
    "tostring",
    [
        pytest.param("function() error('boom') end", id="errors"),
        pytest.param("function() return {} end", id="returns-a-table"),
        pytest.param("function() return coroutine.yield() end", id="yields"),
    ],
)
def test_a_shown_key_whose_tostring_fails_shows_as_a_plain_table(shared: KernelDriver, tostring: str) -> None:
    run = one_reply(shared, f"return {{[setmetatable({{}}, {{__tostring = {tostring}}})] = 1}}")
    assert run.status == "ok", run.errors
    assert re.fullmatch(r"\{\[table: 0x[0-9a-f]+\] = 1\}", run.result or ""), run.result


def test_a_shown_key_whose_tostring_loops_is_stopped_by_interrupt(tmp_path: Path) -> None:
    kernel = KernelDriver(tmp_path)
    try:
        run = kernel.submit(
            'Human.notify("looping")\nreturn {[setmetatable({}, {__tostring = function() while true do end end})] = 1}'
        )
        kernel.wait_until(lambda: bool(run.of_type("display_data")), timeout=30)  # the loop is next
        kernel.interrupt()
        kernel.wait(run, timeout=10)
        assert error_of(run) == ("KeyboardInterrupt", f"interrupted by the user at {cell(run)}:2")
        assert kernel.kc.kernel_info(reply=True, timeout=2)["content"]["status"] == "ok"
        assert kernel.execute("1 + 1").result == "2"
    finally:
        kernel.shutdown()


# ------------------------------------------------------- Human.* options
TIMEOUT = "Human.approve: timeout must be a finite non-negative number of seconds, got "


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("'abc'", '"abc"', id="text"),
        pytest.param("0/0", "NaN", id="nan"),
        pytest.param("math.huge", "Infinity", id="infinity"),
        pytest.param("-1", "-1", id="negative"),
        pytest.param("{}", "{}", id="table"),
        pytest.param("true", "true", id="boolean"),
    ],
)
def test_a_bad_human_timeout_is_a_param_error(shared: KernelDriver, value: str, shown: str) -> None:
    run = one_reply(shared, f"Human.approve({{message = 'm', timeout = {value}}})")
    assert error_of(run) == ("ParamError", f"{cell(run)}:1: {TIMEOUT}{shown}")


def test_a_bad_timeout_is_catchable_by_pcall(shared: KernelDriver) -> None:
    run = one_reply(shared, "return select(2, pcall(Human.approve, {message = 'm', timeout = 'abc'}))")
    assert run.result == f'{cell(run)}:1: ParamError: {TIMEOUT}"abc"'


HOSTILE_KEY = [
    pytest.param("function() error('boom') end", id="erroring-tostring"),
    pytest.param("function() return coroutine.yield() end", id="yielding-tostring"),
    pytest.param("function() return {} end", id="tostring-returning-a-table"),
]


@pytest.mark.parametrize("tostring", HOSTILE_KEY)
def test_a_context_key_with_a_hostile_tostring_in_approve(tmp_path: Path, tostring: str) -> None:
    """The card shows and waits; the key shows as <table>; a click answers."""
    from test_composition import wait_for_card

    kernel = KernelDriver(tmp_path)
    try:
        run = kernel.submit(
            f"local k = setmetatable({{}}, {{__tostring = {tostring}}})\n"
            "print(Human.approve({message = 'Ship it?', context = {[k] = 1, env = 'prod'}}))"
        )
        kernel.click(wait_for_card(kernel, "Ship it?"))
        kernel.wait(run)
        assert run.status == "ok", run.errors
        assert run.stdout == "true\tfalse\n"
    finally:
        kernel.shutdown()


@pytest.mark.parametrize("tostring", HOSTILE_KEY)
def test_a_context_key_with_a_hostile_tostring_in_notify(shared: KernelDriver, tostring: str) -> None:
    run = one_reply(
        shared,
        f"local k = setmetatable({{}}, {{__tostring = {tostring}}})\n"
        "Human.notify({message = 'Deployed', context = {[k] = 1}})\nprint('went on')",
    )
    assert run.status == "ok", run.errors
    assert run.stdout == "went on\n"
    assert [m["content"]["data"]["text/plain"] for m in run.of_type("display_data")] == [
        '[Notice · info] Deployed {"<table>": 1}'
    ]


# ------------------------------------------------------------------ magics
def test_answer_with_json_nested_100000_deep_is_a_param_error(shared: KernelDriver) -> None:
    run = one_reply(shared, f"%tactus answer x {DEEP}")
    assert error_of(run) == ("ParamError", "%tactus answer x: value is nested more than 100 levels deep")


def test_run_with_a_30_digit_integer_is_a_param_error(shared: KernelDriver) -> None:
    assert shared.execute('procedure({name = "P", params = {n = {type = "integer"}}}, function() end)').status == "ok"
    run = one_reply(shared, "%tactus run P n=123456789012345678901234567890")
    assert error_of(run) == (
        "ParamError",
        "param 'n': value is 123456789012345678901234567890, an integer too large for Lua (beyond 64 bits)",
    )
    run = one_reply(shared, "%tactus run P n=NaN")
    assert error_of(run) == ("ParamError", "param 'n': value is nan (JSON has no NaN or infinity)")
    run = one_reply(shared, "%tactus run P n=ten")  # not JSON: a string, which the declaration refuses
    assert error_of(run) == ("ParamError", "procedure 'P': param 'n' must be integer, got string 'ten'")


# --------------------------------------------------- error kinds are data
def test_a_cells_error_text_never_poses_as_a_kernel_error(shared: KernelDriver) -> None:
    run = one_reply(shared, "error('NoRecordedAnswer: x', 0)")
    assert error_of(run) == ("LuaError", "NoRecordedAnswer: x")
    run = one_reply(shared, "error('KeyboardInterrupt: interrupted by the user', 0)")
    assert error_of(run) == ("LuaError", "KeyboardInterrupt: interrupted by the user")
    run = one_reply(shared, "error({__tactus_error = true, ename = 'NoRecordedAnswer', message = 'x'})")
    assert error_of(run)[0] == "LuaError"


def test_a_kernel_error_keeps_its_name_through_pcall_and_error(shared: KernelDriver) -> None:
    run = one_reply(
        shared,
        "local ok, e = pcall(Human.approve, {message = 'm', timeout = -1})\n"
        "assert(e:match('ParamError: '))\nerror(e, 0)",
    )
    assert error_of(run) == ("ParamError", f"{cell(run)}:1: {TIMEOUT}-1")


# ------------------------------------------------------ a fault of the kernel
FAULTS = [
    "ValueError",
    "TypeError",
    "KeyError",
    "AttributeError",
    "RuntimeError",
    "RecursionError",
    "OverflowError",
    "UnicodeDecodeError",
    "ZeroDivisionError",
    "OSError",
    "MemoryError",
    "LuaError",
    "AssertionError",
]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KernelDriver, Path]]:
    """A kernel whose runtime raises what a cell asks for (tests/faulty_kernel.py)."""
    base = tmp_path_factory.mktemp("faulty")
    spec = base / "kernels" / "tactus-faulty"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, str(HERE / "faulty_kernel.py"), "-f", "{connection_file}"],
                "display_name": "Tactus (faulty)",
                "language": "lua",
            }
        )
    )
    log = base / "kernel.log"
    with pytest.MonkeyPatch.context() as mp, log.open("w") as stderr:
        mp.setenv("JUPYTER_PATH", str(base))
        driver = KernelDriver(base, kernel_name="tactus-faulty", stderr=stderr)
        try:
            yield driver, log
        finally:
            driver.shutdown()


@pytest.mark.parametrize("magic", [False, True], ids=["cell", "magic"])
@pytest.mark.parametrize("fault", FAULTS)
def test_no_exception_type_escapes_do_execute(faulty: tuple[KernelDriver, Path], fault: str, magic: bool) -> None:
    kernel, log = faulty
    run = one_reply(kernel, f"%tactus raise {fault}" if magic else f"raise {fault}")
    ename, evalue = error_of(run)
    assert ename == "InternalError"
    assert re.fullmatch(
        rf"\[cell \d+\]: the kernel failed \({fault}(: .+)?\); the kernel is still running and keeps its checkpoints",
        evalue,
    ), evalue
    assert run.errors[0]["traceback"] == [f"InternalError: {evalue}"]  # no Python traceback in the notebook
    logged = f"Tactus: internal error in {cell(run)}\nTraceback (most recent call last):"
    kernel.wait_until(lambda: logged in log.read_text(), timeout=10)


def test_a_keyboard_interrupt_raised_in_python_is_a_keyboard_interrupt_reply(faulty: tuple[KernelDriver, Path]) -> None:
    kernel, _ = faulty
    run = one_reply(kernel, "%tactus raise KeyboardInterrupt")
    assert error_of(run) == ("KeyboardInterrupt", "interrupted by the user")
