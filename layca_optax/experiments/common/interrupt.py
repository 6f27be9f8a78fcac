"""Stopping the command line on SIGINT or SIGTERM: one line, exit 130 / 143.

Within :func:`stop_on_signals`, either signal raises :class:`Interrupted`
in the main thread, so that ``finally`` blocks run (worker processes are
killed, temporary files removed) and the command prints one line instead
of a traceback. The main thread cannot run a signal handler while it waits
inside a compiled JAX computation (a whole training run is one), so a
watcher thread, woken by the signal itself (``signal.set_wakeup_fd``),
ends the process at once if the main thread has not started unwinding
within :data:`GRACE_SECONDS`. Nothing is being written then: every output
file is written by Python code, atomically, after the computations. Python
ignores an exception raised where it cannot propagate (a garbage-collector
callback, as JAX registers one): such an :class:`Interrupted` is not
printed, and the watcher sends the signal again.

Before :func:`stop_on_signals` (while JAX and the package are imported, the
arguments parsed) and after it, in the program, :func:`exit_on_signals`
ends the process at once on either signal: there are no workers and no
files then. The ``layca-optax`` command installs it first thing, before
JAX is imported (:mod:`layca_optax._early_signals`, where the handler
and :func:`message` live): a signal raised as an exception there could
land in JAX's garbage-collector callback, and be ignored, or break an
extension module's import (a crash).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from layca_optax._early_signals import (
    ExitAtOnce,
    install,
    message as message,  # re-exported
)


GRACE_SECONDS = 2.0
"""How long the main thread has to start unwinding after a signal."""

DEADLINE_SECONDS = 15.0
"""How long unwinding may take (killing workers...) before a hard exit."""

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM.

    Attributes:
      signum: the signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """``128 + signum``, as a shell reports a death by that signal."""
        return 128 + self.signum


def exit_on_signals(prog: str) -> bool:
    """From now on, outside :func:`stop_on_signals`, SIGINT and SIGTERM end
    the process at once: :func:`message` on stderr, exit status 130 or 143.

    For programs only, before they start work that would need cleaning up
    (files, processes): the command line, from its first instant. Within
    :func:`stop_on_signals` its own handlers take over; once a signal has
    stopped it, later signals are ignored (the program is exiting, and
    has printed its one line).

    Outside the main thread, and on platforms other than POSIX, this does
    nothing.

    Args:
      prog: the program's name, for the message.

    Returns:
      Whether the handlers were installed.
    """
    if (
        os.name != "posix"
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    install(prog)
    return True


class _Watch:
    """The handler (main thread) and the watcher (its own thread)."""

    def __init__(self, prog: str):
        self.prog = prog
        self.raised = threading.Event()  # the main thread got Interrupted
        self.done = threading.Event()  # stop_on_signals has exited
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)  # as set_wakeup_fd needs
        self.previous_hook = sys.unraisablehook
        self.signum = 0  # the first signal's, once one came

    def handler(self, signum: int, frame: object) -> None:
        del frame
        self.signum = self.signum or signum
        if not self.raised.is_set():  # later signals: unwinding already
            self.raised.set()
            raise Interrupted(signum)

    def unraisable(self, unraisable: Any) -> None:
        """``sys.unraisablehook``: an :class:`Interrupted` raised where
        Python ignores exceptions (a garbage-collector callback, as JAX
        registers one; a finalizer) is not printed, and the watcher sends
        the signal again; anything else goes to the previous hook."""
        if isinstance(unraisable.exc_value, Interrupted):
            self.raised.clear()  # not raised after all
        else:
            self.previous_hook(unraisable)

    def watch(self) -> None:
        signum = 0
        while signum not in SIGNALS:
            data = os.read(self.read_fd, 1)
            if not data or self.done.is_set():
                return
            signum = data[0]
        deadline = time.monotonic() + DEADLINE_SECONDS
        if not self.raised.wait(GRACE_SECONDS):
            self.exit(signum)  # the main thread is inside a computation
        while not self.done.wait(0.1):
            if time.monotonic() > deadline:
                self.exit(signum)
            if not self.raised.is_set():  # swallowed: again (unraisable)
                main = threading.main_thread().ident
                if main is not None:
                    signal.pthread_kill(main, signum)
                if not self.raised.wait(GRACE_SECONDS):
                    self.exit(signum)

    def exit(self, signum: int) -> None:
        if self.done.is_set():
            return
        newline = "\n" if sys.stderr.isatty() else ""
        sys.stderr.write(f"{newline}{message(self.prog, signum)}\n")
        sys.stderr.flush()
        os._exit(128 + signum)


@contextlib.contextmanager
def stop_on_signals(prog: str) -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, and
    end the process (printing :func:`message`) if it does not unwind.

    Outside the main thread (where handlers cannot be set), and on
    platforms other than POSIX, this does nothing. The previous handlers
    are restored on exit.

    Args:
      prog: the program's name, for the message.
    """
    if (
        os.name != "posix"
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    watch = _Watch(prog)
    old = {s: signal.signal(s, watch.handler) for s in SIGNALS}
    old_fd = signal.set_wakeup_fd(watch.write_fd, warn_on_full_buffer=False)
    sys.unraisablehook = watch.unraisable
    thread = threading.Thread(
        target=watch.watch, name=f"{prog}-signals", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        watch.done.set()
        signal.set_wakeup_fd(old_fd)
        sys.unraisablehook = watch.previous_hook
        for s, handler in old.items():
            if watch.signum and isinstance(handler, ExitAtOnce):
                handler = signal.SIG_IGN  # exiting, its line to be printed
            signal.signal(s, handler)
        with contextlib.suppress(OSError):
            os.write(watch.write_fd, b"\0")  # wakes the watcher
        thread.join(1.0)
        os.close(watch.read_fd)
        os.close(watch.write_fd)


def run_interruptible(
    prog: str, command: Callable[[], int], *, exit_now: bool = False
) -> int:
    """Runs ``command`` within :func:`stop_on_signals`.

    Args:
      prog: the program's name, for the message.
      command: returns the exit status.
      exit_now: after a signal, end the process at once (``os._exit``, the
        output streams flushed) instead of returning: a normal exit waits,
        in JAX's clean-up, for the computation still running (a whole
        training run). For programs only, not for calls from Python;
        then, before and after ``command``, the signals end the process at
        once (:func:`exit_on_signals`), and once one has stopped it, later
        ones are ignored: one line, whatever the user presses.

    Returns:
      ``command()``'s status, or, after SIGINT or SIGTERM (printing
      :func:`message` on stderr), 130 or 143.
    """
    if exit_now:
        exit_on_signals(prog)
    try:
        with stop_on_signals(prog):
            return command()
    except KeyboardInterrupt as e:  # Interrupted, or a SIGINT just before
        code = 128 + getattr(e, "signum", signal.SIGINT)
    if exit_now:  # later signals are ignored now: a deadline instead
        deadline = threading.Timer(DEADLINE_SECONDS, os._exit, (code,))
        deadline.daemon = True
        deadline.start()
    newline = "\n" if sys.stderr.isatty() else ""
    print(newline + message(prog, code - 128), file=sys.stderr)
    if exit_now:
        # The traceback is gone: collect what the command left, so that
        # finalizers run (multiprocessing's unlink its named semaphores).
        gc.collect()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code
