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
the comm, the cell ids, and a classification of what went wrong
(:class:`ReplayFailure`) that the CLI (replay.py) and the pytest plugin
both print. The kernel is owned here and shut down on every path,
including timeouts, a dead kernel and cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import os
import re
import shlex
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from tactus_kernel.engine.records import SCHEMA_VERSION
from tactus_kernel.protocol import COMM_TARGET, PROTOCOL, MetadataError, fold_op, op_version_problem, parse_metadata
from tactus_kernel.replay.params import (
    INJECTED_TAG,
    MAX_INPUT_DEPTH,
    InputError,
    deep_path_in_text,
    inject_parameters,
    json_path,
    parameters_cell_source,
    too_deep,
    unencodable,
)

KERNEL_NAME = "tactus"
ERROR_TAG = "tactus-replay-error"

# Exit codes of ``tactus-kernel replay`` (docs/replay.md).
EXIT_OK = 0
EXIT_CELL_ERROR = 1
EXIT_NO_ANSWER = 2
EXIT_NOT_RECORDED = 2  # strict mode: a call with no record (the same family as a missing answer)
EXIT_DIVERGENCE = 3
EXIT_INPUT = 4
EXIT_INTERRUPTED = 130


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


@dataclass
class ReplayOptions:
    """Everything a replay can be told; the CLI and the plugin fill it in."""

    answers: dict[str, Any] = field(default_factory=dict)
    procedure_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    allow_divergence: bool = False
    strict: bool = False  # a call with no record fails (NotRecordedError) instead of running live
    timeout: float | None = None  # per cell, seconds
    startup_timeout: float = 60.0
    cwd: str | None = None  # the kernel's working folder; default: the notebook's
    kernel_name: str = KERNEL_NAME
    events: str | None = None  # append the kernel's events here (TACTUS_EVENTS, docs/telemetry.md)


@dataclass
class CellReport:
    """One executed code cell."""

    index: int  # position in the executed notebook (0-based)
    number: int  # execution count: the notebook's ``[N]`` prompt and the kernel's ``[cell N]``
    cell_id: str | None
    source: str
    procedures: list[str] = field(default_factory=list)  # records the cell touched
    elapsed: float = 0.0
    status: str = "ok"  # ok | error | timeout | dead
    injected: bool = False


@dataclass
class ReplayFailure:
    """Why a replay stopped."""

    kind: str  # no-answer | not-recorded | divergence | error | timeout | dead-kernel | kernel-start | unwritable
    message: str  # ``ename: evalue`` or the reason
    cell: CellReport | None = None
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        codes = {
            "no-answer": EXIT_NO_ANSWER,
            "not-recorded": EXIT_NOT_RECORDED,
            "divergence": EXIT_DIVERGENCE,
            "unwritable": EXIT_INPUT,
        }
        return codes.get(self.kind, EXIT_CELL_ERROR)


@dataclass
class ReplayResult:
    notebook: NotebookNode
    recorded: dict[str, Any] | None  # metadata.tactus before the replay
    cells: list[CellReport] = field(default_factory=list)
    failure: ReplayFailure | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    kernel_pid: int | None = None
    kernel_log: str = ""  # the kernel's stderr, kept when it failed to start or died

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.failure is None else self.failure.exit_code


