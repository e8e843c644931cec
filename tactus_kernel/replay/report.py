"""A failed replay as the user reads it: a headline naming the notebook,
cell and procedure, then what to look at and how to fix it.

Everything here is read from the failure the kernel sent as data
(:class:`tactus_kernel.engine.errors.Failure`): the procedure, the
recorded and asked calls, the request and its ``--answer`` key, the failing
line. The message text is shown, never parsed.
"""

from __future__ import annotations

import shlex
from typing import Any

from tactus_kernel.engine.errors import Failure, call_text
from tactus_kernel.engine.records import Records
from tactus_kernel.replay.outcome import ReplayFailure, ReplayResult


def procedure_of(failure: ReplayFailure) -> str | None:
    """The procedure a failure is about: the kernel's word for it, else the
    last procedure whose record the cell touched."""
    if failure.data is not None and failure.data.procedure:
        return failure.data.procedure
    if failure.cell is not None and failure.cell.procedures:
        return failure.cell.procedures[-1]
    return None


def failing_line(data: Failure | None, number: int | None) -> int | None:
    """The line of cell `number` the failure was raised at, or ran through
    (the innermost frame of that cell), or None."""
    if data is None or number is None:
        return None
    if data.cell == number and data.line is not None:
        return data.line
    return next((line for cell, line in data.trace if cell == number), None)


def source_excerpt(source: str, line_no: int | None, context: int = 2) -> list[str]:
    """A few numbered lines of the cell, centred on `line_no` when it is known."""
    lines = source.split("\n")
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


def _divergence_table(data: Failure | None, evalue: str, recorded: dict[str, Any] | None) -> list[str]:
    """Recorded vs new calls side by side, up to the first mismatch."""
    if data is None or data.position is None or data.procedure is None or data.divergence == "request":
        # an agent turn's request: the message says field by field what changed
        return ["  " + line for line in evalue.splitlines()]
    key, pos, params = data.procedure, data.position, data.divergence == "params"
    entries = (_record(recorded, key) or {}).get("checkpoints") or []
    table: list[tuple[str, str, str]] = []
    for i in range(max(0, pos - 4), pos - 1):
        if i < len(entries):
            call = call_text(entries[i])
            table.append((str(i + 1), call, call))
    table.append((str(pos), call_text(data.recorded, params), call_text(data.asked, params)))
    w1 = max(len("recorded"), *(len(r[1]) for r in table))
    out = [f"      #  {'recorded':<{w1}}  now"]
    for n, rec, new in table:
        mark = "->" if n == str(pos) else "  "
        out.append(f"  {mark} {n:>2}  {rec:<{w1}}  {new}")
    later = len(entries) - pos
    if later > 0:
        out.append(f"         ({later} more recorded after #{pos})")
    return out


def _record(recorded: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The record at `key` (a child's is nested: ``main/build#1``) in a notebook's metadata.tactus."""
    procedures = (recorded or {}).get("procedures")
    if not isinstance(procedures, dict):
        return None
    records = Records(max_bytes=None)
    records.procedures = procedures
    return records.lookup(key)


def _no_answer(failure: ReplayFailure, proc: str | None) -> tuple[str, str]:
    """What a missing answer says (``procedure "p": Human.input "Name?" has
    no recorded answer``) and the key ``--answer`` takes for it."""
    data = failure.data
    request = data.request if data is not None else None
    if data is None or request is None:
        return failure.evalue, "MESSAGE"
    text = f"{request.get('text')} has no recorded answer"
    if proc:
        text = f'procedure "{proc}": {text}'
    return text, data.answer_key or str(request.get("name") or "MESSAGE")


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
        text, key = _no_answer(failure, proc)
        lines.append(f"{where}, {text}")
        lines.append(
            "  Record it: run the notebook in JupyterLab, answer the request and save the notebook; "
            f"or answer it here with {answer_flag} {shlex.quote(key + '=VALUE')}"
        )
        return "\n".join(lines)
    head = f'{where}, procedure "{proc}"' if proc else where
    if failure.kind == "divergence":
        lines.append(f"{head}: replay diverged from the recorded checkpoints")
        lines += _divergence_table(failure.data, failure.evalue, result.recorded)
        if cell is not None:
            lines.append(f"  cell {cell.number} source:")
            lines += source_excerpt(cell.source, failing_line(failure.data, cell.number), context=3)
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
        lines += source_excerpt(cell.source, failing_line(failure.data, cell.number))
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
