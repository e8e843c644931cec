"""Shift-Tab inside a call shows the called primitive's signature and doc,
wherever the cursor is in its argument list, as Python kernels do."""

from __future__ import annotations

import pytest

from tactus_kernel.jupyter.completion import DOCS, call_at, inspect

# every primitive with a doc that is called: "name(" starts its doc
CALLABLE = sorted(name for name, doc in DOCS.items() if doc.startswith(name + "("))


def shown(cells, code: str, cursor: int | None = None) -> str | None:
    reply = inspect(cells.runtime, code, len(code) if cursor is None else cursor)
    return reply["data"]["text/plain"] if reply["found"] else None


def test_every_callable_primitive_is_covered():
    assert len(CALLABLE) == 64 and "Human.approve" in CALLABLE and "Step.run" in CALLABLE
    assert set(DOCS) - set(CALLABLE) == {"params"}


@pytest.mark.parametrize("name", CALLABLE)
def test_inside_each_primitive_call_its_doc_shows(cells, name):
    doc = DOCS[name]
    for code in (
        f"{name}(",
        f"local x = {name}({{message = ",
        f'{name}("first", {{\n  -- a comment with a ( in it\n  note = "a ) in a string",\n  ',
        f"{name}(1, [[a long\nstring with ) and (]], ",
        f"{name} (  ",
        f"{name}{{message = ",
    ):
        assert shown(cells, code) == doc, code


@pytest.mark.parametrize(
    ("code", "callee"),
    [
        ('Human.approve({message = "Ship?", context = {env = ', "Human.approve"),
        ('Step.run("build", function()\n  local n = 1\n  ', "Step.run"),
        ('Step.run("build", function()\n  return Human.input({message = ', "Human.input"),
        ('Human.approve({message = "x"}) ', None),  # closed: no call is open
        ('Step.run("x", function() -- Human.approve(\n  ', "Step.run"),  # a comment opens nothing
        ("Log.info('(' .. ", "Log.info"),
        ("Log.info([==[ ( ]==] .. ", "Log.info"),
        ("if (x ", None),  # parentheses, not a call
        ("local t = {a = ", None),  # a table constructor is not a call
        ("thing:method(1, ", "thing.method"),
    ],
)
def test_the_innermost_open_call(code, callee):
    assert call_at(code, len(code)) == callee


def test_the_cursor_anywhere_in_the_argument_list(cells):
    code = 'Human.approve({message = "Ship it?", timeout = 60})'
    doc = DOCS["Human.approve"]
    for cursor in (len("Human.approve("), code.index("Ship"), code.index("timeout") - 1, len(code) - 1):
        assert shown(cells, code, cursor) == doc, cursor
    assert shown(cells, code, len(code)) is None  # after the closing parenthesis


def test_a_name_at_the_cursor_wins_over_the_call(cells):
    cells("my_limit = 5")
    assert shown(cells, "Step.run(my_limit", len("Step.run(my_l")) == "my_limit: number = 5"
    assert shown(cells, "Step.run(Sleep", len("Step.run(Sle")) == DOCS["Sleep"]
    # a call of a function with no doc says what it is
    cells("function my_helper(a, b) return a end")
    assert shown(cells, "my_helper(1, ") == "my_helper: function"


def test_kernel_shift_tab_inside_calls(kernel):
    for code, name in [
        ("Human.approve(", "Human.approve"),
        ("Human.approve({message = ", "Human.approve"),
        ('Step.run("fetch", function()\n  local rows = 1\n  ', "Step.run"),
    ]:
        reply = kernel.kc.inspect(code, len(code), reply=True)["content"]
        assert reply["status"] == "ok" and reply["found"] is True, code
        assert reply["data"]["text/plain"] == DOCS[name]
