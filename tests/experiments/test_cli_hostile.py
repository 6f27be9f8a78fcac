"""``layca-optax`` against hostile input: every bad argument, output folder,
data folder or ``results.json`` is answered with one line on stderr and
exit status 2, before any training (nothing is trained here: the demo's
and the reproduction's training functions are replaced by stand-ins that
fail the test if reached)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("flax")
pytest.importorskip("mnist1d")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from layca_optax.experiments import cli as _cli  # noqa: E402
from layca_optax.experiments.demo import run as mnist1d  # noqa: E402
from layca_optax.experiments.reproduce import run as reproduce  # noqa: E402
from tests.experiments.test_datasets import (  # noqa: E402
    MNIST_FILES,
    cifar_batch,
    idx_bytes,
    py2_pickle,
    write_cifar10,
    write_mnist,
)


ROOT = Path(__file__).resolve().parents[2]
REAL_RESULTS = ROOT / "docs" / "reproduce" / "results.json"


class _Trained(Exception):
    """Raised by the stand-ins of the training functions."""


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Training (or drawing a report) is a failure here: the input should
    have been refused before."""

    def trained(*args, **kwargs):
        raise _Trained("reached training")

    monkeypatch.setattr(mnist1d, "run_demo", trained)
    monkeypatch.setattr(reproduce, "run_reproduce", trained)
    monkeypatch.delenv("LAYCA_DATA_DIR", raising=False)


def rejected(argv, capsys, *words):
    """Runs ``layca-optax argv``; checks exit 2 and one line on stderr
    holding every one of ``words``; returns that line."""
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------ numeric flags

NUMERIC = [
    # demo
    (["demo", "--sgd-lr", "inf"], ["--sgd-lr", "inf"]),
    (["demo", "--sgd-lr", "-inf"], ["--sgd-lr"]),
    (["demo", "--sgd-lr", "1e999"], ["--sgd-lr"]),
    (["demo", "--sgd-lr", "nan"], ["--sgd-lr", "nan"]),
    (["demo", "--sgd-lr", "-1"], ["--sgd-lr"]),
    (["demo", "--sgd-lr", "0"], ["--sgd-lr"]),
    (["demo", "--sgd-lr", "fast"], ["--sgd-lr", "fast"]),
    (["demo", "--epochs", "0"], ["--epochs"]),
    (["demo", "--epochs", "-3"], ["--epochs"]),
    (["demo", "--epochs", "1e3"], ["--epochs", "1e3"]),
    (["demo", "--epochs", "1000000000"], ["--epochs", "at most"]),
    (["demo", "--seed", "99999999999999999999999"], ["--seed"]),
    (["demo", "--seed", str(2**32)], ["--seed", "4294967295"]),
    (["demo", "--seed", "-1"], ["--seed"]),
    (["demo", "--seed", "1.5"], ["--seed"]),
    (["demo", "--seed", "9" * 5000], ["--seed"]),
    (["demo", "--optimizers", "nadam"], ["--optimizers", "nadam"]),
    (["demo", "--optimizers"], ["--optimizers"]),
    (["demo", "--out"], ["--out"]),
    (["demo", "--out", ""], ["--out"]),
    # reproduce
    (["reproduce", "--scale", "inf"], ["--scale", "inf"]),
    (["reproduce", "--scale", "nan"], ["--scale", "nan"]),
    (["reproduce", "--scale", "0"], ["--scale"]),
    (["reproduce", "--scale", "-1"], ["--scale"]),
    (["reproduce", "--scale", "1e308"], ["--scale", "at most"]),
    (["reproduce", "--seeds", "1000000000"], ["--seeds", "at most"]),
    (["reproduce", "--seeds", "0"], ["--seeds"]),
    (["reproduce", "--seeds", "-2"], ["--seeds"]),
    (["reproduce", "--seed", "99999999999999999999999"], ["--seed"]),
    (["reproduce", "--seed", "-5"], ["--seed"]),
    (["reproduce", "--seed", "4294967295", "--seeds", "2"], ["--seed"]),
    (["reproduce", "--jobs", "0"], ["--jobs"]),
    (["reproduce", "--jobs", "-1"], ["--jobs"]),
    (["reproduce", "--jobs", "1000000"], ["--jobs", "at most"]),
    (["reproduce", "--jobs", "nan"], ["--jobs", "not an integer"]),
    (["demo", "--epochs", "inf"], ["--epochs", "not an integer"]),
    (["reproduce", "--seeds", "inf"], ["--seeds", "not an integer"]),
    (["reproduce", "--task", "imagenet"], ["--task", "imagenet"]),
    (["reproduce", "--data-dir", ""], ["--data-dir"]),
    # the command itself
    ([], ["COMMAND"]),
    (["nodemo"], ["nodemo"]),
    (["demo", "--unknown"], ["--unknown"]),
    (["report"], ["--out"]),
]


