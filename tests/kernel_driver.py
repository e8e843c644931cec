"""Drive a real Tactus kernel over jupyter_client, the way a browser does.

Executes cells (with ``metadata.cellId`` as JupyterLab sends it), collects
their IOPub outputs, opens the ``tactus`` comm, and clicks widgets by
sending the same ``comm_msg`` content the ipywidgets frontend sends.
"""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from tactus_kernel.replay_client import local_sockets


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


class KernelDriver:
    """A started kernel plus a blocking client, with browser-like helpers."""

    def __init__(self, cwd: Path | str, kernel_name: str = "tactus", env: dict[str, str] | None = None) -> None:
        # local sockets, as replays use: xdist workers start kernels side by side
        self.sockets, transport = local_sockets()
        self.km = KernelManager(kernel_name=kernel_name, **transport)
        kwargs: dict[str, Any] = {"cwd": str(cwd)}
        if env is not None:
            kwargs["env"] = env
        self.km.start_kernel(**kwargs)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.comm_msgs: list[dict[str, Any]] = []  # comm traffic seen on IOPub
        self.widgets: dict[str, dict[str, Any]] = {}  # comm_id -> state of each widget not closed
        self.displays: dict[str, dict[str, Any]] = {}  # display_id -> what it shows now
        self.cards: list[dict[str, Any]] = []  # every static card (application/vnd.tactus.card+json) shown
        self.statuses: list[tuple[str, str | None]] = []  # (execution_state, parent msg_id), in order
        self.pending: dict[str, CellRun] = {}

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
                self.cards.append(data["application/vnd.tactus.card+json"])
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
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}
        msg = self.kc.session.msg("execute_request", content)
        if cell_id is not None:
            msg["metadata"]["cellId"] = cell_id
        self.kc.shell_channel.send(msg)
        run = CellRun(msg["header"]["msg_id"])
        self.pending[run.msg_id] = run
        return run

    def wait(self, run: CellRun, timeout: float = 30) -> CellRun:
        """Wait for the reply and the final idle status of a submitted cell."""
        deadline = time.monotonic() + timeout
        while run.reply is None:
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

    def open_tactus(self, metadata: dict[str, Any] | None, **options: Any) -> str:
        """Open the ``tactus`` comm as the lab extension does."""
        comm_id = uuid.uuid4().hex
        self.send_comm("comm_open", {"comm_id": comm_id, "target_name": "tactus",
                                     "data": {"tactus": metadata, **options}})
        return comm_id

    def tactus_ops(self) -> list[dict[str, Any]]:
        return [m["content"]["data"] for m in self.comm_msgs
                if m["msg_type"] == "comm_msg" and "op" in m["content"].get("data", {})]

    def recorded_procedures(self, start: dict[str, Any] | None = None) -> dict[str, Any]:
        """``metadata.tactus.procedures`` as a frontend holds it after
        applying every update/delete op received so far to `start`."""
        procedures: dict[str, Any] = dict(start or {})
        for op in self.tactus_ops():
            if op.get("op") == "update":
                procedures.update(op["procedures"])
            elif op.get("op") == "delete":
                for key in op["procedures"]:
                    procedures.pop(key, None)
        return procedures

    def widgets_where(self, **match: Any) -> list[str]:
        return [cid for cid, st in self.widgets.items() if all(st.get(k) == v for k, v in match.items())]

    def button(self, description: str) -> str:
        """The comm id of the newest enabled button with this label."""
        ids = [cid for cid in self.widgets_where(_model_name="ButtonModel", description=description)
               if not self.widgets[cid].get("disabled")]
        if not ids:
            raise LookupError(f"no enabled button {description!r}")
        return ids[-1]

    def click(self, comm_id: str) -> str:
        return self.send_comm("comm_msg", {"comm_id": comm_id,
                                           "data": {"method": "custom", "content": {"event": "click"}}})

    def set_value(self, comm_id: str, value: Any) -> str:
        return self.send_comm("comm_msg", {"comm_id": comm_id, "data": {"method": "update", "state": {"value": value},
                                                                 "buffer_paths": []}})

    def live_widgets(self) -> int:
        """How many widgets the kernel holds: asked on the ``jupyter.widget.control``
        comm, as a reloaded page asks for every widget's state."""
        control = uuid.uuid4().hex
        self.send_comm("comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
                       metadata={"version": "1.0.0"})
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
