"""The ``tactus-kernel`` command: ``install`` and ``replay``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _install(args: argparse.Namespace) -> int:
    from .kernelspec import install

    prefix = sys.prefix if args.sys_prefix else args.prefix
    where = install(user=args.user, prefix=prefix)
    print(f"Installed the Tactus (Lua) kernel spec in {where}")
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
    try:
        from .replay import add_replay_parser
    except ImportError:  # pragma: no cover - replay lands in its own module
        pass
    else:
        add_replay_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
