"""Human-in-the-loop cards, clicked exactly as the ipywidgets frontend does."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest


def ask(kernel, code: str, cell_id: str = "c1", wait_for: str | None = "Approve"):
    """Submit a cell and wait until its card's button exists."""
    run = kernel.submit(code, cell_id=cell_id)
    if wait_for:
        kernel.wait_until(lambda: kernel.widgets_where(_model_name="ButtonModel", description=wait_for, disabled=False))
    return run


MIME = "application/vnd.tactus.card+json"
SUCCESS = "var(--jp-success-color1, #2f855a)"
ERROR = "var(--jp-error-color1, #c53030)"
AT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def card_display(kernel, run) -> tuple[str, dict]:
    """The display id and first bundle of the (first) live card a cell showed."""

    def cards() -> list[dict]:
        return [
            m["content"]
            for m in run.messages
            if m["msg_type"] == "display_data"
            and m["content"]["transient"].get("display_id", "").startswith("tactus-card-")
        ]

    kernel.wait_until(cards)
    shown = cards()[0]
    return shown["transient"]["display_id"], shown["data"]


def widget_tree(kernel, bundle: dict) -> set[str]:
    """The comm ids of a live card's widgets: its box and all it refers to."""
    found: set[str] = set()
    todo = [bundle["application/vnd.jupyter.widget-view+json"]["model_id"]]
    while todo:
        cid = todo.pop()
        if cid in found:
            continue
        found.add(cid)
        for value in kernel.widgets.get(cid, {}).values():
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, str) and ref.startswith("IPY_MODEL_"):
                    todo.append(ref.removeprefix("IPY_MODEL_"))
    return found


def settled(kernel, display_id: str) -> dict:
    """Wait until the card under `display_id` is static; its bundle."""
    kernel.wait_until(lambda: MIME in kernel.displays.get(display_id, {}))
    return kernel.displays[display_id]


def human_entries(kernel, key: str):
    kernel.drain(0.3)
    recs = [op["procedures"][key] for op in kernel.tactus_ops() if op.get("op") == "update" and key in op["procedures"]]
    return [c for c in recs[-1]["checkpoints"] if c["kind"] == "human"] if recs else []


APPROVE = """
procedure({name = "ship"}, function()
  local ok, timed_out = Human.approve({message = "Deploy v2 to prod?", context = {version = "2.0", env = "prod"}})
  print("approved:", ok, timed_out)
  return {ok = ok}
end)
"""


@pytest.fixture
def live(kernel):
    kernel.open_tactus(None)
    return kernel


def test_approve_card_click_resumes_and_is_recorded(live):
    run = ask(live, APPROVE)
    assert run.reply is None  # still running while it waits
    display_id, card = card_display(live, run)
    assert "application/vnd.jupyter.widget-view+json" in card and MIME not in card
    plain = card["text/plain"]
    assert "Deploy v2 to prod?" in plain and "Waiting for an answer since" in plain
    assert '%tactus answer "Deploy v2 to prod?" true' in plain
    assert 'tactus-kernel replay NOTEBOOK --answer "Deploy v2 to prod?=true"' in plain
    assert "interrupt the kernel" not in plain
    assert any(
        "Deploy v2 to prod?" in str(st.get("value", "")) and "env" in str(st.get("value", ""))
        for st in live.widgets.values()
    )
    card_widgets = widget_tree(live, card)
    assert len(card_widgets) > 10  # box, header, buttons, their layouts and styles...
    approve = live.button("Approve")
    assert approve in card_widgets
    live.click(approve)
    live.wait(run)
    assert run.status == "ok"
    assert run.stdout == "approved:\ttrue\tfalse\n"
    static = settled(live, display_id)
    [entry] = human_entries(live, "ship")
    assert entry["request"] == "approve" and entry["value"] is True
    assert entry["name"] == entry["message"] == "Deploy v2 to prod?"
    assert entry["at"].endswith("Z")
    assert static[MIME] == {
        "version": 1,
        "state": "answered",
        "request": "approve",
        "procedure": "ship",
        "name": "Deploy v2 to prod?",
        "message": "Deploy v2 to prod?",
        "context": {"version": "2.0", "env": "prod"},
        "answer": True,
        "answer_text": "Approved",
        "at": entry["at"],
        "index": 0,
        "cell_id": "c1",
    }
    assert re.fullmatch(rf"\[Tactus\] Deploy v2 to prod\? -> Approved at {AT}", static["text/plain"])
    html = static["text/html"]
    assert "Deploy v2 to prod?" in html and "<th" in html and "env" in html
    assert re.search(rf"color:{re.escape(SUCCESS)};font-weight:700'>Approved at {AT}<", html)
    assert "✓ Approve" in html
    # the live card's widgets are closed: the kernel and the page forget them
    live.wait_until(lambda: not card_widgets & set(live.widgets))


