"""Worker processes that stop with their parent: at once when it is
interrupted, by themselves when it is killed."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar


Item = TypeVar("Item")

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker_init(parent: int) -> None:
    """Runs first in each worker: one XLA CPU thread pool of its own (the
    parent's flags kept), no reaction to a terminal's Ctrl-C (the parent
    kills the workers), and an exit as soon as the parent is gone."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # POSIX; see _spawning
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    threading.Thread(
        target=_exit_with_parent, args=(parent,), daemon=True
    ).start()


def _exit_with_parent(parent: int) -> None:
    """Ends this process once ``parent`` is no longer its parent (it died,
    even by SIGKILL, and this process was re-parented)."""
    while os.getppid() == parent:
        time.sleep(0.25)
    os._exit(1)


@contextlib.contextmanager
def _spawning() -> Iterator[None]:
    """Blocks SIGINT and SIGTERM in this thread while workers start: they
    inherit the mask, so a Ctrl-C reaching them before :func:`_worker_init`
    is dropped instead of printing a traceback. This process still gets
    both: Python runs the handler in the main thread whichever thread
    received the signal."""
    main = threading.current_thread() is threading.main_thread()
    if not main or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Kills the workers at once; queued and running calls are dropped."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    for worker in workers:
        with contextlib.suppress(ValueError, OSError):  # closed, or gone
            worker.kill()
    # The pool's thread sees them die, fails the futures and closes its
    # queues (and their semaphores); wait for it.
    pool.shutdown(wait=True, cancel_futures=True)
    for worker in workers:
        with contextlib.suppress(ValueError, OSError):
            worker.join(5.0)


def run_parallel(
    fn: Callable[[Item], Any],
    items: Sequence[Item],
    jobs: int,
    on_done: Callable[[Item, Any], None] | None = None,
) -> Iterator[tuple[Item, Any]]:
    """``fn`` of each item in ``jobs`` spawned worker processes.

    If the caller stops (an exception such as ``KeyboardInterrupt`` raised
    while this waits, or the iteration closed early), every worker is
    killed at once, running and queued calls dropped. A worker whose
    parent dies, even by SIGKILL, exits within a second.

    Args:
      fn: a picklable function (module level, or a ``functools.partial``
        of one).
      items: its arguments, one call each.
      jobs: worker processes.
      on_done: called with each item and result as soon as it is ready.

    Yields:
      ``(item, fn(item))`` in the order of ``items``.
    """
    pool = concurrent.futures.ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),  # JAX: no fork
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    try:
        with _spawning():  # the workers start on submit
            futures = {pool.submit(fn, item): item for item in items}
        if on_done is not None:
            for future in concurrent.futures.as_completed(futures):
                on_done(futures[future], future.result())
        for future, item in futures.items():
            yield item, future.result()
    except BaseException:
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_units(
    fn: Callable[[Item], Any],
    items: Sequence[Item],
    jobs: int,
    on_done: Callable[[Item, Any], None] | None = None,
) -> Iterator[tuple[Item, Any]]:
    """``fn`` of each item, in this process (``jobs`` 1) or spread over
    ``jobs`` worker processes (:func:`run_parallel`); results do not
    depend on ``jobs``.

    Args:
      fn: a picklable function (see :func:`run_parallel`).
      items: its arguments, one call each.
      jobs: worker processes (1: none).
      on_done: called with each item and result as soon as it is ready.

    Yields:
      ``(item, fn(item))`` in the order of ``items``.
    """
    if jobs > 1:
        yield from run_parallel(fn, items, jobs, on_done)
        return
    for item in items:
        result = fn(item)
        if on_done is not None:
            on_done(item, result)
        yield item, result
