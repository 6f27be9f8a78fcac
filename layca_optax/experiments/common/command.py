"""What every ``layca-optax`` command shares: :class:`Command` (how the
command line knows a study's commands), the checks of ``--out`` and of
the extras, and the options of the commands that train several seeds.
Imports nothing heavy."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from layca_optax.experiments.common import limits
from layca_optax.experiments.common.argtypes import int_range, path


Run = Callable[[argparse.ArgumentParser, argparse.Namespace], int]
"""A command's function: ``run(parser, args)`` returns the exit status."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``layca-optax`` command, as a study's ``command`` module
    declares it (it imports no JAX: ``--help`` builds every parser).

    Attributes:
      name: the command, ``layca-optax NAME``.
      help: its line in ``layca-optax --help``.
      description: its own ``--help``'s text.
      add_arguments: adds its options to its parser.
      run: ``"module:function"``, the :data:`Run` of the command: the
        module (the study's ``main``, which imports JAX) is imported once
        the arguments are parsed, before the command runs.
      needs: the extras (modules) it needs, given the arguments.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[Any], None]
    run: str
    needs: Callable[[argparse.Namespace], Sequence[str]]

    def load(self) -> Run:
        """Imports the command's module; returns its function."""
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


def check_out(parser: argparse.ArgumentParser, out: Path) -> None:
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


_EXTRA_HINT = (
    "It needs the examples extra: pip install '.[examples]' in a clone of "
    "the repository"
)


def missing(command: str, needed: Sequence[str]) -> bool:
    """Prints which extras are missing, if any."""
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"layca-optax {command}: missing {', '.join(missing)}. "
            f"{_EXTRA_HINT}",
            file=sys.stderr,
        )
    return bool(missing)


def check_outputs(
    parser: argparse.ArgumentParser,
    out: Path,
    files: Iterable[str] = (),
    folders: Iterable[str] = (),
) -> None:
    """Exits (status 2) if something in ``out`` is in the way of the
    outputs: a folder where a file is written (``files``, relative to
    ``out``), or a file or broken link where a folder is (``folders``).
    :func:`check_out` checked that ``out`` is, or can be created as, a
    writable folder; it is created when the outputs are written (an interrupted
    run leaves nothing)."""
    try:
        for name in folders:
            path = out / name
            if (path.is_symlink() or path.exists()) and not path.is_dir():
                parser.error(
                    f"--out {out}: {name} exists and is not a directory"
                )
        for name in files:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                parser.error(
                    f"--out {out}: {name} is a directory, where a file is "
                    "written"
                )
    except OSError as e:
        parser.error(f"--out {out}: {e.strerror or e}")


def last_seed(
    parser: argparse.ArgumentParser, args: argparse.Namespace, base: Any
) -> int:
    """The number of seeds (``--seeds``, else ``base.seeds``'s); exits
    (status 2) unless the seeds ``--seed .. --seed + --seeds - 1`` are at
    most ``MAX_SEED``."""
    count = len(base.seeds) if args.seeds is None else args.seeds
    last = args.seed + count - 1
    if last > limits.MAX_SEED:
        parser.error(
            f"argument --seed: the seeds {args.seed}..{last} must be at most "
            f"{limits.MAX_SEED}"
        )
    return count


def add_seeds_and_jobs(sub: Any, seeds: int, quick: int, first: int) -> None:
    """The ``--seeds``, ``--seed`` and ``--jobs`` options of a command that
    trains several seeds (``seeds`` by default, ``quick`` with --quick)."""
    sub.add_argument(
        "--seeds",
        type=int_range(1, limits.MAX_SEEDS),
        default=None,
        metavar="N",
        help=f"seeds per configuration, at most {limits.MAX_SEEDS} "
        f"(default: {seeds}, or {quick} with --quick)",
    )
    sub.add_argument(
        "--seed",
        type=int_range(0, limits.MAX_SEED),
        default=first,
        help="the first seed; runs use SEED .. SEED+N-1, at most "
        f"{limits.MAX_SEED} (default: %(default)s)",
    )
    sub.add_argument(
        "--jobs",
        type=int_range(1, limits.max_jobs()),
        default=limits.default_jobs(),
        metavar="N",
        help="worker processes; results do not depend on it (default: "
        f"%(default)s, the CPUs up to {limits.MAX_JOBS}; at most "
        f"{limits.max_jobs()} here)",
    )


def add_out(sub: Any, default: str) -> None:
    """The ``--out`` option of a command whose outputs go to a folder
    (``default`` unless given)."""
    sub.add_argument(
        "--out",
        type=path,
        default=Path(default),
        metavar="DIR",
        help="the output folder (created if its parent exists; default: "
        "%(default)s)",
    )