# ---------------------------------------------------------------- notebook I/O
def read_notebook(path: str | Path) -> NotebookNode:
    """Read a v4 notebook, or raise InputError with a one-line reason."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such notebook") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a notebook") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    try:
        nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    except RecursionError:
        deep = deep_path_in_text(text)
        where = json_path(deep) if deep is not None else "somewhere"
        raise InputError(f"{path}: nested more than {MAX_INPUT_DEPTH} levels deep at {where}") from None
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds; each means "not a notebook"
        reason = "not JSON" if type(exc).__name__ == "NotJSONError" else " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: not a Jupyter notebook ({reason})") from None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        found = nb.get("nbformat") if isinstance(nb, dict) else type(nb).__name__
        raise InputError(f"{path}: not a Jupyter notebook in format 4 (found {found!r})")
    deep = too_deep(nb)
    if deep is not None:
        raise InputError(f"{path}: nested more than {MAX_INPUT_DEPTH} levels deep at {json_path(deep)}")
    unicode_problem = lone_surrogate(nb)
    if unicode_problem is not None:
        raise InputError(f"{path}: {unicode_problem}")
    return cast(NotebookNode, nb)


def describe_place(path: list[str | int], nb: Any) -> str:
    """A place in a notebook for an error: a recorded checkpoint as
    "procedure 'p', checkpoint #3 (step 'fetch')", anything else as its JSON path."""
    if len(path) >= 6 and path[:3] == ["metadata", "tactus", "procedures"]:
        node: Any = nb["metadata"]["tactus"]["procedures"]
        key = [str(path[3])]
        node = node[path[3]]
        rest = path[4:]
        while len(rest) >= 2 and rest[0] == "children":
            key.append(str(rest[1]))
            node = node["children"][rest[1]]
            rest = rest[2:]
        if len(rest) >= 2 and rest[0] == "checkpoints" and isinstance(rest[1], int):
            from tactus_kernel.engine.records import describe_entry

            where = describe_entry("/".join(key), rest[1], node["checkpoints"][rest[1]])
            return f"{where}, at {json_path(path)}"
    return json_path(path)


def lone_surrogate(nb: Any) -> str | None:
    """Why `nb` cannot be written as UTF-8, naming the place, or None."""
    path = unencodable(nb)
    if path is None:
        return None
    return (
        f"{describe_place(path, nb)} holds text that is not valid Unicode (a lone surrogate such as "
        "\\ud800), which cannot be written to a notebook file; fix or remove it"
    )


def unwritable_metadata(meta: dict[str, Any] | None) -> str | None:
    """Why the records a kernel sent cannot go into the notebook (nested too
    deep, or text that is not Unicode), naming the place; None when they can."""
    if meta is None:
        return None
    wrapped = {"metadata": {"tactus": meta}}
    deep = too_deep(wrapped, MAX_INPUT_DEPTH)
    if deep is not None:
        return (
            f"the kernel's records are nested more than {MAX_INPUT_DEPTH} levels deep at {json_path(deep)} "
            "(a recursion too deep?); they cannot be written to the notebook, so nothing was written"
        )
    return lone_surrogate(wrapped)


def serialise_notebook(nb: NotebookNode) -> bytes:
    """The notebook as the bytes of its file. Raises InputError naming the place of a value that
    cannot be written (then nothing is written)."""
    where = lone_surrogate(nb)
    if where is not None:
        raise InputError(where)
    return nbformat.writes(nb).encode("utf-8")


def check_notebook_bytes(data: bytes, nb: NotebookNode) -> None:
    """Raise InputError unless `data` reads back as `nb` (the check before a file is replaced)."""
    back = nbformat.reads(data.decode("utf-8"), as_version=nbformat.NO_CONVERT)
    if back != nb:
        raise InputError("the notebook did not read back as written; nothing was written")


def write_notebook(nb: NotebookNode, target: str | Path) -> None:
    """Write `nb` to `target` atomically (see atomic.py): old file or new file, never a part."""
    from tactus_kernel.engine.atomic import atomic_write

    atomic_write(target, serialise_notebook(nb), check=lambda data: check_notebook_bytes(data, nb))


def prepare(nb: NotebookNode, options: ReplayOptions) -> list[str]:
    """Make `nb` ready to run: clear old outputs and error markers, inject
    parameters, check the recorded metadata. Returns warnings."""
    warnings: list[str] = []
    try:
        parse_metadata(nb.metadata.get("tactus"))
    except MetadataError as exc:
        raise InputError(f"the notebook's checkpoint metadata cannot be replayed: {exc}") from None
    nb.cells = [c for c in nb.cells if ERROR_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell.outputs = []
            cell.execution_count = None
    if options.parameters:
        declared = parameters_cell_source(nb)
        if declared is None:
            warnings.append("no cell is tagged `parameters`: the given parameters are set in a new cell at the top")
        else:
            unknown = [k for k in options.parameters if not re.search(rf"(?<![\w.]){re.escape(k)}\b", declared)]
            if unknown:
                warnings.append(f"not in the cell tagged `parameters` (set anyway): {', '.join(unknown)}")
        inject_parameters(nb, options.parameters)
    return warnings


def mark_failure(nb: NotebookNode, failure: ReplayFailure, message: str) -> None:
    """Papermill-like: a banner at the top with the whole message and a
    marker above the failing cell, both tagged so the next replay removes
    them."""
    if failure.cell is not None:
        nb.cells.insert(
            failure.cell.index,
            _marker_cell(nb, '<span style="color:red">**Replay stopped at this cell.**</span>'),
        )
    fence = "~~~~"
    banner = f'<span style="color:red">**Replay failed.**</span>\n\n{fence}\n{message}\n{fence}'
    nb.cells.insert(0, _marker_cell(nb, banner))


def _marker_cell(nb: NotebookNode, text: str) -> NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [ERROR_TAG]})
    if nb.get("nbformat_minor", 0) < 5:
        cell.pop("id", None)
    else:
        cell["id"] = f"{ERROR_TAG}-{uuid.uuid4().hex[:8]}"
    return cell


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
        graceful = result.failure is None or result.failure.kind in _CELL_FAILURES
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


def local_sockets() -> tuple[tempfile.TemporaryDirectory[str] | None, dict[str, Any]]:
    """A new directory, and the kernel manager arguments that make its
    kernel talk over local sockets in it (no directory, no arguments on
    Windows: TCP there). The caller removes the directory after shutdown.

    Why not TCP ports: a port is picked free and bound by the kernel a
    moment later, so two kernels started side by side (replays run in
    parallel in CI, tests under pytest-xdist) could pick the same one, and
    one died with "Address already in use". Socket names in a directory of
    the kernel's own cannot collide.
    """
    if os.name == "nt":
        return None, {}
    sockets = tempfile.TemporaryDirectory(prefix="tactus-kernel-")
    return sockets, {"transport": "ipc", "ip": os.path.join(sockets.name, "kernel")}


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
        except CellExecutionError as exc:
            failure = _cell_failure(report, exc.ename, exc.evalue, _error_traceback(cell))
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
            if reply.get("status") == "error" and reply.get("ename") in _FAILURE_KINDS:
                failure = _cell_failure(report, reply["ename"], reply.get("evalue", ""), _error_traceback(cell))
        report.elapsed = time.monotonic() - t0
        report.procedures = list(client.touched)
        if failure is not None and failure.kind in _CELL_FAILURES:
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


# The errors a replay stops on even in a cell tagged raises-exception, by failure kind.
_FAILURE_KINDS = {"NoRecordedAnswer": "no-answer", "NotRecordedError": "not-recorded", "DivergenceError": "divergence"}
_CELL_FAILURES = ("no-answer", "not-recorded", "divergence", "error")


def _cell_failure(report: CellReport, ename: str, evalue: str, traceback: list[str]) -> ReplayFailure:
    kind = _FAILURE_KINDS.get(ename, "error")
    return ReplayFailure(kind, f"{ename}: {evalue}", report, ename, evalue, traceback)


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


# ---------------------------------------------------------------- reporting
_DIVERGED = re.compile(r"procedure '(?P<key>.*?)' at checkpoint #(?P<pos>\d+)")
_ROW = re.compile(r"^\s*(recorded|now):\s*(.*)$", re.MULTILINE)
_HUMAN = re.compile(r'Human\.\w+ "(?P<key>(?:[^"\\]|\\.)*)"')
_PROC_PREFIX = re.compile(r'^procedure "(?P<key>[^"]*)": ')
_POSITION = re.compile(r"^(?:\[[^\]]*\]:\d+: )+")  # where the Lua error was raised: `[cell 2]:3: `
_NO_ANSWER = re.compile(r"^(?P<text>.*? has no recorded answer)", re.DOTALL)
_KERNEL_HINT = re.compile(r'--answer (?P<json>"(?:[^"\\]|\\.)*")')


def _answer_key(evalue: str) -> str:
    """The key an answer is given under: the kernel's own hint names the
    request's hitl name (else its message); failing that, the message."""
    m = _KERNEL_HINT.search(evalue)
    if m:
        with contextlib.suppress(ValueError):
            hint = json.loads(m.group("json"))
            if isinstance(hint, str) and hint.endswith("=VALUE"):
                return hint[: -len("=VALUE")]
    hm = _HUMAN.search(evalue)
    if hm:
        with contextlib.suppress(ValueError):
            return str(json.loads('"' + hm.group("key") + '"'))
    return "MESSAGE"