def test_reject_is_red_and_second_click_changes_nothing(live):
    run = ask(live, APPROVE)
    display_id, _ = card_display(live, run)
    reject, approve = live.button("Reject"), live.button("Approve")
    live.click(reject)
    live.click(approve)
    live.wait(run)
    assert run.stdout == "approved:\tfalse\tfalse\n"
    assert [e["value"] for e in human_entries(live, "ship")] == [False]
    static = settled(live, display_id)
    assert static[MIME]["answer"] is False and static[MIME]["answer_text"] == "Rejected"
    html = static["text/html"]
    assert re.search(rf"color:{re.escape(ERROR)};font-weight:700'>Rejected at {AT}<", html)
    assert SUCCESS not in html.split("tactus-status")[1]
    assert "✓ Reject" in html and "✓ Approve" not in html


def test_rerun_replays_the_answer_without_asking(live):
    run = ask(live, APPROVE)
    live.click(live.button("Approve"))
    live.wait(run)
    again = live.execute(APPROVE, cell_id="c1")
    assert again.status == "ok" and again.stdout == "approved:\ttrue\tfalse\n"
    [shown] = [m["content"] for m in again.of_type("display_data")]
    assert shown["transient"] == {}  # static from the start, nothing to update
    data = shown["data"]
    assert "application/vnd.jupyter.widget-view+json" not in data
    assert data[MIME]["state"] == "recorded" and data[MIME]["answer"] is True and data[MIME]["index"] == 0
    assert data["text/plain"].splitlines()[0].endswith("(recorded)")
    assert "%tactus reset ship, then run the cell" in data["text/plain"]
    assert (
        "to ask again use Ask again in JupyterLab, or <code>%tactus reset ship</code> and run the cell"
        in data["text/html"]
    )
    assert not live.widgets_where(_model_name="ButtonModel")


def test_reset_then_rerun_asks_again(live):
    """What the recorded card says to do, done."""
    run = ask(live, APPROVE)
    live.click(live.button("Approve"))
    live.wait(run)
    assert live.execute("%tactus reset ship").stdout == "Forgot the checkpoints of: ship\n"
    run = ask(live, APPROVE)  # asks anew
    live.click(live.button("Reject"))
    live.wait(run)
    assert run.stdout == "approved:\tfalse\tfalse\n"


def test_comm_messages_while_a_cell_waits_get_busy_idle_then_busy_again(live):
    """ipywidgets' frontend sends a widget's next change only after the idle
    status of its last one: each comm message handled while a cell runs gets
    busy/idle under its own id, then busy under the waiting cell."""
    run = ask(live, 'print(Human.input({message = "Colour?"}))', wait_for="Submit")
    [text] = live.widgets_where(_model_name="TextModel")
    sent = [live.set_value(text, "Blue sky"[:n]) for n in range(1, 9)]
    live.wait_until(lambda: ("idle", sent[-1]) in live.statuses)
    for msg_id in sent:
        i = live.statuses.index(("busy", msg_id))
        assert live.statuses[i : i + 3] == [("busy", msg_id), ("idle", msg_id), ("busy", run.msg_id)]
    click = live.click(live.button("Submit"))
    live.wait(run)
    assert run.stdout == "Blue sky\n"
    # no "kernel subshells": JupyterLab then sends comm messages to the main shell, whose loop the cards use
    live.kc.kernel_info()
    info = live.kc.get_shell_msg(timeout=10)["content"]
    assert info["implementation"] == "tactus" and "kernel subshells" not in info["supported_features"]
    assert ("idle", click) in live.statuses
    assert live.statuses[-1] == ("idle", run.msg_id)


