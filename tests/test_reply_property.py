"""Property: no Lua value, however hostile, and no magic argument makes a
fault of the kernel (issue 21, "A cell gets no reply").

Hypothesis builds Lua values from scalars, nested tables with keys of
every type and metatables whose metamethods fail, yield, return the wrong
type or hide the metatable, and puts them where the kernel reads them in
Python: a cell's result, every option of every Human.* call, a log
context, a recorded step. ``Runtime.execute`` must end each cell with a
result or a CellError named for the cell's own mistake, never an
InternalError and never any other exception. On a real kernel, random
magic arguments and values get one reply each.
"""

from __future__ import annotations

import asyncio
import itertools
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_driver import KernelDriver

from tactus_kernel.engine.errors import KNOWN, CellError
from tactus_kernel.engine.host import BaseHost
from tactus_kernel.engine.runtime import Runtime
from tactus_kernel.features import default_runtime

SCALARS = [
    "nil",
    "true",
    "false",
    "0",
    "-1",
    "1.5",
    "2^63",
    "math.maxinteger",
    "math.mininteger",
    "1e308",
    "0/0",
    "math.huge",
    "-math.huge",
    '""',
    '"x"',
    '"\\xff"',
    '"a\\0b"',
    '"ParamError: x"',
    "print",
    "coroutine.create(print)",
    "coroutine.running()",
]
# metamethods as a cell may write them: failing, yielding, looping back,
# returning what Lua does not expect
METHODS = [
    "function() error('boom') end",
    "function() error({}) end",
    "function() return {} end",
    "function() return coroutine.yield() end",
    "function() return nil end",
    "function() return 1 end",
    "function(t) return t end",
    "function() return '\\xff' end",
]
FIELDS = [
    "__tostring",
    "__index",
    "__newindex",
    "__pairs",
    "__len",
    "__eq",
    "__lt",
    "__le",
    "__concat",
    "__call",
    "__close",
    "__name",
    "__metatable",
    "__mode",
]


def _table(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    key = st.one_of(st.sampled_from(['"k"', "1", "2", "1.5", "true", '"\\xff"', "print"]), children)
    entry = st.builds(lambda k, v: f"[{k}] = {v}", key, children)
    plain = st.lists(st.one_of(children, entry), max_size=4).map(lambda xs: "{" + ", ".join(xs) + "}")
    meta = st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(st.sampled_from(METHODS), st.sampled_from(SCALARS), st.just('"k"')),
        max_size=3,
    )
    hostile = st.builds(
        lambda t, m: "setmetatable(" + t + ", {" + ", ".join(f"{k} = {v}" for k, v in m.items()) + "})", plain, meta
    )
    # a key whose __tostring misbehaves: the usual way Python meets cell code
    bad_key = st.builds(
        lambda m, v: f"{{[setmetatable({{}}, {{__tostring = {m}}})] = {v}}}", st.sampled_from(METHODS), children
    )
    return st.one_of(plain, hostile, bad_key)


values = st.recursive(st.sampled_from(SCALARS), _table, max_leaves=10)

PLACES = [
    "return {v}",
    "return {v}, {v}",
    "Human.approve({v})",
    "Human.approve({{message = {v}}})",
    "Human.approve('m', {v})",
    "Human.approve({{message = 'm', timeout = {v}, context = {v}, default = {v}, on_timeout = {v}}})",
    "Human.input({{message = 'm', options = {v}, placeholder = {v}, multiline = {v}, default = {v}}})",
    "Human.review({{message = 'm', artifact = {v}, artifact_type = {v}, options = {v}}})",
    "Human.escalate({{message = 'm', context = {v}, severity = {v}}})",
    "Human.notify({v})",
    "Human.notify({{message = {v}, level = {v}, context = {v}}})",
    "System.alert({{message = 'm', level = 'info', source = {v}, context = {v}}})",
    "Log.info({v}, {v})",
    "print({v})",
    "return Json.encode({v})",
    "return Step.run('s', function() return {v} end)",
    "procedure({{name = 'p', params = {v}, outputs = {v}, hitl = {v}}}, function() return {v} end)",
    "return Procedure.run('declared', {v})",
]
# the names a cell's own mistakes are reported under (InternalError excluded)
CELL_ERRORS = (KNOWN | {"LuaError", "UsageError"}) - {"InternalError"}


class AnsweringHost(BaseHost):
    """A host where a person answers every request at once."""

    ANSWERS: dict[str, Any] = {"approve": True, "input": "text", "review": {"decision": "Approve"}, "escalate": True}

    def write(self, stream: str, text: str) -> None:
        pass

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        pass

    def records_changed(self) -> None:
        pass

    async def ask_human(self, req: Any) -> Any:
        return self.ANSWERS[req.request]

    def notice(self, notice: dict[str, Any]) -> None:
        pass


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Any]]:
    rt = default_runtime(root=tmp_path_factory.mktemp("values"), host=AnsweringHost(), max_memory=64 * 2**20)
    keys = itertools.count()
    asyncio.run(
        rt.execute(
            "procedure({name = 'declared', params = {n = {type = 'integer'}}}, function() end)", "[setup]", "setup"
        )
    )
    yield rt, keys


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(place=st.sampled_from(PLACES), value=values)
def test_no_lua_value_makes_a_fault_of_the_kernel(runtime: tuple[Runtime, Any], place: str, value: str) -> None:
    rt, keys = runtime
    code = place.format(v=value)
    try:
        asyncio.run(rt.execute(code, "[cell]", f"cell-{next(keys)}"))
    except CellError as err:
        assert err.ename in CELL_ERRORS, f"{code}\n{err}"
        assert isinstance(err.evalue, str) and err.evalue and all(isinstance(t, str) for t in err.traceback)
    assert asyncio.run(rt.execute("return 1 + 1", "[check]", "check")) == [2]


# ------------------------------------------------------- on a real kernel
@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelDriver]:
    driver = KernelDriver(tmp_path_factory.mktemp("magics"))
    try:
        driver.open_tactus(None, replay=True)  # batch mode: a request with no answer fails at once
        assert (
            driver.execute("procedure({name = 'P', params = {n = {type = 'integer'}}}, function() end)").status == "ok"
        )
        yield driver
    finally:
        driver.shutdown()


words = st.one_of(
    st.text(alphabet=string.printable, max_size=12),
    st.sampled_from(
        [
            "P",
            "n=1",
            "n=1e400",
            "n=NaN",
            "n=123456789012345678901234567890",
            "n=[[[[1]]]]",
            "n=" + "[" * 3000 + "]" * 3000,
            "--json",
            "--runs",
            "-1",
            "'",
            '"',
            "x=",
            "=",
            "\\",
        ]
    ),
)
MAGICS = ["run", "answer", "show", "reset", "log", "test", "divergence", "records", "help", "nonsense"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(command=st.sampled_from(MAGICS), args=st.lists(words, max_size=3), value=values)
def test_every_magic_and_value_gets_one_reply(kernel: KernelDriver, command: str, args: list[str], value: str) -> None:
    for code in (
        f"%tactus {command} " + " ".join(args),
        f"return {value}",
        f"Human.notify({{message = 'm', context = {value}}})",
    ):
        run = kernel.execute(code, timeout=30)
        assert run.reply is not None, code
        if run.status == "error":
            assert len(run.errors) == 1 and run.errors[0]["ename"] in CELL_ERRORS, f"{code}\n{run.errors}"
