"""``%tactus`` magics: the notebook's controls for records and runs.

A cell whose first line starts with ``%tactus`` is a magic cell:

    %tactus help                       this list
    %tactus records                    procedures with recorded checkpoints
    %tactus show NAME                  the checkpoints of one procedure
    %tactus reset [NAME ...]           forget checkpoints and declarations (all, or of NAME)
    %tactus run NAME [key=value ...]   run a declared procedure with params
    %tactus divergence strict|allow    stop on replay divergence (default) or re-record
    %tactus answer NAME VALUE          answer the next request NAME (its hitl key or message)
                                       without widgets, e.g. %tactus answer "Ship it?" true
    %tactus log [NAME] [--json]        the timeline events of a procedure's last run (and its children)
    %tactus test [NAME] [--scenario S] [--runs N]
                                       run the BDD specifications (see docs/composition.md)
    %tactus eval [NAME] [--runs N]     run the evaluations (see docs/evaluations.md)
    %tactus export NAME FILE.tac       write procedure NAME and what it uses as a reference .tac file
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tactus_kernel.engine.display import bundle, text_table
from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.values import UnfitJson, parse_value

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime

HELP = __doc__.split("\n\n", 1)[1] if __doc__ else ""
T = TypeVar("T")


class MagicHost(Protocol):
    """What a magic needs of the kernel that runs it (TactusKernel is one)."""

    @property
    def runtime(self) -> Runtime: ...

    def flush_records(self) -> None:
        """Send the frontend the record changes made so far."""

    async def interruptible(self, work: Awaitable[T]) -> T:
        """Run `work` so that an interrupt stops it (and not the kernel)."""
        ...


Handler = Callable[[MagicHost, list[str], str], Awaitable[list[Any]]]


def is_magic(code: str) -> bool:
    return code.lstrip().startswith("%tactus")


def magic_value(text: str, what: str = "the value") -> Any:
    """``3`` -> 3, ``true`` -> True, ``{"a":1}`` -> dict, anything else -> the text.
    JSON no cell could hold (too deep, NaN, a 100-digit integer) is a ParamError."""
    try:
        return parse_value(text, what)
    except UnfitJson as exc:
        raise CellError.simple("ParamError", str(exc)) from None


def parse_params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CellError.simple("ParamError", f"expected key=value, got {pair!r}")
        out[key] = magic_value(value, f"param '{key}'")
    return out


def _usage(message: str) -> CellError:
    return CellError("UsageError", message, [f"UsageError: {message}", HELP])


async def run(kernel: MagicHost, code: str, label: str) -> list[Any]:
    """Run the magic cell `code`: its first line names a command of COMMANDS."""
    line = code.strip().splitlines()[0]
    try:
        words = shlex.split(line)[1:]
    except ValueError as exc:
        raise _usage(f"cannot parse magic: {exc}") from None
    cmd, args = (words[0], words[1:]) if words else ("help", [])
    handler = COMMANDS.get(cmd)
    if handler is None:
        raise _usage(f"unknown %tactus command {cmd!r}")
    return await handler(kernel, args, label)


async def _help(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    kernel.runtime.host.write("stdout", HELP)
    return []


async def _records(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    runtime = kernel.runtime
    records = runtime.records.procedures
    if not records:
        runtime.host.write("stdout", "No checkpoints recorded yet.\n")
        return []
    rows = [
        {
            "procedure": key,
            "status": rec.get("status", ""),
            "checkpoints": len(rec.get("checkpoints", [])),
            "last recorded": (rec["checkpoints"][-1]["at"] if rec.get("checkpoints") else ""),
        }
        for key, rec in records.items()
    ]
    runtime.host.display({"text/plain": text_table(rows), **_html(rows)})
    return []


async def _show(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    runtime = kernel.runtime
    records = runtime.records.procedures
    if len(args) != 1 or args[0] not in records:
        raise _usage(f"%tactus show NAME, with NAME one of: {', '.join(records) or '(none recorded)'}")
    rows = [
        {"#": i + 1, "kind": e["kind"], "name": e["name"], "value": json.dumps(e.get("value"))[:60], "at": e["at"]}
        for i, e in enumerate(records[args[0]]["checkpoints"])
    ]
    runtime.host.display({"text/plain": text_table(rows) if rows else "(no checkpoints)", **_html(rows)})
    return []


async def _reset(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    runtime = kernel.runtime
    gone = runtime.reset(args or None)
    missing = [a for a in args if a not in gone]
    kernel.flush_records()
    if gone:
        runtime.host.write("stdout", f"Forgot the checkpoints of: {', '.join(gone)}\n")
    else:
        runtime.host.write("stdout", "Nothing to forget.\n")
    if missing:
        runtime.host.write("stderr", f"No record for: {', '.join(missing)}\n")
    return []


async def _run(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    if not args:
        raise _usage("%tactus run NAME [key=value ...]")
    result = await kernel.interruptible(kernel.runtime.run_procedure(args[0], parse_params(args[1:]), label))
    return [] if result is None else [result]


async def _answer(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    if len(args) != 2:
        raise _usage('%tactus answer NAME VALUE, e.g. %tactus answer "Your name?" "Ada"')
    runtime = kernel.runtime
    runtime.answers[args[0]] = magic_value(args[1], f"%tactus answer {args[0]}")
    runtime.host.write("stdout", f"The next request {args[0]!r} will be answered with {args[1]}\n")
    return []


async def _log(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    from tactus_kernel.features.timeline.log import log_command

    log_command(kernel.runtime, args)
    return []


async def _test(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    from tactus_kernel.features.specs.runner import test_command

    await kernel.interruptible(test_command(kernel.runtime, args))
    return []


async def _eval(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    from tactus_kernel.features.evaluations.command import eval_command

    await kernel.interruptible(eval_command(kernel.runtime, args))
    return []


async def _export(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    from tactus_kernel.jupyter.tacfile import export_command

    export_command(kernel.runtime, args)
    return []


async def _divergence(kernel: MagicHost, args: list[str], label: str) -> list[Any]:
    if args not in (["strict"], ["allow"]):
        raise _usage("%tactus divergence strict|allow")
    kernel.runtime.allow_divergence = args[0] == "allow"
    kernel.runtime.host.write("stdout", f"Replay divergence: {args[0]}\n")
    return []


# Each command's handler: (kernel, its arguments, the cell's label) -> values to show.
COMMANDS: dict[str, Handler] = {
    "help": _help,
    "records": _records,
    "status": _records,
    "show": _show,
    "reset": _reset,
    "run": _run,
    "answer": _answer,
    "log": _log,
    "test": _test,
    "eval": _eval,
    "export": _export,
    "divergence": _divergence,
}


def _html(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {}
    return {"text/html": bundle([rows]).get("text/html", "")}
