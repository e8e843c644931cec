"""The runtime's host inside a Jupyter kernel: outputs, comm, record updates.

Every output of a cell is sent with the parent header captured when the
cell started: while a cell waits, the kernel handles comm messages (widget
clicks) and its "current parent" changes under our feet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from tactus_kernel.engine.records import MetadataError, Records, parse_metadata
from tactus_kernel.jupyter.comm_schema import CommInputError, parse_op, parse_open

log = logging.getLogger(__name__)

FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 0.05
UPDATE_DELAY = 0.25
MAX_CELL_OUTPUT = 2 * 1024 * 1024


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class RecordsChannel:
    """The ``tactus`` comm: metadata in on open, batched update/delete ops out."""

    TARGET = "tactus"

    def __init__(self, records: Records) -> None:
        self.records = records
        self.comm: Any = None
        self.options: dict[str, Any] = {}
        self.warning: str | None = None
        self._scheduled: asyncio.TimerHandle | None = None
        self._sent_at = float("-inf")  # when the last update went out (see changed)
        self.on_open: list[Callable[[dict[str, Any]], None]] = []

    @property
    def connected(self) -> bool:
        return self.comm is not None

    def open(self, comm: Any, msg: dict[str, Any]) -> None:
        """A frontend opened the comm with the notebook's ``metadata.tactus``.
        Open data that fails the schema (comm_schema.py) is refused with a
        warning op: that comm is not used, and the kernel stays unconnected."""
        try:
            data = parse_open(msg.get("content", {}).get("data"))
        except CommInputError as exc:
            self._refuse(comm, f"Tactus: {exc}; this comm is not used, so checkpoints are not saved through it")
            return
        self.comm = comm
        comm.on_close(self._closed)
        comm.on_msg(self._received)
        self.options = {k: v for k, v in data.items() if k != "tactus"}
        for callback in self.on_open:
            callback(self.options)
        try:
            stored = parse_metadata(data.get("tactus"))
        except MetadataError as exc:
            self.warning = (
                f"Tactus: the notebook's checkpoint metadata cannot be used ({exc}). "
                "It is left untouched in the file; new checkpoints are kept in the kernel "
                "and will not replace it until you reset it with `%tactus reset`."
            )
            self.comm.send({"op": "warning", "message": self.warning})
            return
        # The kernel is the source of truth for what it already ran; the
        # notebook fills in the rest (typically: everything, after a restart).
        for key, rec in stored.items():
            self.records.procedures.setdefault(key, rec)
        self.records.recount()
        # Send what the notebook lacks or has older (a page reloaded while
        # this kernel ran on), so the frontend shows what replay will use.
        mine = {key for key, rec in self.records.procedures.items() if stored.get(key) != rec}
        self.records.dirty.update(mine)
        self.flush()

    def _closed(self, msg: dict[str, Any]) -> None:
        # Only the current comm: a frontend that reopens (after a reconnect)
        # may close its old comm after the new one is open.
        if self.comm is not None and msg["content"].get("comm_id") in (None, getattr(self.comm, "comm_id", None)):
            self.comm = None

    def _received(self, msg: dict[str, Any]) -> None:
        """Requests a frontend sends on the comm; unknown ops are ignored.

        ``{"op": "reset", "procedures": [KEY, ...]}`` (no ``procedures``: all)
        forgets those records, as ``Runtime.reset`` does, and answers with a
        ``delete`` op naming every key asked for, known here or not, so the
        frontend drops it from the notebook too. A reset of everything always
        gets a ``delete`` answer, even an empty one.

        With ``"from": {KEY: index}`` (a card's **Ask again**), each named
        procedure known here forgets only its checkpoint at ``index`` and
        every later one, and is answered with an ``update`` op carrying what
        is left; a procedure without an index (or unknown here) is forgotten
        whole, as without ``from``.
        """
        if self.comm is None:
            return
        try:
            data = parse_op(msg.get("content", {}).get("data"))
        except CommInputError as exc:
            self._refuse(self.comm, f"Tactus: {exc}")
            return
        if data is None:
            return
        keys = data["procedures"]
        every = keys is None
        if every:
            keys = list(self.records.procedures)
        start = data.get("from") or {}
        if not (isinstance(start, dict) and all(_is_index(i) for i in start.values())):
            self._refuse(
                self.comm,
                'Tactus: reset\'s "from" must map procedure names to checkpoint indexes (0 or more), '
                f"got {json.dumps(start)[:80]}",
            )
            return
        truncated = [k for k in keys if k in start and self._forget_from(k, start[k])]
        keys = [k for k in keys if k not in truncated]
        self.records.delete(keys)
        self.records.deleted.update(keys)
        self.flush()
        if every and not keys:
            self.comm.send({"op": "delete", "procedures": []})

    def _forget_from(self, key: str, index: int) -> bool:
        """Drop the checkpoint at `index` and every later one of a known
        procedure (a nested key names a child's record); False if unknown."""
        rec = self.records.lookup(key)
        if rec is None:
            return False
        del rec["checkpoints"][index:]
        self.records.touch(key)
        return True

    @staticmethod
    def _refuse(comm: Any, message: str) -> None:
        """Bad input from a frontend: a warning op back and a line in the kernel's log."""
        log.warning("%s", message)
        comm.send({"op": "warning", "message": message})

    def changed(self) -> None:
        """Coalesce updates: about one message per UPDATE_DELAY.

        The timer covers a procedure that waits (the event loop runs); a
        procedure that computes without yielding never lets the timer fire,
        so the recording path itself sends once UPDATE_DELAY has passed since
        the last send: a kill loses at most the last UPDATE_DELAY of records."""
        if self.comm is None:
            return
        if time.monotonic() - self._sent_at >= UPDATE_DELAY:
            self.flush()
            return
        if self._scheduled is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._scheduled = loop.call_later(UPDATE_DELAY, self.flush)

    def flush(self) -> int:
        """Send pending changes now; returns how many messages went out."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self.comm is None:
            return 0
        ops = self.records.take_changes()
        for op in ops:
            self.comm.send(op)
        if ops:
            self._sent_at = time.monotonic()
        return len(ops)


class NotebookHost:
    """Outputs of one cell, sent on IOPub under that cell's parent header."""

    def __init__(self, kernel: Any, parent: dict[str, Any], channel: RecordsChannel) -> None:
        self.kernel = kernel
        self.parent = parent
        self.channel = channel
        # Every message sent for the cell names it, so that a page which did
        # not send the request (the notebook was closed and reopened while
        # the cell waited) still puts the output in its cell; see
        # labextension/src/orphans.ts. Message metadata, not output metadata:
        # nothing of it is saved in the notebook.
        cell_id = (parent.get("metadata") or {}).get("cellId")
        named = isinstance(cell_id, str) and cell_id
        self.metadata: dict[str, Any] = {"cellId": cell_id, "executionCount": kernel.execution_count} if named else {}
        self._buffers: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._sent = 0
        self._truncated = False
        self._cards: dict[int, Any] = {}  # cards answered, until their answer is recorded

    def _send(self, msg_type: str, content: dict[str, Any]) -> None:
        display_id = (content.get("transient") or {}).get("display_id")
        if msg_type == "display_data" and display_id:
            # Kept in the output's own metadata, which the notebook saves: a
            # page reopened while a card waits learns the display id from the
            # saved output, so the card's later update_display_data finds it
            # (labextension/src/orphans.ts). Transient data is never saved.
            content = {**content, "metadata": {**(content.get("metadata") or {}), "tactus": {"display_id": display_id}}}
        self.kernel.session.send(
            self.kernel.iopub_socket,
            msg_type,
            content,
            parent=self.parent,
            ident=self.kernel._topic(msg_type),
            metadata=self.metadata,
        )

    def write(self, stream: str, text: str) -> None:
        if self._truncated:
            return
        if self._sent + self._buffered + len(text) > MAX_CELL_OUTPUT:
            room = max(0, MAX_CELL_OUTPUT - self._sent - self._buffered)
            self._buffers[stream].append(text[:room])
            self._buffers["stderr"].append(
                f"\n[output truncated: this cell printed more than {MAX_CELL_OUTPUT // 2**20} MiB; "
                "the rest is dropped so the notebook stays usable]\n"
            )
            self._truncated = True
            self.flush()
            return
        self._buffers[stream].append(text)
        self._buffered += len(text)
        now = time.monotonic()
        if self._buffered >= FLUSH_BYTES or now - self._last_flush >= FLUSH_SECONDS:
            self.flush()
        elif self._flush_timer is None:
            # text printed just after a flush must not wait for the next output
            # (a procedure whose spawned children wait for humans prints nothing more)
            try:
                self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:
                pass

    def flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for name, parts in self._buffers.items():
            if parts:
                text = "".join(parts)
                parts.clear()
                self._send("stream", {"name": name, "text": text})
                self._sent += len(text)
        self._buffered = 0
        self._last_flush = time.monotonic()

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, display_id: str | None = None
    ) -> None:
        self.flush()
        transient = {"display_id": display_id} if display_id else {}
        self._send("display_data", {"data": data, "metadata": metadata or {}, "transient": transient})

    def update_display(self, data: dict[str, Any], display_id: str, metadata: dict[str, Any] | None = None) -> None:
        """Replace what an earlier ``display(..., display_id=...)`` showed
        (an answered card, a finished timeline: static from then on)."""
        self.flush()
        self._send(
            "update_display_data", {"data": data, "metadata": metadata or {}, "transient": {"display_id": display_id}}
        )

    def records_changed(self) -> None:
        self.channel.changed()

    @property
    def cell_id(self) -> str | None:
        """The id JupyterLab sends with the cell's execute request, if any."""
        cell_id = (self.parent.get("metadata") or {}).get("cellId")
        return cell_id if isinstance(cell_id, str) else None

    # ------------------------------------------------------ human requests
    async def ask_human(self, req: Any) -> Any:
        """Show a live card and wait for its click (the event loop stays free).

        An answer, or a timeout that returns the default, is recorded at
        once by the caller, which then calls ``human_recorded``: the card
        turns static there, with the record's time and position. A timeout
        that asks again or fails, and a stopped run, turn it static here.

        With no widget manager connected (nbconvert, papermill, nbclient, a
        terminal frontend) nobody can ever click, so the request fails at
        once with how to answer it instead of waiting out a cell timeout.
        """
        from tactus_kernel.jupyter import cards

        if not self.kernel.widget_frontend:
            from tactus_kernel.engine.runtime import BridgeError

            raise BridgeError(cards.no_widgets_message(req))
        self.flush()
        card = cards.Card(req, self, self.cell_id)
        try:
            value = await card.wait()
        except BaseException:
            timed_out = card.timed_out()
            if timed_out and req.on_timeout == "default":
                self._cards[id(req)] = card
            else:
                card.settle("timed_out" if timed_out else "stopped")
            raise
        self._cards[id(req)] = card
        return value

    def human_recorded(self, req: Any, entry: dict[str, Any], index: int | None) -> None:
        """The answer of a card shown by ``ask_human`` is in the record."""
        card = self._cards.pop(id(req), None)
        if card is not None:
            card.settle(
                "timed_out" if entry.get("timed_out") else "answered", entry.get("value"), entry.get("at"), index
            )

    def show_answered(self, req: Any, entry: dict[str, Any], index: int | None = None) -> None:
        """A replayed answer, shown static (live runs and batch replays alike)."""
        from tactus_kernel.jupyter import cards

        cards.answered(req, entry, self, index, self.cell_id)

    def notice(self, notice: dict[str, Any]) -> None:
        from tactus_kernel.jupyter import cards

        cards.notice(notice, self)
