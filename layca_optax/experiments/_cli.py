"""The ``layca-optax`` command line (also ``python -m layca_optax``): the
arguments parsed, ``--out`` checked, the command run, stopped on signals."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from layca_optax.experiments._commands import COMMANDS
from layca_optax.experiments._interrupt import run_interruptible
from layca_optax.experiments._parser import PROG, build_parser


def _check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Exits with a one-line error (status 2) unless ``out`` can be written,
    before any training."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} exists and is not a directory")
    folder = out if out.exists() else out.absolute().parent
    if not folder.is_dir():
        parser.error(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        parser.error(f"--out {out}: {folder} is not writable")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.out:  # every command has --out
        _check_out(parser, args.out)
    return COMMANDS[args.command](parser, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``layca-optax``.

    SIGINT (Ctrl-C) and SIGTERM stop it within seconds, worker processes
    included: it prints one line (``layca-optax: interrupted (SIGINT)``)
    and exits with 130 (SIGINT) or 143 (SIGTERM), leaving only complete
    files (called with ``argv``, it returns the status instead).

    Args:
      argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success.
    """
    parser = build_parser()
    program = argv is None  # not a call from Python: may end the process
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    command = lambda: _run(parser, args)
    return run_interruptible(PROG, command, exit_now=program)