@pytest.mark.parametrize(
    "argv, words", NUMERIC, ids=[" ".join(a)[:40] or "-" for a, _ in NUMERIC]
)
def test_bad_flags(argv, words, capsys, tmp_path):
    if argv[:1] == ["reproduce"]:
        argv = [*argv, "--out", str(tmp_path / "out")]
    line = rejected(argv, capsys, *words)
    assert line.startswith("layca-optax")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ output folder


def _dangling(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    return tmp_path / "link", "symbolic link"


def _loop(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path / "loop", "symbolic link"


def _file(tmp_path):
    (tmp_path / "file").write_text("x")
    return tmp_path / "file", "not a directory"


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "out", "--out"


def _no_parent(tmp_path):
    return tmp_path / "no" / "such" / "out", "does not exist"


def _too_long(tmp_path):
    return tmp_path / ("x" * 5000), "--out"


def _proc(tmp_path):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    return Path("/proc/layca-optax-out"), "--out"


def _sys(tmp_path):
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys")
    return Path("/sys/kernel"), "--out"


def _unwritable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    return folder, "not writable"


def _results_is_a_folder(tmp_path):
    (tmp_path / "out" / "results.json").mkdir(parents=True)
    return tmp_path / "out", "results.json"


OUT_CASES = [
    _dangling,
    _loop,
    _file,
    _under_a_file,
    _no_parent,
    _too_long,
    _proc,
    _sys,
    _unwritable,
    _results_is_a_folder,
]


@pytest.mark.parametrize("command", ["demo", "reproduce"])
@pytest.mark.parametrize("make", OUT_CASES, ids=lambda f: f.__name__[1:])
def test_bad_out(command, make, tmp_path, capsys):
    out, why = make(tmp_path)
    argv = [command, "--quick", "--out", str(out)]
    rejected(argv, capsys, "--out", why)


def test_histories_is_a_file(tmp_path, capsys):
    (tmp_path / "histories").write_text("x")
    argv = ["reproduce", "--quick", "--out", str(tmp_path)]
    rejected(argv, capsys, "histories")


def test_report_out_is_a_dangling_link(tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    rejected(["report", "--out", str(tmp_path / "link")], capsys, "--out")


def test_a_good_out_is_left_as_it_was(tmp_path, capsys):
    """A folder that can be created, or written into, passes; the checks
    leave nothing behind (an interrupted run leaves no trace either)."""
    out = tmp_path / "new"
    with pytest.raises(_Trained):
        _cli.main(["demo", "--quick", "--out", str(out)])
    assert not out.exists()
    out.mkdir()
    with pytest.raises(_Trained):
        _cli.main(["reproduce", "--quick", "--out", str(out)])
    assert list(out.iterdir()) == []


# -------------------------------------------------------------- data folder


def _mnist(folder, n_train=5, n_test=3, labels=None):
    """MNIST files with ``n_train`` / ``n_test`` images."""
    rng = np.random.default_rng(0)
    train = labels if labels is not None else rng.integers(0, 10, n_train)
    return write_mnist(
        folder,
        **{
            "train-images-idx3-ubyte": idx_bytes(
                0x803, rng.integers(0, 256, (len(train), 28, 28))
            ),
            "train-labels-idx1-ubyte": idx_bytes(0x801, train),
            "t10k-images-idx3-ubyte": idx_bytes(
                0x803, rng.integers(0, 256, (n_test, 28, 28))
            ),
            "t10k-labels-idx1-ubyte": idx_bytes(
                0x801, rng.integers(0, 10, n_test)
            ),
        },
    )


DATA_CASES = {
    "mnist-0-train": (lambda d: _mnist(d, n_train=0), ["0 train"]),
    "mnist-0-test": (lambda d: _mnist(d, n_test=0), ["0 test"]),
    "mnist-1-class": (lambda d: _mnist(d, labels=[3] * 8), ["class"]),
    "cifar10-no-batch": (
        lambda d: write_cifar10(d / "cifar-10-batches-py"),
        ["batch"],
    ),
    "cifar10-0-test": (
        lambda d: write_cifar10(
            d / "cifar-10-batches-py",
            test_batch=py2_pickle(cifar_batch(0)),
        ),
        ["0 test"],
    ),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data(case, tmp_path, capsys):
    make, words = DATA_CASES[case]
    data = tmp_path / "data"
    make(data)
    task = ["--task", "cifar10"] if "cifar" in case else []
    out = tmp_path / "out"
    argv = ["reproduce", "--quick", "--out", str(out), "--data-dir", str(data)]
    line = rejected([*argv, *task], capsys, str(data))
    assert any(w in line for w in words), line
    assert not out.exists()


def test_data_dir_name_too_long(tmp_path, capsys):
    argv = ["reproduce", "--quick", "--out", str(tmp_path / "out")]
    rejected([*argv, "--data-dir", "d" * 5000], capsys, "--data-dir")


def test_data_dir_env_name_too_long(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAYCA_DATA_DIR", "d" * 5000)
    argv = ["reproduce", "--quick", "--out", str(tmp_path / "out")]
    rejected([*argv, "--task", "cifar10"], capsys)


def test_good_small_mnist_is_accepted(tmp_path):
    """The checks let a small but usable data folder through."""
    data = write_mnist(tmp_path / "data")
    argv = ["reproduce", "--quick", "--out", str(tmp_path / "out")]
    with pytest.raises(_Trained):
        _cli.main([*argv, "--data-dir", str(data)])
    assert len(MNIST_FILES) == 4


# ------------------------------------------------------------ results.json


@pytest.fixture(scope="module")
def real_results():
    if not REAL_RESULTS.is_file():
        pytest.skip("no committed results.json")
    return json.loads(REAL_RESULTS.read_text())


def _reinit_run(results):
    """The path to the first run that holds a reinit study."""
    for name, e in results["experiments"].items():
        for i, c in enumerate(e["configs"]):
            for j, run in enumerate(c["runs"]):
                if "reinit" in run:
                    return ("experiments", name, "configs", i, "runs", j)
    raise AssertionError("no reinit study")


def _set(results, where, value):
    """``results`` with the entry at ``where`` (keys and indices) replaced
    by ``value`` (deleted if ``value`` is ``_DELETE``)."""
    if where[0] == "REINIT":
        where = (*_reinit_run(results), "reinit", *where[1:])
    results = copy.deepcopy(results)
    node = results
    for key in where[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return results


_DELETE = object()
_RUN = ("experiments", "fig1", "configs", 0, "runs", 0)

MUTATIONS = {
    "experiments-int": (("experiments",), 1),
    "experiments-list": (("experiments",), []),
    "no-fig1": (("experiments", "fig1"), _DELETE),
    "extra-fig9": (("experiments", "fig9"), {"title": "x", "task": "cnn"}),
    "no-configs": (("experiments", "fig2", "configs"), []),
    "configs-dict": (("experiments", "fig2", "configs"), {}),
    "no-runs": (("experiments", "fig2", "configs", 0, "runs"), []),
    "task-rnn": (("experiments", "fig1", "task"), "rnn"),
    "title-int": (("experiments", "fig1", "title"), 7),
    "label-none": (("experiments", "fig3", "configs", 0, "label"), None),
    "hparams-str": (("experiments", "fig1", "configs", 0, "hparams"), "x"),
    "alpha-missing": (
        ("experiments", "fig1", "configs", 0, "hparams", "alpha"),
        _DELETE,
    ),
    "accuracy-str": ((*_RUN, "test_accuracy"), "high"),
    "accuracy-list": ((*_RUN, "train_accuracy"), [1]),
    "no-rotation-min": ((*_RUN, "rotation_min"), _DELETE),
    "short-curve": ((*_RUN, "train_loss"), [0.5]),
    "curves-str": ((*_RUN, "rotation_curves"), "x"),
    "curve-of-str": ((*_RUN, "test_accuracy_curve"), ["a"] * 40),
    "final-rotation-missing": ((*_RUN, "final_rotation"), {}),
    "seed-str": ((*_RUN, "seed"), "0"),
    "features-str": (
        ("experiments", "fig8", "configs", 0, "runs", 0, "features"),
        "x",
    ),
    "features-flat": (
        ("experiments", "fig8", "configs", 0, "runs", 0, "features"),
        [1.0, 2.0],
    ),
    "reinit-baseline-str": (("REINIT", "baseline"), "a"),
    "reinit-ragged": (("REINIT", "reinit"), [[1.0], [1.0, 2.0]]),
    "reinit-shape": (("REINIT", "rerandom"), [[1.0]]),
    "reinit-no-paths": (("REINIT", "paths"), []),
    "fig6-no-layca": (
        ("experiments", "fig6", "configs"),
        "KEEP-PLAIN-ONLY",
    ),
    "no-settings-cnn": (("settings", "cnn"), _DELETE),
    "layers-int": (("settings", "cnn", "layers"), 3),
    "seeds-int": (("settings", "seeds"), 5),
    "epochs-str": (("settings", "mlp", "epochs"), "many"),
    "decay-factor-str": (("settings", "cnn", "decay_factor"), "x"),
    "quick-missing": (("settings", "quick"), _DELETE),
    "wall-str": (("wall_seconds",), "x"),
    "jobs-missing": (("jobs",), _DELETE),
    "claims-int": (("claims",), [1]),
    "claims-dict": (("claims",), {}),
    "claim-no-verdict": (("claims", 0, "verdict"), _DELETE),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_malformed_results(name, real_results, tmp_path, capsys):
    where, value = MUTATIONS[name]
    if value == "KEEP-PLAIN-ONLY":
        configs = real_results["experiments"]["fig6"]["configs"]
        value = [c for c in configs if not c["kind"].endswith("-layca")]
    bad = _set(real_results, where, value)
    (tmp_path / "results.json").write_text(json.dumps(bad))
    line = rejected(["report", "--out", str(tmp_path)], capsys)
    assert str(tmp_path / "results.json") in line
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_committed_results_pass_the_checks(real_results, tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(real_results))
    assert reproduce.load_results(tmp_path) == real_results


RAW_FILES = {
    "nested": "[" * 100_000 + "]" * 100_000,
    "nested-dict": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "null": "null",
    "string": '"results"',
    "number": "1e999",
    "big-int": '{"jobs": ' + "9" * 5000 + "}",
    "not-utf8": b"\xff\xfe{}",
    "empty": "",
}


@pytest.mark.parametrize("name", list(RAW_FILES))
def test_unreadable_results(name, tmp_path, capsys):
    raw = RAW_FILES[name]
    path = tmp_path / "results.json"
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        path.write_text(raw)
    line = rejected(["report", "--out", str(tmp_path)], capsys)
    assert str(path) in line


@pytest.mark.slow  # 6 s on 2 cores: out of `make test-fast`
def test_results_too_large(tmp_path, capsys):
    path = tmp_path / "results.json"
    with open(path, "wb") as f:  # sparse: no disk used
        f.truncate(reproduce.MAX_RESULTS_BYTES + 1)
    line = rejected(["report", "--out", str(tmp_path)], capsys, str(path))
    assert "too large" in line


@pytest.mark.parametrize("target", ["/dev/zero", "folder", "fifo"])
def test_results_not_a_regular_file(target, tmp_path, capsys):
    path = tmp_path / "results.json"
    if target == "folder":
        path.mkdir()
    elif target == "fifo":
        os.mkfifo(path)
    else:
        if not Path(target).exists():
            pytest.skip(f"no {target}")
        path.symlink_to(target)
    rejected(["report", "--out", str(tmp_path)], capsys, str(path))


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--sgd-lr", "inf"],
        ["reproduce", "--seeds", "1000000000", "--quick"],
        ["demo", "--seed", "99999999999999999999999"],
    ],
)
def test_console_script_one_line(argv, tmp_path):
    """As users run it: one line, status 2, well within a minute."""
    done = subprocess.run(
        [sys.executable, "-m", "layca_optax", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip("\n").split("\n")) == 1, done.stderr
    assert done.stderr.startswith("layca-optax")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_console_script_bad_results(tmp_path):
    (tmp_path / "results.json").write_text('{"experiments": 1, "x": [')
    done = subprocess.run(
        [sys.executable, "-m", "layca_optax", "report", "--out", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip("\n").split("\n")) == 1, done.stderr
    assert "results.json" in done.stderr
