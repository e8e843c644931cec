"""The one replay sequence, shared by ``tactus-kernel replay`` (command.py)
and the pytest plugin (pytest_plugin.py): read the notebook, prepare it,
run it on a fresh kernel, and on failure describe it and mark the notebook.
Each caller then writes the notebook where it was told and turns the
outcome into its own form (an exit code, a failed test item)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nbformat import NotebookNode

from tactus_kernel.replay.client import ProgressCallback, replay
from tactus_kernel.replay.exit_codes import ExitCode
from tactus_kernel.replay.notebook_io import mark_failure, prepare, read_notebook
from tactus_kernel.replay.outcome import ReplayOptions, ReplayResult
from tactus_kernel.replay.report import describe_failure


@dataclass(frozen=True)
class Flags:
    """How the caller spells the options a failure message suggests."""

    answer: str = "--answer"
    allow_divergence: str = "--allow-divergence"


@dataclass
class ReplayRun:
    """A finished replay of one notebook file."""

    notebook: NotebookNode  # as executed, marked where it failed
    result: ReplayResult
    message: str | None  # the failure as the user reads it; None when every cell ran

    @property
    def exit_code(self) -> ExitCode:
        return self.result.exit_code

    @property
    def writable(self) -> bool:
        """False when the kernel's records cannot go into the notebook: then nothing is written."""
        return self.exit_code != ExitCode.INPUT


async def replay_notebook(
    path: str | Path,
    options: ReplayOptions,
    label: str,
    flags: Flags = Flags(),
    on_warning: Callable[[str], None] | None = None,
    on_cell: ProgressCallback | None = None,
) -> ReplayRun:
    """Replay the notebook at `path`. Raises InputError (nothing ran) for
    unusable input; `on_warning` hears prepare's warnings before the kernel
    starts. `label` names the notebook in the failure message.
    Cancellation (Ctrl-C, SIGTERM) propagates after the kernel is shut down."""
    nb = read_notebook(path)
    for warning in prepare(nb, options):
        if on_warning is not None:
            on_warning(warning)
    result = await replay(nb, options, Path(path).resolve().parent, on_cell)
    message = None
    if result.failure is not None:
        message = describe_failure(result, label, flags.answer, flags.allow_divergence)
        mark_failure(nb, result.failure, message)
    return ReplayRun(nb, result, message)