def procedure_of(failure: ReplayFailure) -> str | None:
    """The procedure a failure is about, as well as it can be told."""
    m = _PROC_PREFIX.match(_POSITION.sub("", failure.evalue)) or _DIVERGED.search(failure.evalue)
    if m:
        return m.group("key")
    if failure.cell is not None and failure.cell.procedures:
        return failure.cell.procedures[-1]
    return None


def source_excerpt(source: str, evalue: str, traceback: list[str], number: int | None, context: int = 2) -> list[str]:
    """A few numbered lines of the cell, centred on the failing line when
    the error names one (``[cell N]:LINE:``)."""
    lines = source.split("\n")
    line_no: int | None = None
    if number is not None:
        pat = re.compile(rf"\[cell {number}\]:(\d+):")
        for text in [evalue, *traceback]:
            m = pat.search(text)
            if m:
                line_no = int(m.group(1))
                break
    if line_no is not None and 1 <= line_no <= len(lines):
        lo, hi = max(1, line_no - context), min(len(lines), line_no + context)
    else:
        lo, hi = 1, min(len(lines), 8)
    width = len(str(hi))
    out = []
    for i in range(lo, hi + 1):
        mark = ">" if i == line_no else " "
        out.append(f"  {mark} {i:>{width}} | {lines[i - 1]}")
    if hi < len(lines) and line_no is None:
        out.append(f"    {'':>{width}} | ... ({len(lines) - hi} more lines)")
    return out


