"""The ``layca-optax`` command line (also ``python -m layca_optax``): the
arguments parsed, ``--out`` checked, the command run, stopped on signals."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from layca_optax.experiments._commands import COMMANDS
from layca_optax.experiments._interrupt import run_interruptible
from layca_optax.experiments._parser import PROG, build_parser


def _check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Exits with a one-line error (status 2) unless ``out`` is a folder
    that can be written, or can be created (its parent exists), before
    any training. Nothing is left behind: a file written to try, or a
    folder created to try, is removed (the folder is made when the
    outputs are written, so that an interrupted run leaves no trace)."""
    try:
        if out.is_symlink() and not out.exists():
            parser.error(f"--out {out} is a broken symbolic link")
        if out.exists() and not out.is_dir():
            parser.error(f"--out {out} exists and is not a directory")
        if out.is_dir():
            if not os.access(out, os.W_OK | os.X_OK):
                parser.error(f"--out {out} is not writable")
            _try_writing(parser, out)
            return
        parent = out.absolute().parent
        if not parent.exists():
            parser.error(f"--out {out}: the folder {parent} does not exist")
        if not parent.is_dir():
            parser.error(f"--out {out}: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            parser.error(f"--out {out}: {parent} is not writable")
        try:
            out.mkdir()
        except OSError as e:
            parser.error(f"--out {out}: cannot create it: {e.strerror or e}")
        out.rmdir()
    except OSError as e:  # a name too long, a folder that cannot be read
        parser.error(f"--out {out}: {e.strerror or e}")


def _try_writing(parser: argparse.ArgumentParser, out: Path) -> None:
    """Writes and removes a file in the folder ``out``."""
    try:
        fd, name = tempfile.mkstemp(dir=out, prefix=".layca-optax-check-")
    except OSError as e:
        parser.error(f"--out {out}: cannot write into it: {e.strerror or e}")
    os.close(fd)
    os.unlink(name)


_LOADED = {
    "demo": "_demo",
    "reproduce": "_runner",
    "report": "reproduce",
    "modular": "_modular_train",
}
"""The module (and so JAX) each command needs, imported before it runs."""


def _load(command: str) -> None:
    """Imports what ``command`` trains or draws while a signal still ends
    the process at once (``layca_optax._early_signals``): within
    :func:`~layca_optax.experiments._interrupt.stop_on_signals`, a signal
    raised as an exception inside JAX's import could be ignored or crash
    it. A missing extra is left for the command to report."""
    with contextlib.suppress(ImportError):
        importlib.import_module(f"layca_optax.experiments.{_LOADED[command]}")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.out:  # every command has --out
        _check_out(parser, args.out)
    return COMMANDS[args.command](parser, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``layca-optax``.

    SIGINT (Ctrl-C) and SIGTERM stop it within seconds, worker processes
    included: it prints one line (``layca-optax: interrupted (SIGINT)``)
    and exits with 130 (SIGINT) or 143 (SIGTERM), leaving only complete
    files (called with ``argv``, it returns the status instead). The
    command's handlers are in place before this runs, before JAX is
    imported (``layca_optax/_early_signals.py``); called without ``argv``,
    this installs them itself.

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
    _load(args.command)
    command = lambda: _run(parser, args)
    return run_interruptible(PROG, command, exit_now=program)
