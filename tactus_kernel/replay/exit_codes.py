"""The exit codes of ``tactus-kernel replay``, in one place (docs/replay.md).

CI scripts branch on them, so each means one thing: 2 always means "a
person has to answer something", which is why usage errors exit 4 and not
argparse's 2. Imported by the command's argument parser, so it stays free
of heavy imports (``--help`` must be quick).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a replay's exit status means."""

    OK = 0  # every cell ran
    CELL_ERROR = 1  # a cell failed (error, timeout, dead kernel) or the kernel did not start
    NO_ANSWER = 2  # a human request has no recorded answer, or (--strict) a call was not recorded
    DIVERGENCE = 3  # the replay diverged from the record
    INPUT = 4  # unusable input: not a notebook, bad parameters or options, unwritable records
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


def usage_summary() -> str:
    """The exit codes as ``--help`` lists them."""
    return (
        f"Exit codes: {ExitCode.OK:d} ok, {ExitCode.CELL_ERROR:d} a cell failed, "
        f"{ExitCode.NO_ANSWER:d} a human request has no recorded answer (or, with --strict, a call was not recorded), "
        f"{ExitCode.DIVERGENCE:d} replay diverged from the record, {ExitCode.INPUT:d} bad input, "
        f"{ExitCode.INTERRUPTED:d} interrupted."
    )
