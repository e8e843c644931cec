"""The public testing API (tactus_kernel.testing), used as a user would.

These tests are the examples of docs/testing.md: a procedure is run on a
real kernel, its cards are answered as a person answers them, and its
result and records are checked.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tactus_kernel.testing import Card, KernelDriver

DEPLOY = """
procedure({
  name = "deploy",
  hitl = {confirm = {type = "approval", message = "Ship it?"}},
}, function()
  local build = Step.run("build", function() return {image = "app:1.4"} end)
  if not Human.approve("confirm", {context = {image = build.image}}) then
    return {status = "cancelled"}
  end
  return {status = "deployed " .. build.image}
end)
"""


def test_approve_a_card(tactus_kernel: KernelDriver) -> None:
    run = tactus_kernel.start(DEPLOY)
    card = tactus_kernel.card()
    assert "Ship it?" in card.text
    assert card.buttons == ["Approve", "Reject"]
    card.approve()
    assert tactus_kernel.wait(run).result == '{status = "deployed app:1.4"}'
    checkpoints = tactus_kernel.records["deploy"]["checkpoints"]
    assert [(c["kind"], c["name"], c["value"]) for c in checkpoints] == [
        ("step", "build", {"image": "app:1.4"}),
        ("human", "confirm", True),
    ]


def test_reject_a_card(tactus_kernel: KernelDriver) -> None:
    run = tactus_kernel.start(DEPLOY)
    tactus_kernel.card().reject()
    assert tactus_kernel.wait(run).result == '{status = "cancelled"}'


def test_type_an_answer(tactus_kernel: KernelDriver) -> None:
    run = tactus_kernel.start('Human.input({message = "Favourite colour?"})')
    tactus_kernel.card().submit("Blue sky")
    assert tactus_kernel.wait(run).result == "Blue sky"


def test_choose_an_option(tactus_kernel: KernelDriver) -> None:
    run = tactus_kernel.start('Human.input({message = "Region?", options = {"eu", "us", "ap"}})')
    card = tactus_kernel.card()
    card.choose("us")
    card.submit()
    assert tactus_kernel.wait(run).result == "us"
    with pytest.raises(LookupError, match=r"the card has no enabled button 'Submit'"):
        card.submit()


def test_review_with_feedback_and_an_edited_artifact(tactus_kernel: KernelDriver) -> None:
    run = tactus_kernel.start(
        'local r = Human.review({message = "Check the draft", artifact = "Helo world"})\n'
        "return r.decision, r.feedback, r.edited_artifact"
    )
    tactus_kernel.card().review("Approve", feedback="Fixed a typo", artifact="Hello world")
    assert tactus_kernel.wait(run).result == "Approve\tFixed a typo\tHello world"


def test_an_error_is_data(tactus_kernel: KernelDriver) -> None:
    run = tactus_kernel.run('procedure({params = {n = {type = "number", default = "x"}}}, function() end)')
    assert run.status == "error"
    assert run.error is not None and run.error["ename"] == "ParamError"


def test_run_a_notebook_answering_its_cards(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells = [nbformat.v4.new_code_cell(DEPLOY), nbformat.v4.new_code_cell('Procedure.run("deploy").status')]
    nbformat.write(nb, tmp_path / "deploy.ipynb")

    def person(card: Card) -> None:
        assert "Ship it?" in card.text
        card.approve()

    driver = KernelDriver(tmp_path)
    try:
        runs = driver.run_notebook(tmp_path / "deploy.ipynb", on_card=person)
        assert [r.result for r in runs] == ['{status = "deployed app:1.4"}', "deployed app:1.4"]
    finally:
        driver.shutdown()


def test_a_card_nobody_answers_names_the_wait(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells = [nbformat.v4.new_code_cell(DEPLOY)]
    nbformat.write(nb, tmp_path / "deploy.ipynb")
    driver = KernelDriver(tmp_path)
    try:
        with pytest.raises(TimeoutError, match="no execute_reply within 3s"):
            driver.run_notebook(tmp_path / "deploy.ipynb", timeout=3)
    finally:
        driver.shutdown()