def _divergence_table(failure: ReplayFailure, recorded: dict[str, Any] | None) -> list[str]:
    """Recorded vs new calls side by side, up to the first mismatch."""
    m = _DIVERGED.search(failure.evalue)
    rows = dict(_ROW.findall(failure.evalue))
    if not m or "recorded" not in rows or "now" not in rows:
        return ["  " + line for line in failure.evalue.splitlines()]
    key, pos = m.group("key"), int(m.group("pos"))
    entries = (((recorded or {}).get("procedures") or {}).get(key) or {}).get("checkpoints") or []
    table: list[tuple[str, str, str]] = []
    for i in range(max(0, pos - 4), pos - 1):
        if i < len(entries):
            e = entries[i]
            call = f"{e.get('kind')} {e.get('name')!r}"
            table.append((str(i + 1), call, call))
    table.append((str(pos), rows["recorded"], rows["now"]))
    w1 = max(len("recorded"), *(len(r[1]) for r in table))
    out = [f"      #  {'recorded':<{w1}}  now"]
    for n, rec, new in table:
        mark = "->" if n == str(pos) else "  "
        out.append(f"  {mark} {n:>2}  {rec:<{w1}}  {new}")
    later = len(entries) - pos
    if later > 0:
        out.append(f"         ({later} more recorded after #{pos})")
    return out


def describe_failure(
    result: ReplayResult,
    label: str,
    answer_flag: str = "--answer",
    divergence_flag: str = "--allow-divergence",
) -> str:
    """The failure as the user reads it: a headline naming the notebook,
    cell and procedure, then what to look at and how to fix it."""
    failure = result.failure
    if failure is None:
        return ""
    cell = failure.cell
    proc = procedure_of(failure)
    where = f"{label} cell {cell.number}" if cell is not None else label
    if cell is not None and cell.injected:
        where += " (injected parameters)"
    lines: list[str] = []
    if failure.kind == "no-answer":
        detail = _NO_ANSWER.match(_POSITION.sub("", failure.evalue))
        text = detail.group("text") if detail else failure.evalue
        if proc and not _PROC_PREFIX.match(text):
            text = f'procedure "{proc}": {text}'
        lines.append(f"{where}, {text}")
        lines.append(
            "  Record it: run the notebook in JupyterLab, answer the request and save the notebook; "
            f"or answer it here with {answer_flag} {shlex.quote(_answer_key(failure.evalue) + '=VALUE')}"
        )
        return "\n".join(lines)
    head = f'{where}, procedure "{proc}"' if proc else where
    if failure.kind == "divergence":
        lines.append(f"{head}: replay diverged from the recorded checkpoints")
        lines += _divergence_table(failure, result.recorded)
        if cell is not None:
            lines.append(f"  cell {cell.number} source:")
            lines += source_excerpt(cell.source, failure.evalue, failure.traceback, cell.number, context=3)
        lines.append(
            "  Re-record it (in JupyterLab: `%tactus reset "
            + (proc or "PROCEDURE")
            + f"` and run the cell), restore the code that made the record, or pass {divergence_flag} "
            "to record the new calls from the first difference on."
        )
        return "\n".join(lines)
    if failure.kind == "kernel-start":
        lines.append(f"{label}: {failure.message}")
        lines += _log_tail(result.kernel_log)
        return "\n".join(lines)
    lines.append(f"{head}: {failure.message}")
    if cell is not None:
        lines += source_excerpt(cell.source, failure.evalue, failure.traceback, cell.number)
        tb = [t for t in failure.traceback[1:] if t.strip()]
        if tb:
            lines += ["  " + t for t in tb[:12]]
    if failure.kind == "dead-kernel":
        lines += _log_tail(result.kernel_log)
    return "\n".join(lines)


def _log_tail(log: str, n: int = 15) -> list[str]:
    lines = [line for line in log.splitlines() if line.strip() and "without encryption" not in line]
    if not lines:
        return []
    return ["  kernel log (last lines):", *("    " + line for line in lines[-n:])]
