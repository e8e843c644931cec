"""A procedure with no name is keyed by its cell id (a UUID in JupyterLab):
cards, the timeline and the record's "title" name it by its cell instead."""

from __future__ import annotations

import html
import uuid

from tactus_kernel.engine.runtime import cell_title

ASK = 'local ok = Human.approve({message = "Ship it?"})\nprint("approved:", ok)'


def test_a_cell_title_is_its_label_and_first_line_shortened():
    assert cell_title("[cell 3]", ASK) == 'cell 3: local ok = Human.approve({message = "Ship it?"})'
    assert cell_title("[cell 12]", "\n\n   -- ask the reviewer\nHuman.input('x')") == "cell 12: -- ask the reviewer"
    long = cell_title("[cell 1]", "x = " + "1 + " * 40 + "1")
    assert long == "cell 1: x = 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 +…"
    assert len(long) == len("cell 1: ") + 48
    assert cell_title("[cell 4]", "   \n") == "cell 4"


def test_records_of_unnamed_procedures_carry_a_title_and_keep_their_key(cells):
    key = str(uuid.uuid4())
    cells.runtime.answers["Ship it?"] = True
    cells(ASK, key=key)
    rec = cells.runtime.records.procedures[key]
    assert rec["title"] == 'cell 1: local ok = Human.approve({message = "Ship it?"})'
    assert [c["kind"] for c in rec["checkpoints"]] == ["human"]

    # a replay (now cell 2) records nothing new and leaves the record as it was
    cells(ASK, key=key)
    assert rec["title"] == 'cell 1: local ok = Human.approve({message = "Ship it?"})'
    # a run that records something new names it by the cell it ran as
    cells(ASK + '\nStep.run("after", function() return 1 end)', key=key)
    assert rec["title"] == 'cell 3: local ok = Human.approve({message = "Ship it?"})'

    other = str(uuid.uuid4())
    cells('procedure(function()\n  Step.run("a", function() return 1 end)\nend)', key=other)
    assert cells.runtime.records.procedures[other]["title"] == "cell 4: procedure(function()"


def test_a_named_procedure_is_titled_by_its_name(cells):
    # even when its name is the id of its cell
    cells('procedure({name = "same"}, function() Step.run("a", function() return 1 end) end)', key="same")
    cells('procedure({name = "deploy"}, function() Step.run("a", function() return 1 end) end)', key="c2")
    assert cells.runtime.records.procedures["same"]["title"] == "same"
    assert cells.runtime.records.procedures["deploy"]["title"] == "deploy"


def test_kernel_card_record_and_timeline_name_the_cell(kernel):
    kernel.open_tactus(None)
    cell_id = str(uuid.uuid4())
    title = 'cell 1: local ok = Human.approve({message = "Ship it?"})'
    run = kernel.submit('local ok = Human.approve({message = "Ship it?"})\nreturn ok', cell_id=cell_id)
    kernel.wait_until(
        lambda: kernel.widgets_where(_model_name="ButtonModel", description="Approve", disabled=False), timeout=30
    )
    headers = [
        st["value"]
        for st in kernel.widgets.values()
        if st.get("_model_name") == "HTMLModel" and "Ship it?" in str(st.get("value"))
    ]
    assert any(html.escape(title) in h for h in headers), headers  # the card names the cell
    assert not any(cell_id in h for h in headers)
    kernel.click(kernel.button("Approve"))
    kernel.wait(run)
    assert run.status == "ok" and run.result == "true"
    rec = kernel.recorded_procedures()[cell_id]
    assert rec["title"] == title

    # a procedure with no name: its timeline names the cell too
    other = str(uuid.uuid4())
    run = kernel.execute(
        "procedure(function()\n  return Step.run('slow', function() Sleep(0.5) return 1 end)\nend)", cell_id=other
    )
    assert run.status == "ok", run.errors
    [shown] = [m for m in run.of_type("display_data") if "Tactus timeline" in m["content"]["data"]["text/plain"]]
    assert shown["content"]["data"]["text/plain"].startswith("[Tactus timeline] cell 2: procedure(function(): running")
    [final] = run.of_type("update_display_data")
    assert final["content"]["data"]["text/plain"].startswith("[Tactus timeline] cell 2: procedure(function(): done, ")
    assert kernel.recorded_procedures()[other]["title"] == "cell 2: procedure(function()"
