"""The examples of ``docs/examples/``: each runs, prints what it promises.

Each example runs as a user runs it, ``python docs/examples/<name>.py``, in
a subprocess on CPU with tiny settings (a few steps), with warnings as
errors. The examples are short on purpose (a user copies from them): each
stays under 150 lines.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
MAX_LINES = 150


def _run(name: str, *args: str) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the sharded example sets its own
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"{name} {' '.join(args)} exited with {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_the_examples_are_the_tested_ones():
    assert _examples() == [
        "nnx_logging.py",
        "nnx_loop.py",
        "sharded_step.py",
    ], (
        "a new example in docs/examples/ needs a test here and a link in "
        "docs/examples/index.md"
    )


@pytest.mark.parametrize("name", _examples())
def test_example_is_short_and_linked(name):
    lines = (EXAMPLES / name).read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_LINES, f"{name} has {len(lines)} lines"
    index = (EXAMPLES / "index.md").read_text(encoding="utf-8")
    assert name in index, f"docs/examples/index.md does not show {name}"


@pytest.mark.slow
def test_nnx_loop(tmp_path):
    args = ["--epochs", "2", "--steps", "4"]
    plot = tmp_path / "rotation.png"
    if importlib.util.find_spec("matplotlib") is not None:
        args += ["--plot", str(plot)]
    out = _run("nnx_loop.py", *args)

    accuracy = re.search(r"^test accuracy: ([0-9.]+)$", out, re.M)
    assert accuracy, out
    assert 0.2 < float(accuracy.group(1)) <= 1.0, out  # chance is 0.1

    # The rate track_rotation recorded is the schedule's learning rate.
    lr = re.search(r"learning rate ([0-9.e+-]+)\):$", out, re.M)
    assert lr, out
    rates = re.findall(r"^  \S+/kernel +([0-9.e+-]+)$", out, re.M)
    assert len(rates) == 3, out
    for rate in rates:
        assert float(rate) == pytest.approx(float(lr.group(1)), rel=2e-2)

    rotation = dict(re.findall(r"^  rotation (\S+) +([0-9.]+)$", out, re.M))
    assert set(rotation) == {"hidden1/kernel", "hidden2/kernel", "out/kernel"}
    assert all(0 < float(v) < 1 for v in rotation.values()), out
    if "--plot" in args:
        assert plot.stat().st_size > 0


@pytest.mark.slow
def test_nnx_logging(tmp_path):
    path = tmp_path / "rotation.csv"
    out = _run("nnx_logging.py", "--steps", "4", "--csv", str(path))
    assert f"wrote 4 rows x 22 columns to {path}" in out, out
    assert "optimizer step count: 4" in out, out
    assert "nnx.state(optimizer) gives the last row's values: True" in out
    rows = path.read_text().splitlines()
    header = rows[0].split(",")
    assert header[:2] == ["step", "loss"] and len(rows) == 5
    for name in ("blocks/0", "blocks/2", "embed/kernel", "out/kernel"):
        assert (
            f"track/rate/{name}" in header and f"track/cosine/{name}" in header
        )
    # Layca turns every layer, each stacked one too, by arctan(lr) a step.
    rates = re.findall(r"^  (\S+) +([0-9.e+-]+) ([0-9.]+)$", out, re.M)
    assert len(rates) == 5, out
    for _, rate, _ in rates:
        assert float(rate) == pytest.approx(3**-4, rel=1e-3)


@pytest.mark.slow
def test_sharded_step():
    out = _run("sharded_step.py", "--steps", "3")
    assert "mesh {'data': 4, 'model': 2} of 8 cpu devices" in out, out
    assert re.search(r"^invariant OK: each layer turned by arctan", out, re.M)
    gap = re.search(r"sharded vs one device: max difference (\S+)$", out, re.M)
    assert gap and float(gap.group(1)) < 1e-5, out
    rotation = re.findall(r"^rotation/(\S+) +([0-9.]+)", out, re.M)
    assert [layer for layer, _ in rotation] == [
        "dense1/kernel",
        "dense2/kernel",
        "out/kernel",
    ], out
    assert all(float(value) > 0 for _, value in rotation), out
