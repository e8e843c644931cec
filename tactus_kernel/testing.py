"""Test your procedures: a real Tactus kernel, driven the way a browser does.

:class:`KernelDriver` starts a kernel, executes cells (with
``metadata.cellId`` as JupyterLab sends it) and collects their outputs,
opens the ``tactus`` comm as the lab extension does (so records arrive as
they would in a notebook), and answers cards as a person would: it finds
the waiting :class:`Card` and clicks, types and chooses by sending the same
``comm_msg`` content the ipywidgets frontend sends. The pytest plugin gives
it as the ``tactus_kernel`` fixture. See docs/testing.md.

```python
def test_deploy_asks_before_shipping(tactus_kernel):
    run = tactus_kernel.start(DEPLOY_CELL)
    card = tactus_kernel.card()
    assert "Ship it?" in card.text
    card.approve()
    assert tactus_kernel.wait(run).result == '{status = "deployed"}'
```
"""

from __future__ import annotations

import copy
import html
import queue
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from tactus_kernel.engine.errors import FAILURE_KEY, Failure
from tactus_kernel.jupyter.sockets import local_sockets


@dataclass
class CellRun:
    """Everything one execute request produced."""

    msg_id: str
    reply: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stderr")

    @property
    def result(self) -> str | None:
        results = self.of_type("execute_result")
        return results[-1]["content"]["data"]["text/plain"] if results else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m["content"] for m in self.of_type("error")]

    @property
    def status(self) -> str | None:
        return None if self.reply is None else self.reply["content"]["status"]

    @property
    def error(self) -> dict[str, Any] | None:
        """The cell's error (``ename``, ``evalue``, ``traceback``), or None."""
        errors = self.errors
        return errors[-1] if errors else None

    @property
    def failure(self) -> Failure | None:
        """The cell's error as data (kind, procedure, recorded and asked
        calls, request...: see docs/replay.md), as the kernel sent it with
        its error reply; None when the cell did not fail."""
        if self.reply is None or self.reply["content"].get("status") != "error":
            return None
        return Failure.from_json(self.reply["content"].get(FAILURE_KEY))


_TAG = re.compile(r"<[^>]+>")


class Card:
    """A waiting card, answered as a person would answer it.

    Found by :meth:`KernelDriver.card`: the newest box of widgets that has
    an enabled button. Each action sends what the ipywidgets frontend sends
    when a person clicks, types or chooses.
    """

    def __init__(self, driver: KernelDriver, box: str) -> None:
        self.driver = driver
        self.box = box

    def _parts(self) -> list[tuple[str, dict[str, Any]]]:
        """The widgets inside the card's box, in display order."""
        out: list[tuple[str, dict[str, Any]]] = []

        def walk(comm_id: str) -> None:
            state = self.driver.widgets.get(comm_id)
            if state is None:
                return
            out.append((comm_id, state))
            for child in state.get("children", []):
                walk(str(child).removeprefix("IPY_MODEL_"))

        walk(self.box)
        return out

    def _of(self, model: str) -> list[tuple[str, dict[str, Any]]]:
        return [(cid, st) for cid, st in self._parts() if st.get("_model_name") == model]

    @property
    def text(self) -> str:
        """What the card says (its HTML texts without tags), one line per part."""
        texts = [html.unescape(_TAG.sub(" ", st.get("value", ""))) for _, st in self._of("HTMLModel")]
        return "\n".join(" ".join(t.split()) for t in texts if t.strip())

    @property
    def buttons(self) -> list[str]:
        """The labels of the card's enabled buttons."""
        return [st["description"] for _, st in self._of("ButtonModel") if not st.get("disabled")]

    def click(self, label: str) -> None:
        """Click the enabled button with this label (which answers the card)."""
        for cid, st in self._of("ButtonModel"):
            if st.get("description") == label and not st.get("disabled"):
                self.driver.click(cid)
                self.driver.answered.add(self.box)
                return
        raise LookupError(f"the card has no enabled button {label!r}; it has {self.buttons}")

    def approve(self) -> None:
        self.click("Approve")

    def reject(self) -> None:
        self.click("Reject")

    def resolve(self) -> None:
        self.click("Resolve")

    def _text_box(self, which: str | None) -> str:
        """The first text box, or the one whose placeholder, label or the
        text shown just before it (a card's caption) mentions `which`."""
        caption = ""
        for cid, st in self._parts():
            model = st.get("_model_name")
            if model == "HTMLModel":
                caption = html.unescape(_TAG.sub(" ", st.get("value", "")))
                continue
            if model not in ("TextModel", "TextareaModel"):
                continue
            names = (str(st.get("placeholder", "")), str(st.get("description", "")), caption)
            if which is None or any(which.lower() in n.lower() for n in names):
                return cid
        raise LookupError(f"the card has no text box {which or ''!r}".replace(" ''", ""))

    def type(self, text: str, into: str | None = None) -> None:
        """Type `text` into the card's text box (the first one, or the one
        whose placeholder or label mentions `into`, e.g. "Feedback")."""
        self.driver.set_value(self._text_box(into), text)

    def submit(self, text: str | None = None) -> None:
        """Type `text` (if given) and click Submit."""
        if text is not None:
            self.type(text)
        self.click("Submit")

    def dropdown_labels(self) -> list[str]:
        """The options of the card's drop-down, in order."""
        dropdowns = self._of("DropdownModel")
        return list(dropdowns[0][1].get("_options_labels", [])) if dropdowns else []

    def choose(self, label: str) -> None:
        """Pick the option with this label in the card's drop-down."""
        dropdowns = self._of("DropdownModel")
        if not dropdowns:
            raise LookupError("the card has no drop-down")
        cid, st = dropdowns[0]
        labels = list(st.get("_options_labels", []))
        if label not in labels:
            raise LookupError(f"no option {label!r}; the options are {labels}")
        self.driver.send_comm(
            "comm_msg",
            {"comm_id": cid, "data": {"method": "update", "state": {"index": labels.index(label)}, "buffer_paths": []}},
        )

    def review(self, decision: str, feedback: str | None = None, artifact: str | None = None) -> None:
        """Answer a review card: edit the artifact, write feedback, click the decision."""
        if artifact is not None:
            self.type(artifact, into="Artifact")
        if feedback is not None:
            self.type(feedback, into="Feedback")
        self.click(decision)