def test_input_text(live):
    run = ask(
        live,
        'local name = Human.input({message = "Your name?", placeholder = "Ada"})\nprint("hi " .. name)',
        wait_for="Submit",
    )
    display_id, _ = card_display(live, run)
    [text] = live.widgets_where(_model_name="TextModel", placeholder="Ada")
    live.set_value(text, "Grace")
    live.click(live.button("Submit"))
    live.wait(run)
    assert run.stdout == "hi Grace\n"
    assert human_entries(live, "c1")[0]["value"] == "Grace"
    static = settled(live, display_id)
    assert static[MIME]["answer"] == "Grace" and static[MIME]["answer_text"] == 'Answered "Grace"'
    # not the cell id, no name a person knows: the cell's title, and the key only in the data
    assert "procedure c1" not in static["text/html"] and "local name = Human.input" in static["text/html"]
    assert static[MIME]["procedure"] == "c1"
    assert "class='tactus-answer'" in static["text/html"] and ">Grace</div>" in static["text/html"]


def test_enter_in_a_one_line_input_submits(live):
    run = ask(live, 'print("hi " .. Human.input({message = "Your name?"}))', wait_for="Submit")
    [text] = live.widgets_where(_model_name="TextModel")
    live.set_value(text, "Grace Hoppe")
    live.send_comm("comm_msg", {"comm_id": text, "data": {"method": "custom", "content": {"event": "submit"}}})
    # the frontend holds a change until the idle of the one before: the last key may come after the Enter
    live.set_value(text, "Grace Hopper")
    live.wait(run)
    assert run.stdout == "hi Grace Hopper\n"


def test_input_with_options_is_a_choice(live):
    run = ask(
        live,
        'local env = Human.input({message = "Where?", options = {"staging", "prod"}})\nprint(env)',
        wait_for="Submit",
    )
    [choice] = live.widgets_where(_model_name="DropdownModel")
    assert live.widgets[choice]["_options_labels"] == ["staging", "prod"]
    live.send_comm(
        "comm_msg", {"comm_id": choice, "data": {"method": "update", "state": {"index": 1}, "buffer_paths": []}}
    )
    live.click(live.button("Submit"))
    live.wait(run)
    assert run.stdout == "prod\n"


def test_review_with_feedback_and_edited_artifact(live):
    code = """
    local r = Human.review({message = "Check the draft", artifact = "Hello wrld", artifact_type = "text",
                            options = {"Publish", "Revise"}})
    print(r.decision, r.feedback, r.edited_artifact, type(r.responded_at))
    """
    run = ask(live, code, wait_for="Publish")
    display_id, _ = card_display(live, run)
    assert live.button("Revise")
    areas = live.widgets_where(_model_name="TextareaModel")
    artifact = next(a for a in areas if live.widgets[a]["value"] == "Hello wrld")
    feedback = next(a for a in areas if live.widgets[a].get("placeholder", "").startswith("Feedback"))
    live.set_value(artifact, "Hello world")
    live.set_value(feedback, "typo fixed")
    live.click(live.button("Publish"))
    live.wait(run)
    assert run.stdout == "Publish\ttypo fixed\tHello world\tstring\n"
    value = human_entries(live, "c1")[0]["value"]
    assert value["decision"] == "Publish" and value["edited_artifact"] == "Hello world"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value["responded_at"])
    static = settled(live, display_id)
    assert static[MIME]["answer"] == value and static[MIME]["answer_text"] == "Reviewed: Publish"
    html = static["text/html"]
    assert ">typo fixed</div>" in html and ">Hello world</pre>" in html and "✓ Publish" in html


def test_review_default_options_are_approve_and_reject(live):
    run = ask(live, 'print(Human.review({message = "ok?"}).decision)', wait_for="Approve")
    assert live.button("Reject")
    live.click(live.button("Reject"))
    live.wait(run)
    assert run.stdout == "Reject\n"


def test_escalate_blocks_until_resolved(live):
    code = 'Human.escalate({message = "DB is down", severity = "high", context = {db = "main"}})\nprint("resolved")'
    run = ask(live, code, wait_for="Resolve")
    # a round trip to the kernel (the button echoes its state): a cell that
    # did not wait would have ended, and said so on IOPub, before the echo
    button, seen = live.button("Resolve"), len(live.comm_msgs)
    live.send_comm("comm_msg", {"comm_id": button, "data": {"method": "request_state"}})
    live.wait_until(lambda: any(m["content"]["comm_id"] == button for m in live.comm_msgs[seen:]))
    assert not any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in run.messages)
    assert "resolved" not in run.stdout
    live.click(live.button("Resolve"))
    live.wait(run)
    assert run.stdout == "resolved\n"


