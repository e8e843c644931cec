"""The Jupyter kernel: receives messages and hands them to the runtime.

Kept thin on purpose. The runtime (runtime.py) knows nothing of Jupyter;
this class turns execute/complete/inspect requests into runtime calls and
runtime results into Jupyter replies. It subclasses the bare
``kernelbase.Kernel`` rather than the IPython kernel, so start-up does not
pay for an IPython shell a Lua kernel never uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import comm
from ipykernel.comm.comm import BaseComm
from ipykernel.comm.manager import CommManager
from ipykernel.kernelbase import Kernel

from tactus_kernel import __version__
from tactus_kernel.engine.display import bundle
from tactus_kernel.engine.errors import FAILURE_KEY, CellError, internal_error
from tactus_kernel.engine.records import Records
from tactus_kernel.jupyter import completion, magics
from tactus_kernel.jupyter.notebook_host import NotebookHost, RanProcedures, RecordsChannel

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime


T = TypeVar("T")
_CONCURRENT: contextvars.ContextVar[bool] = contextvars.ContextVar("tactus_concurrent", default=False)
COMM_MESSAGES = ("comm_open", "comm_msg", "comm_close")


def _create_comm(*args: Any, **kwargs: Any) -> BaseComm:
    return BaseComm(*args, **kwargs)


class TactusCommManager(CommManager):
    """ipykernel's comm manager, quiet about comms it does not know.

    A message for an unknown comm is typically a click on a widget from
    before a kernel restart, in a page that still shows the old outputs.
    The base class prints a bare "No such comm: <id>" to IOPub, under no
    cell, for each lookup (ipykernel looks a message up twice); here the
    message is ignored with one clear line in the kernel log.
    """

    def get_comm(self, comm_id: str) -> BaseComm | None:
        return self.comms.get(comm_id)

    def comm_msg(self, stream: Any, ident: Any, msg: dict[str, Any]) -> None:
        comm_id = msg["content"].get("comm_id")
        if comm_id not in self.comms:
            self.kernel.log.warning(
                "Tactus: ignored a message for widget %s, which this kernel does not know "
                "(a widget from before a kernel restart?); re-run its cell to get a live one",
                comm_id,
            )
            return
        super().comm_msg(stream, ident, msg)


class TactusKernel(Kernel):
    implementation = "tactus"
    implementation_version = __version__
    language = "lua"
    language_version = "5.4"
    language_info = {
        "name": "lua",
        "version": "5.4",
        "mimetype": "text/x-lua",
        "file_extension": ".lua",
        "codemirror_mode": "lua",
        "pygments_lexer": "lua",
    }
    banner = f"Tactus kernel {__version__}: durable, human-in-the-loop procedures in Lua 5.4"
    help_links = [{"text": "Tactus kernel README", "url": "https://pypi.org/project/tactus-kernel/"}]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # What IPythonKernel would set up for us: a comm manager routed to
        # the shell handlers, and comm creation for ipywidgets.
        self.comm_manager = TactusCommManager(kernel=self)
        comm.create_comm = _create_comm
        comm.get_comm_manager = lambda: self.comm_manager
        for msg_type in COMM_MESSAGES:
            self.shell_handlers[msg_type] = self._with_comm_status(getattr(self.comm_manager, msg_type))
        self._cell_parent: dict[str, Any] | None = None  # the execute request running, if any
        self._runtime: Runtime | None = None
        self.records = Records()
        self.channel = RecordsChannel(self.records)
        self.channel.on_open.append(self._apply_client_options)
        self.comm_manager.register_target(RecordsChannel.TARGET, self.channel.open)
        for target in ("jupyter.widget", "jupyter.widget.control"):
            self.comm_manager.register_target(target, self._widget_target(target))
        # Whether a frontend that can show widgets (a widget manager) has
        # connected: without one nobody can ever click a card, so a request
        # with no recorded answer fails at once (nbconvert, papermill, nbclient).
        self.widget_frontend = False
        self.shell_handlers["comm_info_request"] = self._comm_info_request
        self._said_no_extension = False
        self._running: asyncio.Task[Any] | None = None
        # The request whose cell just ended and that cell's message metadata,
        # for the "idle" status that follows its reply (see _publish_status).
        self._ending: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._shutting_down = False
        self._watch_sigint()

    @property
    def runtime(self) -> Runtime:
        """The Lua runtime, built on first use (the first cell, completion or
        comm), so the kernel answers kernel_info without paying for lupa,
        the sandbox preludes and the primitives."""
        if self._runtime is None:
            from tactus_kernel.engine.sandbox import DEFAULT_MAX_MEMORY
            from tactus_kernel.features import default_runtime

            max_memory = int(os.environ.get("TACTUS_MAX_MEMORY", DEFAULT_MAX_MEMORY)) or None
            self._runtime = default_runtime(root=os.getcwd(), max_memory=max_memory, records=self.records)
        return self._runtime

    def _widget_target(self, target: str) -> Any:
        """Widget comm targets that import ipywidgets only when a frontend
        opens them (e.g. to restore widget state after a page reload)."""

        def opened(comm_: Any, msg: dict[str, Any]) -> None:
            import ipywidgets

            self.widget_frontend = True
            ipywidgets.register_comm_target()
            self.comm_manager.targets[target](comm_, msg)

        return opened

    async def _comm_info_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        """ipywidgets' widget manager asks which widget comms exist when it
        connects (its fallback to the ``jupyter.widget.control`` comm, which
        :meth:`_widget_target` sees): either says a widget manager is there."""
        content = parent.get("content")
        if isinstance(content, dict) and content.get("target_name") in ("jupyter.widget", "jupyter.widget.control"):
            self.widget_frontend = True
        await super().comm_info_request(stream, ident, parent)

    # ------------------------------------------------------- comm status
    @property
    def kernel_info(self) -> dict[str, Any]:
        """ipykernel's, without "kernel subshells".

        JupyterLab (4.4+) sends the comm messages of a kernel that offers
        subshells on a subshell, handled in a thread of its own. Widget
        clicks resolve the asyncio futures cards wait on and the ``tactus``
        comm changes the records: both belong to the event loop of the main
        thread, which stays free while a cell waits (see _with_comm_status).
        """
        info = dict(super().kernel_info)
        info["supported_features"] = [f for f in info.get("supported_features", []) if f != "kernel subshells"]
        return info

    async def dispatch_shell(self, msg: Any, /, subshell_id: str | None = None, *, concurrent: bool = False) -> None:
        token = _CONCURRENT.set(concurrent)  # a context of its own: ipykernel runs a concurrent one as a task
        try:
            await super().dispatch_shell(msg, subshell_id=subshell_id, concurrent=concurrent)
        finally:
            _CONCURRENT.reset(token)

    async def execute_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        self._cell_parent = parent  # see _publish_status
        try:
            await super().execute_request(stream, ident, parent)
        finally:
            self._cell_parent = None

    def _with_comm_status(self, handler: Any) -> Any:
        """A comm handler that publishes busy/idle even while a cell runs.

        ipykernel 7.4 handles a comm message that arrives while an async cell
        runs concurrently (``dispatch_shell(..., concurrent=True)``) and then
        publishes no status for it. The ipywidgets frontend sends a widget's
        next state change only after the ``idle`` whose parent is its last
        one, so every keystroke after the first was held back for good. Here
        such a message gets the busy/idle pair ipykernel gives any other
        message (and _publish_status then says busy again for the cell).
        """

        async def handle(stream: Any, ident: Any, msg: dict[str, Any]) -> None:
            concurrent = _CONCURRENT.get()
            if concurrent:
                self._publish_status("busy", "shell", parent=msg)
            try:
                result = handler(stream, ident, msg)
                if inspect.isawaitable(result):
                    await result
            finally:
                if concurrent:
                    self._publish_status("idle", "shell", parent=msg)

        return handle

    def _apply_client_options(self, options: dict[str, Any]) -> None:
        """Options a client may send next to the metadata when it opens the
        ``tactus`` comm (the replay client uses them; see docs/metadata.md)."""
        rt = self.runtime
        if "allow_divergence" in options:
            rt.allow_divergence = bool(options["allow_divergence"])
        if "replay" in options:
            rt.batch = bool(options["replay"])
            if rt.batch and not any(isinstance(o, RanProcedures) for o in rt.observers.all):
                rt.add_observer(RanProcedures(self.channel))
        if "strict" in options:  # for the rest of the kernel session (records.Records.strict)
            rt.records.strict = bool(options["strict"])
        if isinstance(options.get("answers"), dict):
            rt.answers = dict(options["answers"])
        if isinstance(options.get("procedure_params"), dict):
            rt.param_overrides = {k: dict(v) for k, v in options["procedure_params"].items() if isinstance(v, dict)}

    # ------------------------------------------------------------- execute
    async def do_execute(
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict[str, Any] | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        parent = self.get_parent("shell")
        host = NotebookHost(self, parent, self.channel)
        self.runtime.host = host
        label = f"[cell {self.execution_count}]"
        from tactus_kernel.engine.runtime import source_key  # loaded with the runtime, above

        key = cell_id or (cell_meta or {}).get("cellId") or source_key(code)
        if self.channel.warning:
            host.write("stderr", self.channel.warning + "\n")
            self.channel.warning = None
        try:
            if magics.is_magic(code):
                result = await magics.run(self, code, label)
            else:
                if not self.channel.connected and not self._said_no_extension and "procedure" in code:
                    self._said_no_extension = True
                    host.write(
                        "stderr",
                        "Tactus: no Tactus notebook extension is connected, so checkpoints stay in this kernel "
                        "and will not be saved into the notebook (they are lost when the kernel stops).\n",
                    )
                result = await self.interruptible(self.runtime.execute(code, label, key))
            data = bundle(result) if result and not silent else None
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every cell gets one reply: see _as_cell_error
            err = self._as_cell_error(exc, label)
            self._flush(host, label)
            self._ending = (parent, host.metadata)
            if not silent:
                self._send_error(parent, err, host.metadata)
            return {
                "status": "error",
                "execution_count": self.execution_count,
                "ename": err.ename,
                "evalue": err.evalue,
                "traceback": err.traceback,
                FAILURE_KEY: err.failure.to_json(),
            }
        self._flush(host, label)
        self._ending = (parent, host.metadata)
        if data is not None:
            assert self.session is not None
            self.session.send(
                self.iopub_socket,
                "execute_result",
                {"execution_count": self.execution_count, "data": data, "metadata": {}},
                parent=parent,
                ident=self._topic("execute_result"),
                metadata=host.metadata,
            )
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}

    def _flush(self, host: NotebookHost, label: str) -> None:
        """Send the cell's pending output and records; a failure here is
        logged, never raised: the cell's reply must still go out."""
        for flush in (host.flush, self.channel.flush):
            try:
                flush()
            except Exception:
                self.log.exception("Tactus: could not flush the output of %s", label)

    def _as_cell_error(self, exc: BaseException, label: str) -> CellError:
        """The error reply for whatever ended a cell. A CellError is the
        cell's own; anything else is a fault of the kernel, which must not
        leave the cell without a reply (the frontend would show it running
        for ever): it becomes an InternalError that says so, and its Python
        traceback goes to the kernel log only."""
        if isinstance(exc, CellError):
            return exc
        if isinstance(exc, KeyboardInterrupt):  # SIGINT outside interruptible (a magic's own work)
            return CellError.simple("KeyboardInterrupt", "interrupted by the user")
        self.log.error("Tactus: internal error in %s", label, exc_info=exc)
        return internal_error(exc, label)

    def _watch_sigint(self) -> None:
        """See SIGINT even while the main thread is inside Lua.

        Python runs signal handlers only between bytecodes of the main
        thread, which never happens during a tight Lua loop. The C-level
        handler does write the signal number to the wakeup fd at once, so a
        small thread waits on it and stops the cell from outside.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._wakeup = (reader, writer)

        def watch() -> None:
            while True:
                data = reader.recv(64)
                if not data:
                    return
                if signal.SIGINT in data:
                    self._stop_running_cell()

        threading.Thread(target=watch, name="tactus-sigint", daemon=True).start()

    def _stop_running_cell(self) -> None:
        """Arm the Lua threads and cancel the cell's task (from any thread)."""
        task = self._running
        if task is not None:
            self.runtime.interrupt()
            task.get_loop().call_soon_threadsafe(task.cancel)

    async def interruptible(self, work: Awaitable[T]) -> T:
        """Run `work` so that SIGINT stops it instead of killing the kernel.

        The SIGINT watcher arms the Lua threads (tight loops stop at the next
        instruction) and cancels the task (any await ends). The Python-level
        handler only replaces ipykernel's, which would raise
        KeyboardInterrupt at a random point of the event loop.
        """
        task = asyncio.ensure_future(work)
        previous = signal.signal(signal.SIGINT, lambda signum, frame: self._stop_running_cell())
        self._running = task
        try:
            return await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            raise self.runtime.interrupted_error() from None
        finally:
            self._running = None
            signal.signal(signal.SIGINT, previous)

    def flush_records(self) -> None:
        """Send the frontend the record changes made so far (magics.MagicHost)."""
        self.channel.flush()

    def _send_error(self, parent: dict[str, Any], err: CellError, metadata: dict[str, Any] | None = None) -> None:
        content = {
            "ename": err.ename,
            "evalue": err.evalue,
            "traceback": err.traceback,
            FAILURE_KEY: err.failure.to_json(),
        }
        assert self.session is not None
        self.session.send(
            self.iopub_socket, "error", content, parent=parent, ident=self._topic("error"), metadata=metadata
        )

    # ----------------------------------------------------- completion & co
    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:
        return completion.complete(self.runtime, code, cursor_pos)

    async def do_inspect(
        self, code: str, cursor_pos: int, detail_level: int = 0, omit_sections: Any = ()
    ) -> dict[str, Any]:
        return completion.inspect(self.runtime, code, cursor_pos, detail_level)

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        if magics.is_magic(code):
            return {"status": "complete"}
        status = self.runtime.is_complete(code)
        reply: dict[str, Any] = {"status": status}
        if status == "incomplete":
            reply["indent"] = "  "
        return reply

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self.channel.flush()
        # MCP servers the agents started: stopped, and waited for (in a thread:
        # the event loop that holds their sessions must run meanwhile)
        if self._runtime is not None:
            with contextlib.suppress(Exception):  # the reply must go out all the same
                await asyncio.to_thread(self._runtime.close, 5.0)
        # After the reply, ipykernel's control thread flushes sys.stdout and
        # sys.stderr and publishes an "idle" status, each through the IOPub
        # thread, while the main thread is already stopping that thread. A
        # flush then waits out its timeout (seen: 2.6 s exits) and a send
        # that wakes the thread can block until the kernel is killed (seen,
        # with py-spy: the main thread joining the control thread, that
        # thread blocked in the send; SIGTERM after 1.5 s in one exit of
        # three or four). So the streams are flushed now, while the thread
        # runs, the later flushes go to the process's own streams, and no
        # status is published after this (nobody waits for one).
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):  # the reply must go out all the same
                    stream.flush()
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        self._shutting_down = True
        return {"status": "ok", "restart": restart}

    def _publish_status(self, status: str, channel: str, parent: Any = None) -> None:
        """ipykernel's, with three changes.

        Quiet while shutting down (see do_shutdown). The "idle" that ends a
        cell goes under the cell's own request (comm messages handled while
        it waited changed the current parent) and with its cell id and
        execution count, so a reopened page that did not send the request
        can number the cell (labextension/src/orphans.ts). And busy again
        under a running cell after the idle of a comm message: the status bar
        shows the latest status, and the cell still runs while its card waits.
        """
        if self._shutting_down:
            return
        ending = self._ending
        if ending is not None and status == "idle" and channel == "shell" and parent is None and self.session:
            self._ending = None
            request, metadata = ending
            self.session.send(
                self.iopub_socket,
                "status",
                {"execution_state": status},
                parent=request,
                ident=self._topic("status"),
                metadata=metadata,
            )
            return
        super()._publish_status(status, channel, parent)
        cell = self._cell_parent
        if status == "idle" and channel == "shell" and cell is not None:
            done = parent or self.get_parent(channel)
            if done is not cell and (done or {}).get("header", {}).get("msg_type") in COMM_MESSAGES:
                super()._publish_status("busy", channel, cell)
