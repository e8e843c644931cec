"""The one protocol (tactus_kernel/protocol.py): the metadata schema written
once and checked in for the extension, the comm's version, the ``append``
op and its folding, and a replay that sends nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tactus_kernel import protocol
from tactus_kernel.engine.records import Records, RunLog
from tactus_kernel.protocol import (
    PROTOCOL,
    MetadataError,
    ProtocolVersionError,
    fold_op,
    parse_metadata,
    parse_version,
)

ROOT = Path(__file__).resolve().parent.parent
CASES = json.loads((ROOT / "labextension" / "test" / "metadata-cases.json").read_text())["cases"]


# ------------------------------------------------------------------ schema
def test_the_checked_in_json_schema_is_what_the_models_produce():
    """The extension validates by this file: it must be regenerated
    (`python -m tactus_kernel.protocol --schema`) whenever the models change."""
    assert protocol.SCHEMA_FILE.read_text(encoding="utf-8") == protocol.schema_text()
    assert protocol.main(["--schema", "--check"]) == 0


def test_the_schema_requires_kind_name_value_and_at():
    entry = protocol.json_schema()["$defs"]["CheckpointEntry"]
    assert entry["required"] == ["kind", "name", "value", "at"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_kernel_judges_the_shared_cases_as_the_extension_does(case: dict[str, Any]):
    """labextension/test/merge.test.ts runs the same cases through metadataProblem."""
    if "field" not in case:
        parse_metadata(case["block"])
        return
    with pytest.raises(MetadataError) as info:
        parse_metadata(case["block"])
    assert info.value.field == case["field"]
    assert str(info.value).startswith(case["field"] + ":")


# ----------------------------------------------------------------- version
def test_absent_protocol_means_1_0_and_a_minor_is_accepted():
    assert parse_version(None) == (1, 0)
    assert parse_version("1.7") == (1, 7)
    assert parse_version(PROTOCOL) == (1, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "2.0",
            "this kernel speaks version 1.1 of the tactus comm protocol and cannot read version 2.0 (a newer "
            "or older frontend): update the Tactus kernel or the extension so their major versions match",
        ),
        ("1", 'the tactus comm protocol version must be "MAJOR.MINOR", found "1"'),
        (1.1, 'the tactus comm protocol version must be "MAJOR.MINOR", found 1.1'),
    ],
)
def test_an_unknown_major_or_a_malformed_version_is_refused(value: Any, message: str):
    with pytest.raises(ProtocolVersionError) as info:
        parse_version(value)
    assert str(info.value) == message
    assert (info.value.field, info.value.found) == ("protocol", value)


def test_an_op_of_an_unknown_major_is_not_folded():
    procedures: dict[str, Any] = {}
    op = {"op": "update", "protocol": "2.0", "procedures": {"a": {"checkpoints": []}}}
    assert fold_op(procedures, op) == [] and procedures == {}
    assert protocol.op_version_problem(op) == (
        "Tactus: ignored a 'update' op from the kernel: this client speaks version 1.1 of the tactus comm "
        "protocol and cannot read version 2.0 (a newer or older kernel): update the Tactus kernel or the "
        "extension so their major versions match"
    )


def test_the_replay_client_folds_appends_notes_ran_and_ignores_an_unknown_major():
    import nbformat

    from tactus_kernel.replay.client import ReplayClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["tactus"] = {"version": 1, "procedures": {"a": {"checkpoints": [entry("x")]}}}
    client = ReplayClient(nb, km=None)

    def message(data: dict[str, Any]) -> dict[str, Any]:
        return {"msg_type": "comm_msg", "content": {"comm_id": client.comm_id, "data": data}}

    client.handle_tactus(
        message({"op": "append", "protocol": PROTOCOL, "procedures": {"a": {"from": 1, "checkpoints": [entry("y")]}}})
    )
    client.handle_tactus(message({"op": "update", "protocol": "2.0", "procedures": {"a": {"checkpoints": []}}}))
    client.handle_tactus(message({"op": "ran", "protocol": PROTOCOL, "procedures": ["b"]}))
    assert client.procedures == {"a": {"checkpoints": [entry("x"), entry("y")]}}
    assert nb.metadata["tactus"]["procedures"]["a"]["checkpoints"] == [entry("x")]  # a copy was folded
    assert client.touched == ["a", "b"]
    assert client.warnings == [protocol.op_version_problem({"op": "update", "protocol": "2.0"})]


# ------------------------------------------------------------------- fold
def entry(name: str, value: Any = 1) -> dict[str, Any]:
    return {"kind": "step", "name": name, "value": value, "at": "2026-01-01T00:00:00.000Z"}


def test_append_keeps_the_first_n_checkpoints_adds_the_rest_and_sets_fields():
    procedures = {"a": {"checkpoints": [entry("x"), entry("y"), entry("z")], "status": "running", "title": "a"}}
    touched = fold_op(
        procedures,
        {"op": "append", "procedures": {"a": {"from": 2, "checkpoints": [entry("w")], "status": "completed"}}},
    )
    assert touched == ["a"]
    assert procedures == {
        "a": {"checkpoints": [entry("x"), entry("y"), entry("w")], "status": "completed", "title": "a"}
    }


def test_append_to_a_nested_path_makes_the_records_on_the_way():
    procedures: dict[str, Any] = {}
    fold_op(procedures, {"op": "append", "procedures": {"a/b#1/c#2": {"from": 0, "checkpoints": [entry("s")]}}})
    assert procedures == {
        "a": {
            "checkpoints": [],
            "children": {"b#1": {"checkpoints": [], "children": {"c#2": {"checkpoints": [entry("s")]}}}},
        }
    }


def test_update_and_delete_fold_as_before():
    procedures: dict[str, Any] = {"a": {"checkpoints": [entry("x")]}, "b": {"checkpoints": []}}
    assert fold_op(procedures, {"op": "update", "procedures": {"a": {"checkpoints": []}}}) == ["a"]
    assert fold_op(procedures, {"op": "delete", "procedures": ["b", "ghost"]}) == ["b"]
    assert procedures == {"a": {"checkpoints": []}}
    assert fold_op(procedures, {"op": "warning", "message": "hi"}) == []
    assert fold_op(procedures, {"op": "something-new"}) == []


# --------------------------------------------------------- records -> ops
def frontend_after(records: Records, held: dict[str, Any], whole: bool = False) -> list[dict[str, Any]]:
    """Send the records' changes through JSON to a frontend holding `held`."""
    ops = json.loads(json.dumps(records.take_changes(whole=whole)))
    for op in ops:
        fold_op(held, op)
    return ops


