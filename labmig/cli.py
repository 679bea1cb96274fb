"""The ``labmig`` command line: one subcommand per job the notebooks do.

Each subcommand lives in a module of :mod:`labmig.commands` that exposes
``register(subparsers)``; this file only assembles them and turns a
:class:`~labmig.errors.LabmigError` into a clear message and an exit code.
Choices (strategies, workloads, faults) come from the registries, never from
lists written here.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .errors import LabmigError

# numpy's OpenBLAS starts worker threads that spin for a while after import,
# each taking a core from whatever runs next (such as a copy's hashing);
# labmig does no linear algebra, so one thread is all it needs.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Order is the order of `labmig --help`.
COMMAND_MODULES = (
    "labmig.commands.copy",
    "labmig.commands.migrate",
    "labmig.commands.cold",
    "labmig.commands.compare",
    "labmig.commands.simulate",
    "labmig.commands.lab",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labmig",
        description="Hands-on labs on virtual-machine migration: live vs cold, measured.",
    )
    parser.add_argument("--version", action="version", version=f"labmig {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except LabmigError as exc:
        print(f"labmig {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"labmig {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
