"""pytest plugin: ``pytest --tactus-replay notebooks/`` replays each notebook.

Registered through the ``pytest11`` entry point, so it is loaded by every
pytest run in an environment where tactus-kernel is installed: it must
cost nothing and collect nothing unless ``--tactus-replay`` is given. The
paths are pytest's ordinary arguments (files or folders); each ``.ipynb``
among them becomes one test item that runs the same replay as
``tactus-kernel replay`` and fails with the same message, naming the cell,
the procedure and the request. Items are independent (one kernel each),
so ``pytest -n 2`` (pytest-xdist) spreads notebooks over workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tactus", "Tactus notebook replay (tactus-kernel replay)")
    group.addoption(
        "--tactus-replay",
        action="store_true",
        default=False,
        help="collect each .ipynb under the given paths as a test that replays it on the Tactus kernel",
    )
    group.addoption(
        "--tactus-answer",
        action="append",
        default=[],
        metavar="NAME_OR_MESSAGE=VALUE",
        help="answer a human request that has no recorded answer; repeatable",
    )
    group.addoption(
        "--tactus-answers", action="append", default=[], metavar="FILE.json", help="a JSON object of answers"
    )
    group.addoption(
        "--tactus-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a notebook parameter (Lua global), as `tactus-kernel replay -p`; repeatable",
    )
    group.addoption(
        "--tactus-procedure-param",
        action="append",
        default=[],
        metavar="PROC.KEY=VALUE",
        help="a procedure param, as `tactus-kernel replay -P`; repeatable",
    )
    group.addoption(
        "--tactus-allow-divergence",
        action="store_true",
        default=False,
        help="record new calls from the first difference instead of failing",
    )
    group.addoption(
        "--tactus-strict",
        action="store_true",
        default=False,
        help="a dry run: a call not in the record fails the notebook instead of running live (no model is called)",
    )
    group.addoption(
        "--tactus-timeout",
        type=float,
        default=None,
        metavar="S",
        help="fail a notebook whose cell runs longer than S seconds",
    )
    group.addoption(
        "--tactus-startup-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="give each kernel S seconds to start (60)",
    )
    group.addoption(
        "--tactus-output-dir",
        default=None,
        metavar="DIR",
        help="write each replayed notebook into DIR (for CI artifacts)",
    )
    group.addoption(
        "--tactus-specs",
        action="store_true",
        default=False,
        help="collect each scenario of the notebooks' specifications([[...]]) as a test "
        "(see tactus_kernel/replay/specs_pytest.py)",
    )
    group.addoption(
        "--tactus-evals",
        action="store_true",
        default=False,
        help="collect each evaluations({...}) / evaluation({...}) declaration of the notebooks as a "
        "test that fails on its thresholds (see docs/evaluations.md)",
    )


_OPTIONS_KEY = pytest.StashKey[Any]()


def pytest_configure(config: pytest.Config) -> None:
    """Check the replay options once, as a usage error rather than one
    failure per notebook."""
    if not config.getoption("tactus_replay", False):
        return
    from tactus_kernel.replay.outcome import ReplayOptions
    from tactus_kernel.replay.params import InputError, parse_answers, parse_parameters, parse_procedure_params

    try:
        options = ReplayOptions(
            answers=parse_answers(
                config.getoption("tactus_answer"), config.getoption("tactus_answers"), option="--tactus-answer"
            ),
            parameters=parse_parameters(config.getoption("tactus_param"), option="--tactus-param"),
            procedure_params=parse_procedure_params(
                config.getoption("tactus_procedure_param"), option="--tactus-procedure-param"
            ),
            allow_divergence=config.getoption("tactus_allow_divergence"),
            strict=config.getoption("tactus_strict"),
            timeout=config.getoption("tactus_timeout") or None,
            startup_timeout=config.getoption("tactus_startup_timeout"),
        )
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None
    if options.strict and (options.answers or options.allow_divergence):
        from tactus_kernel.replay.command import STRICT_CONFLICT

        raise pytest.UsageError(
            STRICT_CONFLICT.format(answer="--tactus-answer", divergence="--tactus-allow-divergence")
        )
    config.stash[_OPTIONS_KEY] = options


@pytest.fixture
def tactus_kernel(tmp_path: Path) -> Any:
    """A fresh Tactus kernel in `tmp_path`, connected as a notebook in
    JupyterLab would be (records arrive, cards can be answered): a
    :class:`tactus_kernel.testing.KernelDriver`. See docs/testing.md."""
    from tactus_kernel.testing import KernelDriver

    driver = KernelDriver(tmp_path)
    driver.open_tactus(None)
    try:
        yield driver
    finally:
        driver.shutdown()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if file_path.suffix == ".ipynb" and (
        config.getoption("tactus_replay", False)
        or config.getoption("tactus_specs", False)
        or config.getoption("tactus_evals", False)
    ):
        if ".ipynb_checkpoints" in file_path.parts:
            return None
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class NotebookFile(pytest.File):
    """A notebook: one replay item."""

    def collect(self) -> Any:
        if self.config.getoption("tactus_replay", False):
            yield NotebookReplay.from_parent(self, name="replay")
        if self.config.getoption("tactus_specs", False):
            from tactus_kernel.replay.specs_pytest import spec_items

            yield from spec_items(self)
        if self.config.getoption("tactus_evals", False):
            from tactus_kernel.replay.evals_pytest import eval_items

            yield from eval_items(self)


class ReplayFailed(Exception):
    """A notebook's replay failed; the message is the CLI's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotebookReplay(pytest.Item):
    """Replays one notebook on a fresh Tactus kernel."""

    def runtest(self) -> None:
        import asyncio

        from tactus_kernel.replay.exit_codes import ExitCode
        from tactus_kernel.replay.notebook_io import write_notebook
        from tactus_kernel.replay.params import InputError
        from tactus_kernel.replay.runner import Flags, replay_notebook

        options = self.config.stash[_OPTIONS_KEY]
        label = self._label()
        flags = Flags(answer="--tactus-answer", allow_divergence="--tactus-allow-divergence")

        def warn(message: str) -> None:
            self.user_properties.append(("tactus-warning", message))

        try:
            run = asyncio.run(replay_notebook(self.path, options, label, flags, on_warning=warn))
        except InputError as exc:
            raise ReplayFailed(str(exc), ExitCode.INPUT) from None
        out_dir = self.config.getoption("tactus_output_dir")
        if out_dir and run.writable:
            target = Path(out_dir) / label
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                write_notebook(run.notebook, target)
            except InputError as exc:
                raise ReplayFailed(f"{label}: nothing written to {target}: {exc}", ExitCode.INPUT) from None
        self.user_properties.append(("tactus-cells", len(run.result.cells)))
        if run.message is not None:
            raise ReplayFailed(run.message, run.exit_code)

    def _label(self) -> str:
        try:
            return str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            return str(self.path)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, ReplayFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"tactus replay {self._label()}"