def test_a_step_after_a_flush_is_sent_alone():
    records = Records()
    held: dict[str, Any] = {}
    log = RunLog(records, "p")
    for i in range(100):
        log.append("step", f"s{i}", "x" * 1000)
    [first] = frontend_after(records, held)
    assert first["op"] == "append" and first["procedures"]["p"]["from"] == 0
    log.append("step", "s100", "y")
    [op] = frontend_after(records, held)
    assert op["op"] == "append" and op["procedures"]["p"]["from"] == 100
    assert [e["name"] for e in op["procedures"]["p"]["checkpoints"]] == ["s100"]
    assert len(json.dumps(op)) < 200
    assert held == json.loads(json.dumps(records.procedures))


def test_a_protocol_1_0_frontend_gets_whole_records():
    records = Records()
    held: dict[str, Any] = {}
    RunLog(records, "p").append("step", "s", 1)
    [op] = frontend_after(records, held, whole=True)
    assert op == {"op": "update", "procedures": {"p": records.procedures["p"]}}


def test_fields_put_back_as_they_were_send_nothing():
    records = Records()
    records.load({"p": {"checkpoints": [entry("x")], "status": "completed", "output": {"v": 1}}})
    records.set("p", status="running")
    records.set("p", status="completed", output={"v": 1})
    assert records.take_changes() == []
    records.set("p", output={"v": 2})
    assert records.take_changes() == [{"op": "append", "procedures": {"p": {"output": {"v": 2}}}}]


def test_a_removed_field_sends_the_whole_record():
    records = Records()
    records.load({"p": {"checkpoints": [], "status": "completed", "error": "boom"}})
    del records.procedures["p"]["error"]
    records.set("p", status="completed")
    assert records.take_changes() == [{"op": "update", "procedures": {"p": {"checkpoints": [], "status": "completed"}}}]


SCENARIOS = [
    # steps, a failure, a rerun that replays, a rerun that diverges (allowed)
    (
        """procedure({name = "p"}, function()
             for i = 1, 30 do Step.run("s" .. i, function() return {i = i} end) end
             return {n = 30}
           end)""",
        """procedure({name = "p"}, function()
             for i = 1, 30 do Step.run("s" .. i, function() return {i = i} end) end
             Step.run("more", function() return 1 end)
             return {n = 31}
           end)""",
    ),
    # child procedures nested in their caller's record
    (
        """procedure({name = "child"}, function(p) return {v = Step.run("c", function() return p.x end)} end)
           procedure({name = "p"}, function()
             local a = Procedure.run("child", {x = 1})
             local b = Procedure.run("child", {x = 2})
             return {a = a.v, b = b.v}
           end)""",
        """procedure({name = "p"}, function()
             local a = Procedure.run("child", {x = 1})
             Checkpoint.clear_after("child")
             return {a = a.v}
           end)""",
    ),
]


@pytest.mark.parametrize("first,second", SCENARIOS)
def test_folding_the_ops_gives_the_kernels_records(cells, first: str, second: str):
    """Whatever a run does (record, replay, diverge, clear, nest), a frontend
    folding the ops holds exactly the kernel's records."""
    held: dict[str, Any] = {}
    records = cells.runtime.records
    cells.runtime.allow_divergence = True
    for code in (first, first, second, second):
        cells(code, key="c1")
        frontend_after(records, held)
        assert held == json.loads(json.dumps(records.procedures))


def test_a_replay_that_matches_sends_nothing_and_changes_nothing(cells):
    held: dict[str, Any] = {}
    code = SCENARIOS[1][0]
    cells(code, key="c1")
    frontend_after(records := cells.runtime.records, held)
    before = copy.deepcopy(held)
    cells(code, key="c1")
    assert records.take_changes() == []
    assert json.dumps(records.procedures, sort_keys=True) == json.dumps(before, sort_keys=True)
