"""The ``tactus`` comm as the lab extension uses it: records out, reset in."""

from __future__ import annotations

from typing import Any

import pytest

from tactus_kernel.protocol import PROTOCOL, fold_op

PROC = """
procedure({name = "demo"}, function()
  local v = Step.run("pick", function() print("computing"); return 42 end)
  return {v = v}
end)
"""

OTHER = """
procedure({name = "other"}, function()
  return {w = Step.run("w", function() return 1 end)}
end)
"""

STORED = {
    "version": 1,
    "procedures": {
        "demo": {"checkpoints": [{"kind": "step", "name": "pick", "value": 7, "at": "2026-01-01T00:00:00.000Z"}]},
        "kept": {"checkpoints": [{"kind": "step", "name": "x", "value": 1, "at": "2026-01-01T00:00:00.000Z"}]},
    },
}


def reset(kernel: Any, comm_id: str, procedures: Any = None, with_key: bool = True) -> None:
    data: dict[str, Any] = {"op": "reset"}
    if with_key:
        data["procedures"] = procedures
    kernel.send_comm("comm_msg", {"comm_id": comm_id, "data": data})


def ops_after(kernel: Any, count: int, op: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Wait until more than `count` ops of this kind arrived; return the new ones."""
    kernel.wait_until(lambda: len([o for o in kernel.tactus_ops() if o["op"] == op]) > count, timeout)
    return [o for o in kernel.tactus_ops() if o["op"] == op][count:]


def n_ops(kernel: Any, op: str) -> int:
    return len([o for o in kernel.tactus_ops() if o["op"] == op])


def test_a_run_sends_the_whole_record_as_an_update(kernel):
    kernel.open_tactus(None)
    run = kernel.execute(PROC, cell_id="c1")
    assert run.status == "ok"
    kernel.wait_until(
        lambda: any("demo" in o.get("procedures", {}) for o in kernel.tactus_ops() if o["op"] == "update")
    )
    update = next(o for o in reversed(kernel.tactus_ops()) if o["op"] == "update" and "demo" in o["procedures"])
    record = update["procedures"]["demo"]
    assert record["status"] == "completed"
    [entry] = record["checkpoints"]
    assert (entry["kind"], entry["name"], entry["value"]) == ("step", "pick", 42)
    assert entry["at"].endswith("Z")


def test_reset_of_one_procedure_answers_with_delete_and_reruns_fresh(kernel):
    comm_id = kernel.open_tactus(STORED)
    replayed = kernel.execute(PROC, cell_id="c1")
    assert "computing" not in replayed.stdout and replayed.result == "{v = 7}"
    before = n_ops(kernel, "delete")
    reset(kernel, comm_id, ["demo"])
    [delete] = ops_after(kernel, before, "delete")
    assert delete == {"op": "delete", "procedures": ["demo"]}
    fresh = kernel.execute(PROC, cell_id="c1")
    assert "computing" in fresh.stdout and fresh.result == "{v = 42}"
    # the other stored record is untouched
    records = kernel.execute("%tactus records")
    assert "kept" in records.of_type("display_data")[0]["content"]["data"]["text/plain"]


def test_reset_without_procedures_forgets_everything(kernel):
    comm_id = kernel.open_tactus(STORED)
    kernel.execute(OTHER, cell_id="c2")
    before = n_ops(kernel, "delete")
    reset(kernel, comm_id, with_key=False)
    [delete] = ops_after(kernel, before, "delete")
    assert sorted(delete["procedures"]) == ["demo", "kept", "other"]
    assert "No checkpoints recorded yet." in kernel.execute("%tactus records").stdout


def test_reset_all_with_nothing_recorded_still_answers(kernel):
    comm_id = kernel.open_tactus(None)
    reset(kernel, comm_id, with_key=False)
    [delete] = ops_after(kernel, 0, "delete")
    assert delete == {"op": "delete", "procedures": []}


def test_reset_of_a_key_the_kernel_does_not_know_is_deleted_in_the_notebook_too(kernel):
    comm_id = kernel.open_tactus(None)
    reset(kernel, comm_id, ["ghost"])
    [delete] = ops_after(kernel, 0, "delete")
    assert delete == {"op": "delete", "procedures": ["ghost"]}


def test_a_bad_reset_warns_and_forgets_nothing(kernel):
    comm_id = kernel.open_tactus(STORED)
    reset(kernel, comm_id, "demo")  # a string, not a list
    kernel.wait_until(lambda: n_ops(kernel, "warning") == 1)
    assert n_ops(kernel, "delete") == 0
    assert "computing" not in kernel.execute(PROC, cell_id="c1").stdout


def test_unknown_ops_from_the_frontend_are_ignored(kernel):
    comm_id = kernel.open_tactus(STORED)
    kernel.send_comm("comm_msg", {"comm_id": comm_id, "data": {"op": "frobnicate", "procedures": ["demo"]}})
    kernel.send_comm("comm_msg", {"comm_id": comm_id, "data": {}})
    run = kernel.execute(PROC, cell_id="c1")
    assert run.status == "ok" and "computing" not in run.stdout
    assert n_ops(kernel, "delete") == 0 and n_ops(kernel, "warning") == 0


def test_closing_an_old_comm_after_reopening_keeps_the_new_one(kernel):
    """A frontend that reconnects opens a new comm; the old one's close must not cut it."""
    old = kernel.open_tactus(None)
    new = kernel.open_tactus(None)
    kernel.send_comm("comm_close", {"comm_id": old, "data": {}})
    kernel.execute(PROC, cell_id="c1")
    kernel.wait_until(
        lambda: any(
            m["content"].get("comm_id") == new
            and m["msg_type"] == "comm_msg"
            and m["content"]["data"].get("op") == "update"
            for m in kernel.comm_msgs
        )
    )
    before = n_ops(kernel, "delete")
    reset(kernel, new, ["demo"])
    assert ops_after(kernel, before, "delete") == [{"op": "delete", "procedures": ["demo"]}]


def test_a_reopened_comm_gets_the_records_the_notebook_has_older_or_lacks(kernel):
    """A page reloaded while the kernel ran on sends its saved (older) metadata."""
    kernel.open_tactus(None)
    kernel.execute(PROC, cell_id="c1")
    kernel.execute(OTHER, cell_id="c2")
    kernel.drain(0.3)
    new = kernel.open_tactus(STORED)  # demo: 7 (older than the kernel's 42), no "other"
    kernel.wait_until(
        lambda: any(m["content"].get("comm_id") == new and m["msg_type"] == "comm_msg" for m in kernel.comm_msgs)
    )
    [update] = [
        m["content"]["data"]
        for m in kernel.comm_msgs
        if m["content"].get("comm_id") == new and m["msg_type"] == "comm_msg"
    ]
    assert update["op"] == "update" and sorted(update["procedures"]) == ["demo", "other"]
    assert update["procedures"]["demo"]["checkpoints"][0]["value"] == 42
    # the kernel keeps what it ran: a re-run replays 42, and the stored-only record is adopted
    run = kernel.execute(PROC, cell_id="c1")
    assert "computing" not in run.stdout and run.result == "{v = 42}"
    assert "kept" in kernel.execute("%tactus records").of_type("display_data")[0]["content"]["data"]["text/plain"]


def test_reopening_with_the_same_records_sends_nothing(kernel):
    kernel.open_tactus(STORED)
    kernel.execute(PROC, cell_id="c1")  # replays (and updates the record's status)
    kernel.drain(0.5)
    procedures = dict(STORED["procedures"])
    for op in kernel.tactus_ops():  # what the notebook holds after merging, as the extension does
        if op["op"] == "update":
            procedures.update(op["procedures"])
    again = kernel.open_tactus({"version": 1, "procedures": procedures})
    kernel.execute("1 + 1")
    kernel.drain(0.3)
    assert not [m for m in kernel.comm_msgs if m["content"].get("comm_id") == again and m["msg_type"] == "comm_msg"]


THREE = """
procedure({name = "three"}, function()
  local a = Step.run("a", function() print("ran a"); return 1 end)
  local b = Step.run("b", function() print("ran b"); return 2 end)
  local c = Step.run("c", function() print("ran c"); return 3 end)
  return {sum = a + b + c}
end)
"""


def test_reset_from_an_index_forgets_that_checkpoint_and_the_later_ones(kernel):
    """A card's Ask again: `from` keeps the checkpoints before the index, and the re-run asks from there."""
    comm_id = kernel.open_tactus(None)
    assert kernel.execute(THREE, cell_id="c3").stdout == "ran a\nran b\nran c\n"
    kernel.drain(0.3)
    before = n_ops(kernel, "update")
    kernel.send_comm(
        "comm_msg", {"comm_id": comm_id, "data": {"op": "reset", "procedures": ["three"], "from": {"three": 1}}}
    )
    [update] = ops_after(kernel, before, "update")
    assert [c["name"] for c in update["procedures"]["three"]["checkpoints"]] == ["a"]
    assert n_ops(kernel, "delete") == 0
    rerun = kernel.execute(THREE, cell_id="c3")
    assert rerun.stdout == "ran b\nran c\n" and rerun.result == "{sum = 6}"


def test_reset_from_for_an_unknown_procedure_deletes_it_and_a_plain_key_is_forgotten_whole(kernel):
    comm_id = kernel.open_tactus(STORED)
    before = n_ops(kernel, "delete")
    kernel.send_comm(
        "comm_msg", {"comm_id": comm_id, "data": {"op": "reset", "procedures": ["ghost", "kept"], "from": {"ghost": 0}}}
    )
    [delete] = ops_after(kernel, before, "delete")
    assert delete == {"op": "delete", "procedures": ["ghost", "kept"]}


def test_a_reset_from_that_is_not_an_index_warns_and_forgets_nothing(kernel):
    comm_id = kernel.open_tactus(STORED)
    kernel.send_comm(
        "comm_msg", {"comm_id": comm_id, "data": {"op": "reset", "procedures": ["demo"], "from": {"demo": "1"}}}
    )
    kernel.wait_until(lambda: n_ops(kernel, "warning") == 1)
    [warning] = [o for o in kernel.tactus_ops() if o["op"] == "warning"]
    assert warning["message"] == (
        'Tactus: reset\'s "from" must map procedure names to checkpoint indexes (0 or more), got {"demo": "1"}'
    )
    assert n_ops(kernel, "delete") == 0 and n_ops(kernel, "update") == 0
    assert "computing" not in kernel.execute(PROC, cell_id="c1").stdout


ASK = """
procedure({name = "ask"}, function()
  local ok = Human.approve({message = "Go?"})
  print("approved:", ok)
  error("after the click")
end)
"""


def test_every_message_of_a_cell_names_the_cell_and_its_idle_follows_its_own_request(kernel):
    """A reopened page routes a cell's outputs by this metadata (labextension/src/orphans.ts).

    The idle status that ends the cell carries it too, under the cell's own
    request, although the click was the last message the kernel handled.
    """
    kernel.open_tactus(None)
    run = kernel.submit(ASK, cell_id="cell-uuid-1")
    kernel.wait_until(lambda: any(m["msg_type"] == "display_data" for m in run.messages), timeout=20)
    kernel.click(kernel.button("Approve"))
    kernel.wait(run)
    assert run.status == "error" and run.stdout == "approved:\ttrue\n"
    count = run.reply["content"]["execution_count"]
    expected = {"cellId": "cell-uuid-1", "executionCount": count}
    outputs = run.of_type("stream", "display_data", "error")
    assert {m["msg_type"] for m in outputs} == {"stream", "display_data", "error"}
    for m in outputs:
        assert m["metadata"] == expected, m["msg_type"]
    [idle] = [m for m in run.of_type("status") if m["content"]["execution_state"] == "idle"]
    assert idle["metadata"] == expected
    # a result too; a cell run without a cell id (nbclient) gets no metadata
    assert kernel.execute("1 + 2", cell_id="c9").of_type("execute_result")[0]["metadata"]["cellId"] == "c9"
    plain = kernel.execute("print(1)")
    assert [m["metadata"] for m in plain.of_type("stream")] == [{}]


class _Session:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def send(self, socket: Any, msg_type: str, content: dict[str, Any], **kw: Any) -> None:
        self.sent.append((msg_type, content, kw["metadata"]))


class _Kernel:
    execution_count = 5
    iopub_socket = None

    def __init__(self) -> None:
        self.session = _Session()

    def _topic(self, msg_type: str) -> bytes:
        return msg_type.encode()


def test_a_display_with_an_id_keeps_the_id_in_the_saved_output_metadata():
    """A page reopened while a card waits finds the card to update by this (labextension/src/orphans.ts)."""
    from tactus_kernel.engine.records import Records
    from tactus_kernel.jupyter.notebook_host import NotebookHost, RecordsChannel

    kernel = _Kernel()
    host = NotebookHost(kernel, {"header": {}, "metadata": {"cellId": "c7"}}, RecordsChannel(Records()))
    host._send(
        "display_data",
        {"data": {"text/plain": "card"}, "metadata": {"a": 1}, "transient": {"display_id": "tactus-card-1"}},
    )
    host._send("display_data", {"data": {"text/plain": "plain"}, "metadata": {}, "transient": {}})
    [(_, card, meta), (_, plain, _)] = kernel.session.sent
    assert card["metadata"] == {"a": 1, "tactus": {"display_id": "tactus-card-1"}}
    assert card["transient"] == {"display_id": "tactus-card-1"}
    assert meta == {"cellId": "c7", "executionCount": 5}
    assert plain["metadata"] == {}


# ------------------------------------------------ protocol 1.1 (issue 22, 24)
SHIP = """
procedure({name = "ship"}, function()
  local built = Step.run("build", function() return {image = "app:2"} end)
  local ok = Human.approve({message = "Ship it?"})
  return {ok = ok, image = built.image}
end)
"""


def record_ops(kernel: Any, comm_id: str) -> list[dict[str, Any]]:
    return [
        m["content"]["data"]
        for m in kernel.comm_msgs
        if m["msg_type"] == "comm_msg"
        and m["content"].get("comm_id") == comm_id
        and m["content"]["data"].get("op") in ("update", "append", "delete")
    ]


@pytest.mark.parametrize("protocol", [PROTOCOL, None], ids=["1.1", "1.0"])
def test_a_second_run_of_an_answered_procedure_sends_no_record_op(kernel, protocol: str | None):
    """Issue 24: the re-run replays the step and the answer; the record is as it
    was, so the frontend gets nothing to write (the notebook is not dirtied).
    A 1.0 frontend (no protocol announced) gets whole updates, and nothing either."""
    comm_id = kernel.open_tactus(None, protocol=protocol)
    run = kernel.start(SHIP, cell_id="c1")
    kernel.card().click("Approve")
    assert kernel.wait(run).status == "ok"
    kernel.drain(0.5)
    first = record_ops(kernel, comm_id)
    if protocol is None:
        assert first and all(op["op"] == "update" and "protocol" not in op for op in first)
    else:
        assert first and all(op["op"] == "append" and op["protocol"] == PROTOCOL for op in first)
    held: dict[str, Any] = {}
    for op in first:
        fold_op(held, op)
    assert held["ship"]["status"] == "completed" and held["ship"]["events"]
    again = kernel.execute(SHIP, cell_id="c1")
    assert again.status == "ok" and "ok = true" in again.result
    kernel.execute("1 + 1")
    kernel.drain(0.5)
    assert record_ops(kernel, comm_id) == first  # nothing more
    assert not kernel.cards()


def test_a_new_step_after_the_record_sends_only_that_step(kernel):
    comm_id = kernel.open_tactus(None, protocol=PROTOCOL)
    kernel.execute(THREE, cell_id="c3")
    kernel.drain(0.3)
    count = len(record_ops(kernel, comm_id))
    more = THREE.replace(
        "return {sum = a + b + c}", 'Step.run("d", function() return 4 end)\n  return {sum = a + b + c}'
    )
    assert kernel.execute(more, cell_id="c3").stdout == ""
    kernel.drain(0.3)
    ops = record_ops(kernel, comm_id)[count:]  # the new step at once (the first in 0.25 s), then the end
    assert ops and all(op["op"] == "append" for op in ops)
    changes = [op["procedures"]["three"] for op in ops]
    assert [c["name"] for change in changes for c in change.get("checkpoints", [])] == ["d"]
    assert changes[0]["from"] == 3 and changes[-1]["status"] == "completed"
    assert all("params" not in change for change in changes)  # unchanged fields are not resent


def test_an_open_with_an_unknown_major_protocol_is_refused_and_its_records_not_taken(kernel):
    comm_id = kernel.open_tactus(STORED, protocol="2.0")
    kernel.wait_until(lambda: n_ops(kernel, "warning") == 1)
    [warning] = [o for o in kernel.tactus_ops() if o["op"] == "warning"]
    assert warning["message"] == (
        "Tactus: this kernel speaks version 1.1 of the tactus comm protocol and cannot read version 2.0 "
        "(a newer or older frontend): update the Tactus kernel or the extension so their major versions "
        "match; this comm is not used, so checkpoints are not saved through it"
    )
    assert warning["refusal"] == {"kind": "protocol", "field": "protocol", "found": "2.0"}
    # the stored records were not taken: the step runs, and nothing is sent on that comm
    run = kernel.execute(PROC, cell_id="c1")
    assert "computing" in run.stdout and "no Tactus notebook extension is connected" in run.stderr
    kernel.drain(0.3)
    assert record_ops(kernel, comm_id) == []
