"""``tactus-kernel replay``: re-run a recorded notebook in CI, headless.

Every human request is answered from the notebook's recorded checkpoints
(or from ``--answer``), so a replay never waits for a person; what it
cannot answer, and any call that differs from the record, ends the replay
with a distinct exit code and one line that says where. See docs/replay.md.

Exit codes: see exit_codes.py (one place) and docs/replay.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any, NoReturn

from tactus_kernel.replay.exit_codes import ExitCode, usage_summary
from tactus_kernel.replay.params import (
    InputError,
    load_parameters_file,
    parse_answers,
    parse_parameters,
    parse_procedure_params,
)

# --strict records nothing new, so flags that would record something contradict it.
STRICT_CONFLICT = "strict mode records nothing new: it cannot be combined with {answer} or {divergence}"


class _ReplayArgumentParser(argparse.ArgumentParser):
    """Usage errors exit 4, not argparse's 2: exit 2 means "a human request
    has no recorded answer", and CI scripts tell the two apart."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.INPUT, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error("unrecognized arguments: " + " ".join(extra))
        return ns, extra


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on the ``tactus-kernel`` command (cli.py calls this)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="run every cell of a recorded notebook, answering human requests from its checkpoints",
        description=(
            "Run every cell of NOTEBOOK on the Tactus kernel, answering each human request from the "
            "notebook's recorded checkpoints (metadata.tactus); never waits for a person. " + usage_summary()
        ),
    )
    # Same parser object, stricter usage errors (see _ReplayArgumentParser).
    p.__class__ = _ReplayArgumentParser
    p.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb to replay")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", metavar="OUT", help="write the executed notebook there ('-' for stdout)")
    out.add_argument("--inplace", action="store_true", help="write the executed notebook over NOTEBOOK")
    p.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a Lua global in a cell injected after the cell tagged `parameters` (VALUE read as JSON "
        "when it parses, else as a string); repeatable",
    )
    p.add_argument(
        "-f",
        "--parameters-file",
        dest="parameter_files",
        action="append",
        default=[],
        metavar="PARAMS.yaml",
        help="a YAML mapping of parameters, as -p (which wins); repeatable",
    )
    p.add_argument(
        "-P",
        "--procedure-param",
        dest="procedure_params",
        action="append",
        default=[],
        metavar="PROC.KEY=VALUE",
        help="a param of the procedure PROC when its cell runs it; repeatable",
    )
    p.add_argument(
        "--answer",
        dest="answers",
        action="append",
        default=[],
        metavar="NAME_OR_MESSAGE=VALUE",
        help="answer a human request that has no recorded answer (key: its hitl name or its message); repeatable",
    )
    p.add_argument(
        "--answers",
        dest="answer_files",
        action="append",
        default=[],
        metavar="FILE.json",
        help="a JSON object of answers, as --answer (which wins)",
    )
    p.add_argument(
        "--allow-divergence",
        action="store_true",
        help="when the code asks for other calls than recorded, drop the record from there on and record anew",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="a dry run: any call not in the record (a step, an agent turn, a sleep, a human request, a child "
        "procedure) fails the replay with exit code 2 instead of running live; no model is ever called",
    )
    p.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="fail a cell that runs longer than S seconds"
    )
    p.add_argument(
        "--startup-timeout", type=float, default=60.0, metavar="S", help="give the kernel S seconds to start (60)"
    )
    p.add_argument("--cwd", metavar="DIR", help="the kernel's working folder (default: the notebook's folder)")
    p.add_argument(
        "--events",
        metavar="FILE.jsonl",
        help="append the audit trail (runs, steps, human answers, agent turns) as JSON lines; see docs/telemetry.md",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary; errors only")
    p.set_defaults(func=run)
    return p


class Progress:
    """Per-cell progress on stderr, only where a person is watching."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled

    def __call__(self, report: Any, total: int) -> None:
        if not self.enabled:
            return
        procs = ", ".join(report.procedures) if report.procedures else "-"
        what = "parameters" if report.injected else procs
        status = "" if report.status == "ok" else f"  {report.status.upper()}"
        self.stream.write(f"  cell {report.number}/{total}  {what}  {report.elapsed:.2f}s{status}\n")
        self.stream.flush()


def _fail_input(message: str) -> ExitCode:
    sys.stderr.write(f"tactus-kernel replay: {message}\n")
    return ExitCode.INPUT


def _skip_slow_optional_imports() -> None:
    """Save ~3 s per replay where rfc3987-syntax is installed (JupyterLab
    pulls it in through jupyter-events). nbformat imports jsonschema, which
    imports rfc3987_syntax when present, and that builds an Earley parser at
    import time. Nothing a replay does checks IRI formats, so this process
    (our own command, never a host like pytest) declines that import."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> ExitCode:
    """The ``replay`` subcommand; returns the exit code."""
    _skip_slow_optional_imports()
    from tactus_kernel.replay.outcome import ReplayOptions

    try:
        parameters: dict[str, Any] = {}
        for path in args.parameter_files:
            parameters.update(load_parameters_file(path))
        parameters.update(parse_parameters(args.parameters))
        options = ReplayOptions(
            answers=parse_answers(args.answers, args.answer_files),
            procedure_params=parse_procedure_params(args.procedure_params),
            parameters=parameters,
            allow_divergence=args.allow_divergence,
            strict=args.strict,
            timeout=args.timeout if args.timeout and args.timeout > 0 else None,
            startup_timeout=args.startup_timeout,
            cwd=args.cwd,
            events=str(Path(args.events).resolve()) if args.events else None,
        )
    except InputError as exc:
        return _fail_input(str(exc))
    if args.strict and (options.answers or args.allow_divergence):
        return _fail_input(STRICT_CONFLICT.format(answer="--answer", divergence="--allow-divergence"))
    if args.cwd and not Path(args.cwd).is_dir():
        return _fail_input(f"--cwd {args.cwd}: no such folder")
    if args.events and not Path(args.events).resolve().parent.is_dir():
        return _fail_input(f"--events {args.events}: its folder does not exist")
    output = args.notebook if args.inplace else args.output
    if output and output != "-" and not Path(output).resolve().parent.is_dir():
        return _fail_input(f"-o {output}: its folder does not exist")
    return replay_file(args.notebook, output, options, quiet=args.quiet)


def replay_file(
    notebook: str, output: str | None, options: Any, quiet: bool = False, stderr: IO[str] | None = None
) -> ExitCode:
    """Replay one notebook file, write the result, print the outcome."""
    from tactus_kernel.replay.notebook_io import check_notebook_bytes, serialise_notebook, write_notebook
    from tactus_kernel.replay.runner import replay_notebook

    err = stderr or sys.stderr

    def warn(message: str) -> None:
        if not quiet:
            err.write(f"tactus-kernel replay: warning: {message}\n")

    progress = Progress(err, enabled=not quiet and err.isatty())
    try:
        run = _run_async(replay_notebook(notebook, options, notebook, on_warning=warn, on_cell=progress))
    except InputError as exc:
        return _fail_input(str(exc))
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.write(f"tactus-kernel replay: {notebook}: interrupted; the kernel was shut down\n")
        return ExitCode.INTERRUPTED
    result, nb = run.result, run.notebook
    if not run.writable:
        output = None  # the kernel's records cannot be written (see describe_failure): nothing is
    if output:
        try:
            if output == "-":
                data = serialise_notebook(nb)
                check_notebook_bytes(data, nb)
                out = getattr(sys.stdout, "buffer", None)
                if out is not None:
                    out.write(data)
                else:  # a replaced stdout (a host capturing it) takes text
                    sys.stdout.write(data.decode("utf-8"))
                sys.stdout.flush()
            else:
                write_notebook(nb, output)
        except InputError as exc:
            err.write(f"tactus-kernel replay: {notebook}: nothing written to {output}: {exc}\n")
            return ExitCode.INPUT
        except OSError as exc:
            err.write(f"tactus-kernel replay: cannot write {output}: {exc.strerror or exc}\n")
            if result.failure is None:
                return ExitCode.INPUT
    for w in result.warnings:
        warn(w)
    if run.message is not None:
        err.write(run.message + "\n")
        return run.exit_code
    if not quiet:
        where = f", wrote {output}" if output and output != "-" else ""
        cells = f"{len(result.cells)} cell{'' if len(result.cells) == 1 else 's'}"
        err.write(f"tactus-kernel replay: {notebook}: {cells} ran in {result.elapsed:.1f}s{where}\n")
    return ExitCode.OK


def _run_async(coro: Any) -> Any:
    """asyncio.run, plus SIGTERM handled like Ctrl-C (cancel, shut the
    kernel down, exit 130): a CI runner cancelling a job sends SIGTERM."""

    async def main() -> Any:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        installed = False
        if os.name == "posix":
            with contextlib.suppress(RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
                installed = True
        try:
            return await task
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())
