"""Ctrl-C (SIGINT), SIGTERM and SIGKILL on a running ``layca-optax``: one
line and exit 130 / 143, every worker process gone within seconds, no
output left behind. Each test starts the real command in a subprocess."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


pytest.importorskip("flax")
pytest.importorskip("mnist1d")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc"
    ),
]

STARTUP = 120  # seconds for the workers to appear, on a loaded machine
PROMPT = 10  # seconds to stop after the signal (the runs take far longer)
ROOT = Path(__file__).resolve().parents[2]


def _stat(pid):
    """``(state, parent pid)`` of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def _workers(parent):
    """The pids of ``parent``'s spawned worker processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        stat = _stat(entry.name)
        if stat and stat[1] == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _running(pids):
    return [p for p in pids if (_stat(p) or ("Z",))[0] not in ("Z", "X")]


@contextlib.contextmanager
def _started(args):
    """The command, started in a process group of its own (killed with its
    workers on the way out, whatever the test found)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "layca_optax", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group: what a terminal's Ctrl-C reaches
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _wait_for_workers(proc, count):
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _workers(proc.pid)
        if len(workers) >= count:
            time.sleep(1.0)  # let them start their work
            return workers
        time.sleep(0.2)
    pytest.fail(f"no {count} workers after {STARTUP} s")


def _wait_gone(pids, timeout=PROMPT):
    deadline = time.monotonic() + timeout
    while _running(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _running(pids)


def _stop(proc, signum, group=False):
    """Sends ``signum`` (to the group: as a terminal does); returns the
    seconds until the command ended and its stderr."""
    start = time.monotonic()
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    seconds = time.monotonic() - start
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers left over, if any
    return seconds, proc.communicate()[1]


def _check_one_line(err, name):
    assert "Traceback" not in err, err
    assert "leaked" not in err and "resource_tracker" not in err, err
    assert err.count("interrupted") == 1, err
    assert err.strip().splitlines()[-1] == f"layca-optax: interrupted ({name})"


def _no_files(tmp_path):
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == [], left


@pytest.mark.parametrize(
    "signum,status",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_stops_reproduce_and_its_workers(tmp_path, signum, status):
    out = tmp_path / "out"
    args = ["reproduce", "--quick", "--jobs", "2", "--out", str(out)]
    with _started(args) as proc:
        workers = _wait_for_workers(proc, 2)
        seconds, err = _stop(proc, signum)
        gone = _wait_gone(workers, timeout=5)
    assert proc.returncode == status, err
    _check_one_line(err, signum.name)
    assert seconds < PROMPT, seconds
    assert gone == []
    _no_files(tmp_path)


def test_ctrl_c_in_a_terminal_reaches_the_workers_too(tmp_path):
    out = tmp_path / "out"
    args = ["reproduce", "--quick", "--jobs", "2", "--out", str(out)]
    with _started(args) as proc:
        workers = _wait_for_workers(proc, 2)
        seconds, err = _stop(proc, signal.SIGINT, group=True)
        gone = _wait_gone(workers, timeout=5)
    assert proc.returncode == 130, err
    _check_one_line(err, "SIGINT")
    assert seconds < PROMPT, seconds
    assert gone == []
    _no_files(tmp_path)


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    args = ["reproduce", "--quick", "--jobs", "2", "--out", str(tmp_path)]
    with _started(args) as proc:
        workers = _wait_for_workers(proc, 2)
        proc.kill()  # SIGKILL: the parent runs no code at all
        proc.wait()
        assert _wait_gone(workers) == []


def test_sigint_stops_the_demo_inside_a_compiled_run(tmp_path):
    # One process; a 200-epoch run is one compiled call of a minute or more.
    out = tmp_path / "out"
    args = ["demo", "--epochs", "200", "--optimizers", "layca"]
    with _started([*args, "--out", str(out)]) as proc:
        header = proc.stdout.readline()  # printed before data and training
        assert "layca on MNIST-1D" in header, header
        time.sleep(4.0)  # into compiling or training
        seconds, err = _stop(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    _check_one_line(err, "SIGINT")
    assert seconds < PROMPT, seconds
    _no_files(tmp_path)