def test_notify_and_alert_do_not_wait(live):
    run = live.execute(
        'Human.notify({message = "Build started", level = "info"})\n'
        'System.alert({message = "Disk 91%", level = "critical", source = "monitor"})\nprint("went on")'
    )
    assert run.status == "ok" and run.stdout == "went on\n"
    shown = [m["content"]["data"] for m in run.of_type("display_data")]
    assert [s["text/plain"] for s in shown] == [
        "[Notice · info] Build started",
        "[Alert · critical · from monitor] Disk 91%",
    ]
    assert re.search(r"· \d\d:\d\d:\d\d UTC<", shown[0]["text/html"])
    assert "var(--jp-error-color0, #822727)" in shown[1]["text/html"]
    bad = live.execute('System.alert({message = "x", level = "loud"})')
    assert bad.errors[0]["ename"] == "ParamError"


def test_declared_hitl_point_with_call_site_override(live):
    code = """
    procedure({name = "release", hitl = {confirm = {type = "approval", message = "Ship it?", default = false}}},
      function()
        local ok = Human.approve("confirm", {context = {v = 3}})
        return {ok = ok}
      end)
    """
    run = ask(live, code)
    assert any("Ship it?" in str(st.get("value", "")) for st in live.widgets.values())
    live.click(live.button("Approve"))
    live.wait(run)
    [entry] = human_entries(live, "release")
    assert entry["name"] == "confirm" and entry["message"] == "Ship it?" and entry["value"] is True
    card = live.static_cards[-1]
    assert (card["name"], card["message"], card["procedure"], card["context"]) == (
        "confirm",
        "Ship it?",
        "release",
        {"v": 3},
    )


@pytest.mark.parametrize(
    ("on_timeout", "expect", "says"),
    [
        ("default", "stdout:false\ttrue\n", "returned the default false"),
        ("error", "error:HumanTimeout", "the procedure stopped with HumanTimeout"),
    ],
)
def test_timeouts(live, on_timeout, expect, says):
    code = (
        f'local ok, timed_out = Human.approve({{message = "Quick?", timeout = 0.5, default = false, '
        f'on_timeout = "{on_timeout}"}})\nprint(ok, timed_out)'
    )
    run = live.execute(code, cell_id=f"t-{on_timeout}", timeout=15)
    kind, _, want = expect.partition(":")
    if kind == "stdout":
        assert run.stdout == want
        [entry] = human_entries(live, f"t-{on_timeout}")
        assert entry["timed_out"] is True
    else:
        assert run.errors[0]["ename"] == want
    display_id, _ = card_display(live, run)
    static = settled(live, display_id)
    assert static[MIME]["state"] == "timed_out"
    assert re.fullmatch(rf"\[Tactus\] Quick\? -> Timed out at {AT}; {says}", static["text/plain"])
    if on_timeout == "default":
        assert static[MIME]["answer"] is False
        assert static[MIME]["answer_text"] == "Timed out; returned the default false"
        assert static[MIME]["index"] == 0
    live.wait_until(lambda: not live.widgets_where(_model_name="ButtonModel"))


def test_retry_on_timeout_asks_again(live):
    code = 'local ok = Human.approve({message = "Again?", timeout = 0.4, on_timeout = "retry"})\nprint(ok)'
    run = live.submit(code, cell_id="retry")
    live.wait_until(lambda: len(live.displays) == 2 and live.widgets_where(_model_name="ButtonModel"), timeout=10)
    first, second = live.displays
    assert live.displays[first][MIME]["state"] == "timed_out"
    assert live.displays[first]["text/plain"].endswith("; asked again below")
    live.click(live.button("Approve"))
    live.wait(run)
    assert run.stdout == "true\n"
    assert settled(live, second)[MIME]["state"] == "answered"


def test_interrupt_while_waiting(live):
    run = ask(live, APPROVE)
    display_id, _ = card_display(live, run)
    live.interrupt()
    live.wait(run, timeout=10)
    assert run.errors[0]["ename"] == "KeyboardInterrupt"
    assert live.execute("1 + 1").result == "2"
    static = settled(live, display_id)
    assert static[MIME]["state"] == "stopped" and static[MIME]["answer"] is None
    assert re.search(rf"No longer waiting \(stopped at {AT}\)", static["text/plain"])
    live.wait_until(lambda: not live.widgets_where(_model_name="ButtonModel"))


