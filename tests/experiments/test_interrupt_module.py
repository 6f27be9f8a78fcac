"""A SIGINT that lands where Python ignores exceptions (a garbage-collector
callback, as JAX registers one) still stops the command with one line."""

import subprocess
import sys
import time
from pathlib import Path

import pytest


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="POSIX signals"
)

ROOT = Path(__file__).resolve().parents[2]

_COMMAND = """
import gc, signal, sys, time
from layca_optax.experiments.common.interrupt import run_interruptible

armed = [True]

def callback(phase, info):
    if armed and phase == "start":
        armed.clear()
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # the handler runs here, inside the collector
            pass

def command():
    gc.callbacks.append(callback)
    gc.collect()
    print("collected", flush=True)
    time.sleep(30)
    return 0

sys.exit(run_interruptible("prog", command))
"""


def test_sigint_inside_a_gc_callback_stops_with_one_line():
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _COMMAND],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - start
    assert done.returncode == 130, done.stderr
    assert done.stderr == "prog: interrupted (SIGINT)\n", done.stderr
    assert seconds < 15, seconds  # not the watcher's deadline
