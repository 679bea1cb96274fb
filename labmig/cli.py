"""The ``labmig`` command line: one subcommand per job the notebooks do.

Each subcommand lives in a module of :mod:`labmig.commands` that exposes
``register(subparsers)``; this file only assembles them and turns a
:class:`~labmig.errors.LabmigError` into a clear message and an exit code.
Choices (strategies, workloads, faults) come from the registries, never from
lists written here.

    COMMAND_MODULES   module → the top-level commands it registers, in help order
    build_parser      the parser of every command, or of one (``command=``)
    main              parse, run, map errors to exit codes

A run of one command imports only the module that registers it (``labmig copy``
never loads the lab, libvirt or the simulator); ``labmig --help`` loads them all.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import LabmigError

# numpy's OpenBLAS starts worker threads that spin for a while after import,
# each taking a core from whatever runs next (such as a copy's hashing);
# labmig does no linear algebra, so one thread is all it needs.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Order is the order of `labmig --help`; tests/test_startup.py checks each module
# registers exactly the commands listed for it.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "labmig.commands.copy": ("copy",),
    "labmig.commands.migrate": ("migrate", "abort", "status"),
    "labmig.commands.cold": ("confirm", "revert", "recover"),
    "labmig.commands.compare": ("compare",),
    "labmig.commands.simulate": ("simulate",),
    "labmig.commands.lab": ("lab",),
}


def _modules_for(command: str | None) -> list[str]:
    """The modules to load for ``command``: its own, or every one (help, unknown names)."""
    owners = [module for module, names in COMMAND_MODULES.items() if command in names]
    return owners or list(COMMAND_MODULES)


def _command_word(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labmig",
        description="Hands-on labs on virtual-machine migration: live vs cold, measured.",
    )
    parser.add_argument("--version", action="version", version=f"labmig {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _modules_for(command):
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    import logging  # here, not at the top: `--help` and usage errors answer without it

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