class KernelDriver:
    """A started kernel plus a blocking client, with browser-like helpers."""

    def __init__(
        self,
        cwd: Path | str,
        kernel_name: str = "tactus",
        env: dict[str, str] | None = None,
        widgets: bool = True,
        stderr: Any = None,
    ) -> None:
        # local sockets, as replays use: xdist workers start kernels side by side
        self.sockets, transport = local_sockets()
        self.km = KernelManager(kernel_name=kernel_name, **transport)
        kwargs: dict[str, Any] = {"cwd": str(cwd)}
        if env is not None:
            kwargs["env"] = env
        if stderr is not None:  # the kernel's log, e.g. a file to read it from
            kwargs["stderr"] = stderr
        self.km.start_kernel(**kwargs)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.comm_msgs: list[dict[str, Any]] = []  # comm traffic seen on IOPub
        self.widgets: dict[str, dict[str, Any]] = {}  # comm_id -> state of each widget not closed
        self.displays: dict[str, dict[str, Any]] = {}  # display_id -> what it shows now
        self.static_cards: list[dict[str, Any]] = []  # every static card (application/vnd.tactus.card+json) shown
        self.statuses: list[tuple[str, str | None]] = []  # (execution_state, parent msg_id), in order
        self.pending: dict[str, CellRun] = {}
        self._stored: dict[str, Any] = {}  # the records a notebook brought (run_notebook)
        self.answered: set[str] = set()  # cards clicked here, whose disabled state may not have arrived yet
        self.shows_widgets = widgets
        self._connect_widget_manager()

    def _connect_widget_manager(self) -> None:
        """What ipywidgets' widget manager does when it connects to a kernel
        (the kernel asks a person only where one can see the cards)."""
        if self.shows_widgets:
            self.send_comm(
                "comm_open",
                {"comm_id": uuid.uuid4().hex, "target_name": "jupyter.widget.control", "data": {}},
                metadata={"version": "1.0.0"},
            )

    def restart(self, timeout: float = 60) -> None:
        """Restart the kernel as JupyterLab does; the widget manager
        reconnects (the ``tactus`` comm is yours to reopen)."""
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=timeout)
        self._connect_widget_manager()

    # ----------------------------------------------------------- messages
    def _route(self, msg: dict[str, Any]) -> None:
        t = msg["msg_type"]
        if t in ("comm_open", "comm_msg", "comm_close"):
            self.comm_msgs.append(msg)
            content = msg["content"]
            if t == "comm_open" and content.get("target_name") == "jupyter.widget":
                self.widgets[content["comm_id"]] = dict(content["data"].get("state", {}))
            elif t == "comm_msg" and content["comm_id"] in self.widgets:
                data = content.get("data", {})
                if data.get("method") == "update":
                    self.widgets[content["comm_id"]].update(data.get("state", {}))
            elif t == "comm_close":
                self.widgets.pop(content["comm_id"], None)
        elif t == "status":
            self.statuses.append((msg["content"]["execution_state"], msg.get("parent_header", {}).get("msg_id")))
        elif t in ("display_data", "update_display_data"):
            data = msg["content"]["data"]
            display_id = msg["content"].get("transient", {}).get("display_id")
            if display_id:
                self.displays[display_id] = data
            if "application/vnd.tactus.card+json" in data:
                self.static_cards.append(data["application/vnd.tactus.card+json"])
        parent = msg.get("parent_header", {}).get("msg_id")
        if parent in self.pending:
            self.pending[parent].messages.append(msg)

    def drain(self, timeout: float = 0.05) -> None:
        """Read whatever IOPub has right now."""
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                return
            self._route(msg)

    def submit(self, code: str, cell_id: str | None = None) -> CellRun:
        """Send an execute request without waiting for it to finish."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        msg = self.kc.session.msg("execute_request", content)
        if cell_id is not None:
            msg["metadata"]["cellId"] = cell_id
        self.kc.shell_channel.send(msg)
        run = CellRun(msg["header"]["msg_id"])
        self.pending[run.msg_id] = run
        return run

    def wait(self, run: CellRun, timeout: float = 30, on_card: Callable[[Card], None] | None = None) -> CellRun:
        """Wait for the reply and the final idle status of a submitted cell;
        `on_card` is called with each card that waits meanwhile."""
        deadline = time.monotonic() + timeout
        while run.reply is None:
            if on_card is not None:
                for card in self.cards():
                    on_card(card)
            if time.monotonic() > deadline:
                seen = [m["msg_type"] for m in run.messages]
                raise TimeoutError(f"no execute_reply within {timeout}s; messages so far: {seen}")
            try:
                reply = self.kc.get_shell_msg(timeout=0.05)
            except queue.Empty:
                self.drain(0.01)
                continue
            if reply["parent_header"].get("msg_id") == run.msg_id:
                run.reply = reply
        # outputs precede the idle status on IOPub
        while not any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in run.messages):
            if time.monotonic() > deadline:
                break
            self.drain(0.05)
        return run

    def execute(self, code: str, cell_id: str | None = None, timeout: float = 30) -> CellRun:
        return self.wait(self.submit(code, cell_id), timeout)

    def wait_until(self, predicate: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            self.drain(0.02)

    # --------------------------------------------------------------- comms
    def send_comm(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None) -> str:
        """Send a comm message; returns its msg_id (the parent of its status messages)."""
        msg = self.kc.session.msg(msg_type, content, metadata=metadata)
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def open_tactus(self, metadata: dict[str, Any] | None, protocol: str | None = None, **options: Any) -> str:
        """Open the ``tactus`` comm as the lab extension does; with no
        `protocol` as a 1.0 frontend (whole ``update`` ops), with
        ``protocol=tactus_kernel.protocol.PROTOCOL`` as today's (``append`` ops)."""
        comm_id = uuid.uuid4().hex
        data = {"tactus": metadata, **options}
        if protocol is not None:
            data["protocol"] = protocol
        self.send_comm("comm_open", {"comm_id": comm_id, "target_name": "tactus", "data": data})
        return comm_id

    def tactus_ops(self) -> list[dict[str, Any]]:
        return [
            m["content"]["data"]
            for m in self.comm_msgs
            if m["msg_type"] == "comm_msg" and "op" in m["content"].get("data", {})
        ]

    def recorded_procedures(self, start: dict[str, Any] | None = None) -> dict[str, Any]:
        """``metadata.tactus.procedures`` as a frontend holds it after
        applying every update/delete op received so far to `start`."""
        from tactus_kernel.protocol import fold_op

        procedures: dict[str, Any] = copy.deepcopy(dict(start or {}))
        for op in self.tactus_ops():
            fold_op(procedures, copy.deepcopy(op))
        return procedures

    # ---------------------------------------------------- the public API
    def run(self, code: str, cell_id: str | None = None, timeout: float = 30) -> CellRun:
        """Run a cell to its end (:meth:`execute`)."""
        return self.execute(code, cell_id, timeout)

    def start(self, code: str, cell_id: str | None = None) -> CellRun:
        """Start a cell that will wait for a person; :meth:`wait` for its end."""
        return self.submit(code, cell_id)

    def cards(self) -> list[Card]:
        """The cards waiting for an answer, oldest first."""
        self.drain(0.01)
        found = []
        for cid, state in self.widgets.items():
            if state.get("_model_name") != "VBoxModel":
                continue
            card = Card(self, cid)
            if cid not in self.answered and card.buttons:
                found.append(card)
        return found

    def card(self, timeout: float = 10) -> Card:
        """The newest card waiting for an answer (waits for one to appear)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = self.cards()
            if waiting:
                return waiting[-1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no card waited for an answer within {timeout}s")
            self.drain(0.02)

    @property
    def records(self) -> dict[str, Any]:
        """``metadata.tactus.procedures`` as the notebook would hold it now
        (needs the ``tactus`` comm open: :meth:`open_tactus`)."""
        self.drain(0.05)
        return self.recorded_procedures(self._stored)

    def run_notebook(
        self, path: Path | str, on_card: Callable[[Card], None] | None = None, timeout: float = 60
    ) -> list[CellRun]:
        """Run a notebook's code cells in order, as JupyterLab's Run All
        does: with its recorded ``metadata.tactus`` sent first and each
        cell's id. A cell that waits for a person calls `on_card` with the
        card (answer it there); with no `on_card` such a cell fails the run
        with a TimeoutError naming it. Stops at the first failed cell."""
        import nbformat

        nb = nbformat.read(str(path), as_version=4)
        self._stored = dict((nb.metadata.get("tactus") or {}).get("procedures", {}))
        from tactus_kernel.protocol import PROTOCOL

        self.open_tactus(nb.metadata.get("tactus"), protocol=PROTOCOL)
        done: list[CellRun] = []
        for cell in nb.cells:
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            run = self.wait(self.submit(cell.source, cell.get("id")), timeout, on_card=on_card)
            done.append(run)
            if run.status != "ok":
                break
        return done

    def widgets_where(self, **match: Any) -> list[str]:
        return [cid for cid, st in self.widgets.items() if all(st.get(k) == v for k, v in match.items())]

    def button(self, description: str) -> str:
        """The comm id of the newest enabled button with this label."""
        ids = [
            cid
            for cid in self.widgets_where(_model_name="ButtonModel", description=description)
            if not self.widgets[cid].get("disabled")
        ]
        if not ids:
            raise LookupError(f"no enabled button {description!r}")
        return ids[-1]

    def click(self, comm_id: str) -> str:
        return self.send_comm(
            "comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}
        )

    def set_value(self, comm_id: str, value: Any) -> str:
        return self.send_comm(
            "comm_msg",
            {"comm_id": comm_id, "data": {"method": "update", "state": {"value": value}, "buffer_paths": []}},
        )

    def live_widgets(self) -> int:
        """How many widgets the kernel holds: asked on the ``jupyter.widget.control``
        comm, as a reloaded page asks for every widget's state."""
        control = uuid.uuid4().hex
        self.send_comm(
            "comm_open",
            {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
            metadata={"version": "1.0.0"},
        )
        self.send_comm("comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
        found: list[int] = []

        def answered() -> bool:
            for m in self.comm_msgs:
                data = m["content"].get("data", {})
                if m["content"].get("comm_id") == control and data.get("method") == "update_states":
                    found.append(len(data["states"]))
                    return True
            return False

        self.wait_until(answered, timeout=60)
        self.send_comm("comm_close", {"comm_id": control, "data": {}})
        return found[0]

    def open_comms(self) -> int:
        """How many comms the kernel has open (``comm_info_request``)."""
        msg_id = self.kc.comm_info()
        while True:
            reply = self.kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                return len(reply["content"]["comms"])

    # ----------------------------------------------------------- lifecycle
    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        if self.sockets is not None:
            self.sockets.cleanup()
