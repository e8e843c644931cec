"""The batch replay engine: run a notebook on the Tactus kernel, headless.

A replay is what JupyterLab plus the Tactus extension do when a person
runs every cell after a kernel restart, minus the person: the client opens
the ``tactus`` comm with the notebook's ``metadata.tactus`` and
``"replay": true`` (so the kernel answers human requests from the record
and fails at once on a missing answer instead of waiting), sends every
execute request with ``metadata.cellId`` set to the cell's id (so unnamed
procedures get the identity they had live), and merges the kernel's
update/delete ops back into the metadata of the executed notebook.

nbclient does the cell execution and output handling; this module adds
the comm, the cell ids, and what went wrong (:class:`ReplayFailure`, built
from the failure the kernel sends as data with its error reply), which
report.py describes for the CLI (command.py) and the pytest plugin. The
kernel is owned here and shut down on every path, including timeouts, a
dead kernel and cancellation. Reading, preparing and writing the notebook
file: notebook_io.py; the whole sequence the CLI and the plugin share:
runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from tactus_kernel.engine.errors import FAILURE_KEY, Failure
from tactus_kernel.engine.records import SCHEMA_VERSION
from tactus_kernel.jupyter.sockets import local_sockets
from tactus_kernel.protocol import COMM_TARGET, PROTOCOL, fold_op, op_version_problem
from tactus_kernel.replay.notebook_io import unwritable_metadata
from tactus_kernel.replay.outcome import STOPS_REPLAY, CellReport, ReplayFailure, ReplayOptions, ReplayResult
from tactus_kernel.replay.params import INJECTED_TAG


class CellIdKernelClient(AsyncKernelClient):
    """A kernel client that sends ``metadata.cellId`` with execute requests,
    as JupyterLab does; nbclient sends none, and the kernel keys unnamed
    procedures by cell id."""

    cell_id: str | None = None

    def execute(
        self,
        code: str,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
    ) -> str:
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": user_expressions or {},
            "allow_stdin": self.allow_stdin if allow_stdin is None else allow_stdin,
            "stop_on_error": stop_on_error,
        }
        msg = self.session.msg("execute_request", content)
        if self.cell_id:
            msg["metadata"]["cellId"] = self.cell_id
        self.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])


# ---------------------------------------------------------------- the client
class ReplayClient(NotebookClient):
    """nbclient plus the ``tactus`` comm: merges the kernel's record ops
    into ``procedures`` as they arrive with each cell's outputs."""

    def __init__(self, nb: NotebookNode, km: AsyncKernelManager, **kw: Any) -> None:
        super().__init__(nb, km=km, **kw)
        stored = nb.metadata.get("tactus")
        self.procedures: dict[str, Any] = copy.deepcopy(dict(stored.get("procedures") or {})) if stored else {}
        self.comm_id = uuid.uuid4().hex
        self.touched: list[str] = []
        self.warnings: list[str] = []
        self.comm_closed = False
        self.last_reply: dict[str, Any] | None = None
        self.idle_at: float | None = None  # when the kernel went idle for the current cell
        self.on_cell_executed = self._remember_reply

    def _remember_reply(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self.last_reply = execute_reply

    def handle_tactus(self, msg: dict[str, Any]) -> bool:
        """Apply a message of our comm; False when it is not one."""
        content = msg.get("content", {})
        if content.get("comm_id") != self.comm_id:
            return False
        if msg["msg_type"] == "comm_close":
            self.comm_closed = True
            return True
        data = content.get("data") or {}
        problem = op_version_problem(data) if isinstance(data, dict) else None
        if problem is not None:
            self.warnings.append(problem)
            return True
        touched = fold_op(self.procedures, data)
        if data.get("op") == "ran" and isinstance(data.get("procedures"), list):
            touched = [k for k in data["procedures"] if isinstance(k, str)]
        elif data.get("op") == "warning" and data.get("message"):
            self.warnings.append(str(data["message"]))
        for key in touched:
            if key not in self.touched:
                self.touched.append(key)
        return True  # ops this client does not know are ignored, as the contract says

    def process_message(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int) -> NotebookNode | None:
        if msg["msg_type"] in ("comm_msg", "comm_close") and self.handle_tactus(msg):
            return None
        if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
            self.idle_at = time.monotonic()
        return super().process_message(msg, cell, cell_index)

    async def open_tactus(self, data: dict[str, Any], timeout: float) -> None:
        """Open the comm and read IOPub until the kernel is idle after it,
        so the records the kernel sends back on open are merged first."""
        kc: Any = self.kc
        assert kc is not None
        msg = kc.session.msg("comm_open", {"comm_id": self.comm_id, "target_name": COMM_TARGET, "data": data})
        kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the kernel did not handle the tactus comm within {timeout:g}s")
            try:
                reply = await kc.get_iopub_msg(timeout=remaining)
            except Exception:  # noqa: BLE001 - queue.Empty from jupyter_client on timeout
                continue
            self.handle_tactus(reply)
            if (
                reply["msg_type"] == "status"
                and reply["parent_header"].get("msg_id") == msg_id
                and reply["content"].get("execution_state") == "idle"
            ):
                break
        if self.comm_closed:
            raise RuntimeError(
                f"the kernel closed the `{COMM_TARGET}` comm: it is not a Tactus kernel, or too old to replay"
            )

    def metadata(self, original: dict[str, Any] | None) -> dict[str, Any] | None:
        """The notebook's new ``metadata.tactus`` (None if there is none to write)."""
        if original is None and not self.procedures:
            return None
        out = dict(original or {})
        out["version"] = out.get("version", SCHEMA_VERSION)
        out["procedures"] = self.procedures
        return out


# ---------------------------------------------------------------- the replay
def _kernel_env(options: ReplayOptions) -> dict[str, Any]:
    """The kernel's environment, when the replay adds to it: ``--events``
    reaches the kernel as TACTUS_EVENTS, so one code path writes events."""
    if not options.events:
        return {}
    return {"env": {**os.environ, "TACTUS_EVENTS": options.events}}


ProgressCallback = Callable[[CellReport, int], None]


async def replay(
    nb: NotebookNode,
    options: ReplayOptions,
    notebook_dir: str | Path = ".",
    on_cell: ProgressCallback | None = None,
) -> ReplayResult:
    """Run every cell of `nb` (modified in place) and return what happened.

    `nb` must have gone through :func:`prepare`. Never raises for a cell
    or kernel failure: those are in ``result.failure``. Cancellation
    (Ctrl-C, SIGTERM) propagates after the kernel is shut down.
    """
    started = time.monotonic()
    original = copy.deepcopy(nb.metadata.get("tactus"))
    result = ReplayResult(notebook=nb, recorded=original)
    sockets, transport = local_sockets()
    km = AsyncKernelManager(
        kernel_name=options.kernel_name,
        client_class=f"{CellIdKernelClient.__module__}.{CellIdKernelClient.__name__}",
        **transport,
    )
    km.shutdown_wait_time = 3.0
    timeout = options.timeout
    client = ReplayClient(
        nb,
        km=km,
        kernel_name=options.kernel_name,
        startup_timeout=max(1, int(options.startup_timeout + 0.999)),
        timeout_func=(lambda cell: timeout) if timeout else None,
        interrupt_on_timeout=False,
        allow_errors=False,
        record_timing=False,
        store_widget_state=False,
    )
    total = sum(
        1
        for c in nb.cells
        if c.get("cell_type") == "code"
        and c.get("source", "").strip()
        and client.skip_cells_with_tag not in c.get("metadata", {}).get("tags", [])
    )
    graceful = False
    # The kernel's own log (start-up chatter, warnings) is noise in a CI
    # log, except when the kernel fails: keep it aside and show it then.
    kernel_log = tempfile.TemporaryFile()
    try:
        try:
            await asyncio.wait_for(
                client.async_start_new_kernel(
                    cwd=str(options.cwd or notebook_dir), stderr=kernel_log, **_kernel_env(options)
                ),
                options.startup_timeout,
            )
            result.kernel_pid = getattr(km.provisioner, "pid", None)
            await client.async_start_new_kernel_client()
            kc: Any = client.kc
            assert kc is not None
            info = await kc.kernel_info(reply=True, timeout=options.startup_timeout)
            if "language_info" in info.get("content", {}):
                nb.metadata["language_info"] = info["content"]["language_info"]
            await client.open_tactus(
                {
                    "tactus": original,
                    "protocol": PROTOCOL,
                    "replay": True,
                    "answers": options.answers,
                    "allow_divergence": options.allow_divergence,
                    "strict": options.strict,
                    "procedure_params": options.procedure_params,
                },
                options.startup_timeout,
            )
        except Exception as exc:  # noqa: BLE001 - NoSuchKernel, timeouts, a dead kernel: reported, not a traceback
            reason = " ".join(str(exc).split()) or type(exc).__name__
            result.failure = ReplayFailure("kernel-start", f"the {options.kernel_name} kernel did not start: {reason}")
            return result
        result.failure = await _run_cells(client, nb, total, result, on_cell)
        if result.failure is None:
            ran = {key for cell in result.cells for key in cell.procedures}
            idle = sorted(set(options.procedure_params) - ran)
            if idle:
                result.warnings.append(f"procedure params given for procedures that did not run: {', '.join(idle)}")
        graceful = result.failure is None or result.failure.kind in STOPS_REPLAY
    finally:
        result.warnings.extend(client.warnings)
        new_meta = client.metadata(original)
        problem = unwritable_metadata(new_meta)
        if problem is not None:
            result.failure = ReplayFailure("unwritable", problem)
        elif new_meta is not None:
            nb.metadata["tactus"] = new_meta
        await _shutdown(km, client, graceful)
        if result.failure is not None and result.failure.kind in ("kernel-start", "dead-kernel"):
            kernel_log.seek(0)
            result.kernel_log = kernel_log.read()[-4000:].decode("utf-8", "replace")
        kernel_log.close()
        if sockets is not None:
            sockets.cleanup()
        result.elapsed = time.monotonic() - started
    return result


async def _run_cells(
    client: ReplayClient, nb: NotebookNode, total: int, result: ReplayResult, on_cell: ProgressCallback | None
) -> ReplayFailure | None:
    kc = client.kc
    assert isinstance(kc, CellIdKernelClient)
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code" or not cell.get("source", "").strip():
            continue
        if client.skip_cells_with_tag in cell.get("metadata", {}).get("tags", []):
            continue  # nbclient's own rule (tag `skip-execution`)
        number = client.code_cells_executed + 1
        report = CellReport(
            index=index,
            number=number,
            cell_id=cell.get("id"),
            source=cell.source,
            injected=INJECTED_TAG in cell.get("metadata", {}).get("tags", []),
        )
        result.cells.append(report)
        kc.cell_id = cell.get("id")
        client.touched = []
        client.last_reply = None
        t0 = time.monotonic()
        failure: ReplayFailure | None = None
        client.idle_at = None
        try:
            await _execute_cell(client, cell, index, number)
        except _NoReply:
            report.status = "dead"
            msg = (
                "the kernel went idle without replying to this cell: an error inside the kernel "
                "(its log below says which); the kernel was stopped"
            )
            failure = ReplayFailure("dead-kernel", msg, report, "KernelError", msg)
        except CellExecutionError:
            failure = _cell_failure(report, client.last_reply, cell)
        except CellTimeoutError:
            report.status = "timeout"
            seconds = client.timeout_func(cell) if client.timeout_func else client.timeout
            msg = f"the cell did not finish within {seconds:g}s (--timeout)"
            cell.outputs.append(
                nbformat.v4.new_output(
                    "error", ename="CellTimeoutError", evalue=msg, traceback=[f"CellTimeoutError: {msg}"]
                )
            )
            failure = ReplayFailure("timeout", msg, report, "CellTimeoutError", msg)
        except DeadKernelError:
            report.status = "dead"
            msg = "the kernel died while running this cell"
            failure = ReplayFailure("dead-kernel", msg, report, "DeadKernelError", msg)
        else:
            cell.execution_count = number
            last: dict[str, Any] = client.last_reply or {}
            reply: dict[str, Any] = last.get("content") or {}
            # A cell tagged raises-exception may fail, but a missing answer or
            # a divergence is never what the notebook meant to show.
            if reply.get("status") == "error":
                failure = _cell_failure(report, last, cell)
                if failure.kind == "error":
                    failure = None
        report.elapsed = time.monotonic() - t0
        report.procedures = list(client.touched)
        if failure is not None and failure.kind in STOPS_REPLAY:
            report.status = "error"
            cell.execution_count = number
        if on_cell is not None:
            on_cell(report, total)
        if failure is not None:
            return failure
    return None


# How long a cell may go without its execute_reply once the kernel has gone
# idle for it. A kernel replies before it goes idle; one that does not hit an
# error in its message handler (ipykernel logs it and sends no reply), and a
# frontend, nbclient included, would wait for that reply forever.
NO_REPLY_GRACE = 10.0


class _NoReply(Exception):
    pass


async def _execute_cell(client: ReplayClient, cell: NotebookNode, index: int, number: int) -> None:
    task = asyncio.ensure_future(client.async_execute_cell(cell, index, execution_count=number))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                task.result()
                return
            if client.idle_at is not None and time.monotonic() - client.idle_at > NO_REPLY_GRACE:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise _NoReply()
    finally:
        if not task.done():  # we are being cancelled (Ctrl-C, SIGTERM)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _error_traceback(cell: NotebookNode) -> list[str]:
    for out in reversed(cell.get("outputs", [])):
        if out.get("output_type") == "error":
            return [str(line) for line in out.get("traceback", [])]
    return []


def _cell_failure(report: CellReport, reply: dict[str, Any] | None, cell: NotebookNode) -> ReplayFailure:
    """The failure of a cell whose reply is an error: the kernel sends what
    failed as data (FAILURE_KEY); a kernel that sends none (not a Tactus
    kernel) gets a failure of the reply's ename and evalue."""
    content: dict[str, Any] = (reply or {}).get("content") or {}
    ename, evalue = str(content.get("ename", "")), str(content.get("evalue", ""))
    data = Failure.from_json(content.get(FAILURE_KEY)) or Failure(ename or "Error", evalue)
    return ReplayFailure.of_cell(report, data, evalue, _error_traceback(cell))


async def _shutdown(km: AsyncKernelManager, client: ReplayClient, graceful: bool) -> None:
    """Stop the kernel whatever happened; a kernel left running is a leak
    that outlives the CI step. Shielded so a second Ctrl-C does not leave
    it half done."""

    async def stop() -> None:
        try:
            if client.kc is not None:
                client.kc.stop_channels()
        finally:
            if km.has_kernel:
                try:
                    await km.shutdown_kernel(now=not graceful)
                except Exception:  # noqa: BLE001 - fall back to killing it
                    with contextlib.suppress(Exception):
                        await km.shutdown_kernel(now=True)
            with contextlib.suppress(Exception):
                done = km.cleanup_resources()
                if inspect.isawaitable(done):
                    await done

    await asyncio.shield(stop())
