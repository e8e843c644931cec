"""What a frontend sends on the ``tactus`` comm is checked by a schema
(tactus_kernel/protocol.py): bad open data or a bad message gets one
warning op and a log line, never an exception out of a handler (issue 21)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tactus_kernel.engine.records import Records
from tactus_kernel.jupyter.notebook_host import RecordsChannel


class FakeComm:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.handler: Any = None

    def send(self, data: dict[str, Any]) -> None:
        json.dumps(data)  # a comm message must be JSON
        self.sent.append(data)

    def on_close(self, callback: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        self.handler = callback


def opened(data: Any) -> tuple[RecordsChannel, FakeComm, list[dict[str, Any]]]:
    channel = RecordsChannel(Records())
    seen: list[dict[str, Any]] = []
    channel.on_open.append(seen.append)
    comm = FakeComm()
    channel.open(comm, {"content": {"data": data}})
    return channel, comm, seen


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"replay": "false"},
            "Tactus: the comm's open data: data.replay: Input should be a valid boolean (found 'false')",
        ),
        ([1, 2], "Tactus: the comm's open data must be an object, found list [1, 2]"),
        (
            {"allow_divergence": 1},
            "Tactus: the comm's open data: data.allow_divergence: Input should be a valid boolean (found 1)",
        ),
        (
            {"answers": ["a"]},
            "Tactus: the comm's open data: data.answers: Input should be a valid dictionary (found ['a'])",
        ),
        (
            {"procedure_params": {"p": 3}},
            "Tactus: the comm's open data: data.procedure_params.p: Input should be a valid dictionary (found 3)",
        ),
    ],
)
def test_bad_open_data_is_refused_with_a_warning_and_a_log_line(data: Any, message: str, caplog):
    with caplog.at_level(logging.WARNING, logger="tactus_kernel.jupyter.notebook_host"):
        channel, comm, seen = opened(data)
    [warning] = comm.sent
    assert warning["op"] == "warning" and warning["message"].startswith(message), warning["message"]
    assert "this comm is not used" in warning["message"]
    assert not channel.connected and seen == [], "a refused open is not a connected extension, and sets no option"
    assert [r.getMessage() for r in caplog.records] == [warning["message"]]


def test_good_open_data_sets_only_the_options_given():
    channel, _, seen = opened({"tactus": None, "replay": True, "future_option": 1})
    assert channel.connected and seen == [{"replay": True, "future_option": 1}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "Tactus: a comm message must be an object, found list [1]"),
        (
            {"op": "reset", "procedures": "all"},
            "Tactus: reset needs a list of procedure names: reset.procedures: "
            "Input should be a valid list (found 'all')",
        ),
        ({"op": "reset", "procedures": [1]}, "reset.procedures.0: Input should be a valid string (found 1)"),
    ],
)
def test_bad_messages_get_a_warning_op(data: Any, message: str):
    _, comm, _ = opened({"tactus": None})
    comm.sent.clear()
    comm.handler({"content": {"data": data}})
    [warning] = comm.sent
    assert warning["op"] == "warning" and message in warning["message"], warning["message"]


def test_a_reset_with_extra_fields_is_kept_open_for_newer_frontends():
    _, comm, _ = opened({"tactus": {"version": 1, "procedures": {"a": {"checkpoints": []}}}})
    comm.sent.clear()
    # (``from`` is such a field this kernel reads: tests/test_records_comm.py)
    comm.handler({"content": {"data": {"op": "reset", "procedures": ["a"], "scope": {"a": 0}}}})
    assert comm.sent == [{"op": "delete", "procedures": ["a"]}]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["tactus", "replay", "answers", "allow_divergence", "procedure_params", "op", "procedures", "from", "version"]
)
PAYLOAD = JSON | st.dictionaries(KEYS | st.text(max_size=6), JSON, max_size=5)
MESSAGE = PAYLOAD | st.fixed_dictionaries({"op": st.just("reset")}, optional={"procedures": JSON, "from": JSON})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(open_data=PAYLOAD, messages=st.lists(MESSAGE, max_size=4))
def test_random_comm_payloads_never_raise_out_of_the_handlers(open_data: Any, messages: list[Any]):
    _, comm, _ = opened(open_data)
    for data in messages:
        if comm.handler is not None:
            comm.handler({"content": {"data": data}})
    for op in comm.sent:
        assert op["op"] in ("warning", "update", "delete")
        if op["op"] == "warning":
            assert op["message"].startswith("Tactus: ") and "\n" not in op["message"]


def test_a_real_kernel_refuses_bad_open_data_and_still_says_no_extension(kernel):
    import uuid

    for data in ([1, 2], {"replay": "false"}):
        kernel.send_comm("comm_open", {"comm_id": uuid.uuid4().hex, "target_name": "tactus", "data": data})
    kernel.wait_until(lambda: len([o for o in kernel.tactus_ops() if o["op"] == "warning"]) == 2)
    run = kernel.execute(
        'procedure({name = "p"}, function() return {ok = Human.approve({message = "ok?", '
        'timeout = 0.2, default = true, on_timeout = "default"})} end)'
    )
    assert run.status == "ok", run.errors  # not batch mode: the request waited and timed out to its default
    assert "Tactus: no Tactus notebook extension is connected" in run.stderr
