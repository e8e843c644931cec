"""The ``tactus-kernel`` command: ``install``, ``replay`` and ``import``."""

from __future__ import annotations

import argparse
import sys

from tactus_kernel import __version__


def _install(args: argparse.Namespace) -> int:
    from tactus_kernel.jupyter.kernelspec import install

    prefix = sys.prefix if args.sys_prefix else args.prefix
    where = install(user=args.user, prefix=prefix)
    print(f"Installed the Tactus (Lua) kernel spec in {where}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tactus_kernel.jupyter.tacfile import TacError, import_file

    try:
        out = import_file(Path(args.file), Path(args.output) if args.output else None)
    except TacError as exc:
        print(f"tactus-kernel import: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tactus-kernel", description="The Tactus Jupyter kernel")
    parser.add_argument("--version", action="version", version=f"tactus-kernel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install the kernel spec")
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into the user's Jupyter data folder")
    where.add_argument("--sys-prefix", action="store_true", help="into this Python environment")
    where.add_argument("--prefix", help="under this prefix")
    inst.set_defaults(func=_install)
    imp = sub.add_parser("import", help="make a notebook from a reference Tactus .tac file")
    imp.add_argument("file", help="the .tac file")
    imp.add_argument("-o", "--output", help="the notebook to write (default: FILE.ipynb beside it)")
    imp.set_defaults(func=_import)
    from tactus_kernel.replay.command import add_replay_parser

    add_replay_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
