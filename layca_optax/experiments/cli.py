"""The ``layca-optax`` command line (also ``python -m layca_optax``): a
thin parser over the studies' commands. Each study declares its commands
in its ``command`` module (imported without JAX, so that ``--help`` and
``--version`` stay fast); a command's own module, which trains, is
imported only when that command runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from layca_optax.experiments.common.argtypes import Parser, version
from layca_optax.experiments.common.command import (
    Command,
    Run,
    check_out,
    missing,
)
from layca_optax.experiments.common.interrupt import run_interruptible


PROG = "layca-optax"

STUDIES = (
    "demo",
    "reproduce",
    "modular",
    "lm",
)
"""The studies, each a folder of ``layca_optax.experiments`` whose
``command`` module lists its commands (``COMMANDS``), in ``--help``'s
order. A new study is its folder and one line here."""


def commands() -> list[Command]:
    """Every study's commands."""
    found = []
    for study in STUDIES:
        module = importlib.import_module(f"{__package__}.{study}.command")
        found += module.COMMANDS
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``layca-optax``."""
    parser = Parser(
        prog=PROG,
        description="Layca (layer-level controlled amount of weight "
        "rotation) for Optax: demo and tools.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {version()}"
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True
    )
    for command in commands():
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description
        )
        command.add_arguments(sub)
        sub.set_defaults(declared=command)
    return parser


def _run(
    parser: argparse.ArgumentParser, args: argparse.Namespace, run: Run
) -> int:
    if args.out:  # every command has --out
        check_out(parser, args.out)
    return run(parser, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``layca-optax``.

    SIGINT (Ctrl-C) and SIGTERM stop it within seconds, worker processes
    included: it prints one line (``layca-optax: interrupted (SIGINT)``)
    and exits with 130 (SIGINT) or 143 (SIGTERM), leaving only complete
    files (called with ``argv``, it returns the status instead). The
    command's handlers are in place before this runs, before JAX is
    imported (``layca_optax/_early_signals.py``); called without ``argv``,
    this installs them itself. The command's module (and JAX) is imported
    before it runs, while a signal still ends the process at once: a
    signal raised as an exception inside JAX's import could be ignored,
    or crash it.

    Args:
      argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success (1: an extra is missing).
    """
    parser = build_parser()
    program = argv is None  # not a call from Python: may end the process
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    command: Command = args.declared
    if missing(command.name, command.needs(args)):
        return 1
    run = command.load()
    return run_interruptible(
        PROG, lambda: _run(parser, args, run), exit_now=program
    )
