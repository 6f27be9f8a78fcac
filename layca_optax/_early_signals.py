"""The first code the ``layca-optax`` command runs: Ctrl-C from its first
instant.

``layca_optax/__init__.py`` imports this module before anything else, and
the console script (and ``python -m layca_optax``) imports that package
first. Importing JAX takes a second or more, and a SIGINT raised there as
``KeyboardInterrupt`` lands in JAX's garbage-collector callback (ignored:
the command then trains to the end) or breaks an extension module's import
(a crash); SIGTERM kills the process without a word. In the command line
only, this module makes either signal end the process at once instead:
one line on stderr (``layca-optax: interrupted (SIGINT)``), exit status
130 (SIGINT) or 143 (SIGTERM). Nothing needs cleaning up then: no worker
has started, no file has been written. Within the command itself,
:func:`layca_optax.experiments._interrupt.stop_on_signals` takes over.

It imports only built-in modules (``_signal``, not ``signal``, whose enums
cost 10 ms or more), so that the handlers are in place a millisecond after
the package's import starts. Library users (any other program, the
command's worker processes included) are not affected: nothing is
installed.
"""

from __future__ import annotations

import os
import sys


try:
    import _signal as signal  # built in; ``signal`` adds enums over it
except ImportError:  # not CPython
    import signal


PROG = "layca-optax"
"""The console script's name."""

MODULE = "layca_optax"
"""The package, as ``python -m`` runs it."""

_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def message(prog: str, signum: int) -> str:
    """The line printed on stderr: ``"layca-optax: interrupted (SIGINT)"``."""
    return f"{prog}: interrupted ({_NAMES.get(signum, f'signal {signum}')})"


def say(prog: str, signum: int) -> None:
    """Writes :func:`message` on stderr (after a newline on a terminal, past
    the ``^C``), the output streams flushed first. Safe in a handler that
    interrupted a write to them (their flush is skipped then)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # closed, None, or a reentrant call
            pass
    try:
        newline = "\n" if os.isatty(2) else ""
        os.write(2, f"{newline}{message(prog, signum)}\n".encode())
    except OSError:
        pass


class ExitAtOnce:
    """A handler for SIGINT and SIGTERM: :func:`say`, then ``os._exit`` with
    status ``128 + signum``. It raises nothing (no ``KeyboardInterrupt``
    that a garbage-collector callback would swallow) and nothing runs
    after it. For programs only, while they have nothing to clean up."""

    def __init__(self, prog: str):
        self.prog = prog

    def __call__(self, signum: int, frame: object) -> None:
        del frame
        say(self.prog, signum)
        os._exit(128 + signum)


def _runs(orig_argv: list[str]) -> str | None:
    """What the interpreter was started to run: ``"-m NAME"``, ``"-c"``,
    ``"-"`` (stdin), or a script's path; None for an interactive session.
    ``orig_argv`` is ``sys.orig_argv``: the interpreter's own arguments
    (``sys.argv`` is ``["-m"]`` while ``-m`` looks for its module, and a
    spawned worker gets its parent's)."""
    args = iter(orig_argv[1:])
    for arg in args:
        if arg == "--check-hash-based-pycs":
            next(args, None)
            continue
        if arg == "-":
            return "-"
        if arg.startswith("--"):  # --help, --version
            return None
        if not arg.startswith("-"):
            return arg  # a script
        flags = arg[1:]  # short options, maybe clustered: -uOm NAME, -Xdev
        for i, flag in enumerate(flags):
            if flag in "XW":
                if not flags[i + 1 :]:
                    next(args, None)  # -X dev: the value comes next
                break
            if flag == "c":
                return "-c"
            if flag == "m":
                return "-m " + (flags[i + 1 :] or next(args, ""))
    return None


def is_the_command_line(orig_argv: list[str] | None = None) -> bool:
    """Whether this process is the ``layca-optax`` command: its console
    script, or ``python -m layca_optax``.

    Args:
      orig_argv: default ``sys.orig_argv``.
    """
    if orig_argv is None:
        orig_argv = getattr(sys, "orig_argv", [])
    runs = _runs(list(orig_argv))
    if runs is None or runs in ("-", "-c"):
        return False
    if runs.startswith("-m "):
        return runs == f"-m {MODULE}"
    return os.path.basename(runs) == PROG


def install(prog: str) -> None:
    """Installs :class:`ExitAtOnce` for SIGINT and SIGTERM (in the main
    thread only: the caller's)."""
    handler = ExitAtOnce(prog)
    for signum in _NAMES:
        signal.signal(signum, handler)


def _defaults() -> bool:
    """Whether both signals have Python's default handlers (not those of
    a program that embeds this one)."""
    return (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )


if os.name == "posix" and is_the_command_line() and _defaults():
    try:
        install(PROG)
    except ValueError:  # imported outside the main thread
        pass