@pytest.mark.parametrize(
    "wrapper",
    [
        'local ok, v = pcall(function() return Human.approve({message = "Nested?"}) end)\nprint(ok, v)',
        'local v = Step.run("gate", function() return Human.approve({message = "Nested?"}) end)\nprint(true, v)',
        'local v = Retry.with_backoff(function() return Human.approve({message = "Nested?"}) end)\nprint(true, v)',
        'local co = coroutine.wrap(function() return Human.approve({message = "Nested?"}) end)\nprint(true, (co()))',
    ],
    ids=["pcall", "Step.run", "Retry", "coroutine"],
)
def test_requests_inside_nested_lua_calls(live, wrapper):
    run = ask(live, wrapper)
    live.click(live.button("Approve"))
    live.wait(run)
    assert run.stdout == "true\ttrue\n"


def test_several_requests_in_a_loop(live):
    code = """
    local approved = {}
    for i = 1, 3 do
      approved[i] = Human.approve({message = "item_" .. i})
    end
    return approved
    """
    run = live.submit(code, cell_id="loop")
    for i, answer in enumerate(("Approve", "Reject", "Approve"), start=1):
        live.wait_until(lambda n=i: len(live.displays) == n and live.widgets_where(_model_name="ButtonModel"))
        live.click(live.button(answer))
    live.wait(run)
    assert run.result == "{true, false, true}"
    assert [e["name"] for e in human_entries(live, "loop")] == ["item_1", "item_2", "item_3"]
    assert [c["index"] for c in live.static_cards] == [0, 1, 2]


def test_answer_magic_for_frontends_without_widgets(live):
    live.execute('%tactus answer "Your name?" "Ada"')
    run = live.execute('print(Human.input({message = "Your name?"}))', cell_id="m")
    assert run.stdout == "Ada\n"
    assert human_entries(live, "m")[0]["source"] == "supplied"


def test_batch_mode_fails_at_once_without_a_recorded_answer(kernel):
    kernel.open_tactus(None, replay=True)
    t0 = time.monotonic()
    run = kernel.execute(
        'procedure({name = "release"}, function() return {n = Human.input({message = "Your name?"})} end)', cell_id="b"
    )
    assert time.monotonic() - t0 < 5
    err = run.errors[0]
    assert err["ename"] == "NoRecordedAnswer"
    assert 'procedure "release": Human.input "Your name?" has no recorded answer' in err["evalue"]


def test_batch_mode_uses_recorded_and_supplied_answers(kernel):
    stored = {
        "version": 1,
        "procedures": {
            "release": {
                "checkpoints": [
                    {
                        "kind": "human",
                        "name": "Ship?",
                        "request": "approve",
                        "message": "Ship?",
                        "value": True,
                        "at": "2026-01-01T00:00:00.000Z",
                    }
                ]
            }
        },
    }
    kernel.open_tactus(stored, replay=True, answers={"Your name?": "Ada"})
    code = """
    procedure({name = "release"}, function()
      return {ok = Human.approve({message = "Ship?"}), who = Human.input({message = "Your name?"})}
    end)
    """
    run = kernel.execute(code, cell_id="b")
    assert run.status == "ok", run.errors
    assert run.result == '{ok = true, who = "Ada"}'


def test_waiting_cards_can_be_restored_after_a_page_reload(live):
    """A reloaded page asks the kernel for every widget's state on the
    jupyter.widget.control comm (what JupyterLab's widget manager does)."""
    import uuid

    run = ask(live, APPROVE)
    control = uuid.uuid4().hex
    live.send_comm(
        "comm_open",
        {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
        metadata={"version": "1.0.0"},
    )  # the widget control protocol, as JupyterLab sends it
    live.send_comm("comm_msg", {"comm_id": control, "data": {"method": "request_states"}})

    def states():
        for m in live.comm_msgs:
            data = m["content"].get("data", {})
            if m["content"].get("comm_id") == control and data.get("method") == "update_states":
                return data["states"]
        return None

    live.wait_until(lambda: states() is not None)
    buttons = {s["state"].get("description") for s in states().values() if s["model_name"] == "ButtonModel"}
    assert {"Approve", "Reject"} <= buttons
    live.click(live.button("Approve"))
    live.wait(run)
    assert run.status == "ok"


def test_answered_cards_release_their_widgets(live):
    """A static card leaves no widget behind: after 200 answered cards the
    kernel holds as many widgets and comms as after one."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_cards import answer_all

    answer_all(live, 1, "one")
    widgets, comms = live.live_widgets(), live.open_comms()
    answer_all(live, 200, "many")
    assert (live.live_widgets(), live.open_comms()) == (widgets, comms)
    assert len(live.static_cards) == 201 and {c["state"] for c in live.static_cards} == {"answered"}
