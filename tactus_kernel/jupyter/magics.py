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
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.display import bundle, text_table
from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.values import UnfitJson, loads

if TYPE_CHECKING:
    from tactus_kernel.jupyter.kernel import TactusKernel

HELP = __doc__.split("\n\n", 1)[1] if __doc__ else ""


def is_magic(code: str) -> bool:
    return code.lstrip().startswith("%tactus")


def parse_value(text: str, what: str = "the value") -> Any:
    """``3`` -> 3, ``true`` -> True, ``{"a":1}`` -> dict, anything else -> the text.
    JSON no cell could hold (too deep, NaN, a 100-digit integer) is a ParamError."""
    try:
        return loads(text, what)
    except UnfitJson as exc:
        raise CellError.simple("ParamError", str(exc)) from None
    except ValueError:
        return text


def parse_params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CellError.simple("ParamError", f"expected key=value, got {pair!r}")
        out[key] = parse_value(value, f"param '{key}'")
    return out


def _usage(message: str) -> CellError:
    return CellError("UsageError", message, [f"UsageError: {message}", HELP])


async def run(kernel: TactusKernel, code: str, label: str) -> list[Any]:
    line = code.strip().splitlines()[0]
    try:
        words = shlex.split(line)[1:]
    except ValueError as exc:
        raise _usage(f"cannot parse magic: {exc}") from None
    if not words or words[0] == "help":
        kernel.runtime.host.write("stdout", HELP)
        return []
    cmd, args = words[0], words[1:]
    runtime = kernel.runtime
    records = runtime.records.procedures
    if cmd in ("records", "status"):
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
    if cmd == "show":
        if len(args) != 1 or args[0] not in records:
            raise _usage(f"%tactus show NAME, with NAME one of: {', '.join(records) or '(none recorded)'}")
        rows = [
            {"#": i + 1, "kind": e["kind"], "name": e["name"], "value": json.dumps(e.get("value"))[:60], "at": e["at"]}
            for i, e in enumerate(records[args[0]]["checkpoints"])
        ]
        runtime.host.display({"text/plain": text_table(rows) if rows else "(no checkpoints)", **_html(rows)})
        return []
    if cmd == "reset":
        gone = runtime.reset(args or None)
        missing = [a for a in args if a not in gone]
        kernel.channel.flush()
        if gone:
            runtime.host.write("stdout", f"Forgot the checkpoints of: {', '.join(gone)}\n")
        else:
            runtime.host.write("stdout", "Nothing to forget.\n")
        if missing:
            runtime.host.write("stderr", f"No record for: {', '.join(missing)}\n")
        return []
    if cmd == "run":
        if not args:
            raise _usage("%tactus run NAME [key=value ...]")
        result = await kernel._interruptible(runtime.run_procedure(args[0], parse_params(args[1:]), label))
        return [] if result is None else [result]
    if cmd == "answer":
        if len(args) != 2:
            raise _usage('%tactus answer NAME VALUE, e.g. %tactus answer "Your name?" "Ada"')
        runtime.answers[args[0]] = parse_value(args[1], f"%tactus answer {args[0]}")
        runtime.host.write("stdout", f"The next request {args[0]!r} will be answered with {args[1]}\n")
        return []
    if cmd == "log":
        from tactus_kernel.features.timeline import log_command

        log_command(runtime, args)
        return []
    if cmd == "test":
        from tactus_kernel.features.specs.bdd import test_command

        await kernel._interruptible(test_command(runtime, args))
        return []
    if cmd == "eval":
        from tactus_kernel.features.evaluations.command import eval_command

        await kernel._interruptible(eval_command(runtime, args))
        return []
    if cmd == "export":
        from tactus_kernel.jupyter.tacfile import export_command

        export_command(runtime, args)
        return []
    if cmd == "divergence":
        if args not in (["strict"], ["allow"]):
            raise _usage("%tactus divergence strict|allow")
        runtime.allow_divergence = args[0] == "allow"
        runtime.host.write("stdout", f"Replay divergence: {args[0]}\n")
        return []
    raise _usage(f"unknown %tactus command {cmd!r}")


def _html(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {}
    return {"text/html": bundle([rows]).get("text/html", "")}
