"""End-to-end tests of the MNIST-1D demo and the ``layca-optax`` CLI."""

import io
import json
import math
import sys

import pytest


pytest.importorskip("flax")
pytest.importorskip("mnist1d")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import layca_optax  # noqa: E402
from layca_optax.experiments import cli  # noqa: E402
from layca_optax.experiments.common import progress  # noqa: E402
from layca_optax.experiments.demo import (  # noqa: E402
    figures,
    run as demo_run,
    settings,
    train,
)


EPOCHS = settings.QUICK_EPOCHS
NAMES = ["layca", "sgd-wd"]  # two of the five, to keep the tests short
TIMINGS = ("seconds", "compile_seconds")


def _without_timings(results):
    runs = {
        name: {k: v for k, v in run.items() if k not in TIMINGS}
        for name, run in results["optimizers"].items()
    }
    return {**results, "optimizers": runs}


@pytest.fixture(scope="module")
def results():
    return demo_run.run_demo(epochs=EPOCHS, seed=0, names=NAMES)


@pytest.mark.slow  # the demo end to end (module fixture)
def test_run_demo_results(results):
    layers = results["layers"]
    assert layers == [f"Conv_{i}/kernel" for i in range(4)] + ["Dense_0/kernel"]
    assert list(results["optimizers"]) == NAMES
    for run in results["optimizers"].values():
        for key in ("train_accuracy", "test_accuracy"):
            assert 0.0 <= run[key] <= 1.0
        assert run["test_accuracy"] > 0.2  # well above chance (0.1)
        assert list(run["final_rotation"]) == layers
        assert all(math.isfinite(v) for v in run["final_rotation"].values())
        for curve in run["rotation_curves"].values():
            assert len(curve) == EPOCHS
        assert len(run["train_loss"]) == len(run["test_accuracy_curve"])
        assert run["rotation_min"] == min(run["final_rotation"].values())
    layca = results["optimizers"]["layca"]["final_rotation"]
    assert all(v > 0 for v in layca.values())


@pytest.mark.slow  # the demo end to end (module fixture)
def test_figure_has_one_panel_per_optimizer(results):
    fig = figures.figure(results)
    panels = [ax for ax in fig.axes if ax.get_lines()]  # not colour bars
    assert [ax.get_title().split(":")[0] for ax in panels] == NAMES
    for ax in panels:
        assert len(ax.get_lines()) == len(results["layers"])
        assert ax.get_ylim() == (0.0, 1.0)
        assert ax.get_xlabel() == "Epoch"


def test_all_five_optimizers_are_defined():
    compared = train.optimizers(100)
    assert list(compared) == list(settings.OPTIMIZERS)
    for lr, description, _ in compared.values():
        assert lr > 0 and description
    with pytest.raises(ValueError, match="unknown optimizer"):
        train.optimizers(100, names=["nadam"])


@pytest.mark.slow  # the demo end to end (module fixture)
def test_same_seed_same_results_other_seed_differs(results):
    again = demo_run.run_demo(epochs=EPOCHS, seed=0, names=NAMES)
    assert _without_timings(again) == _without_timings(results)
    other = demo_run.run_demo(epochs=EPOCHS, seed=1, names=NAMES[:1])
    assert (
        other["optimizers"]["layca"]["final_rotation"]
        != (results["optimizers"]["layca"]["final_rotation"])
    )


@pytest.mark.slow  # the demo end to end (module fixture)
def test_cli_demo_writes_results_and_figure(results, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--quick", "--seed", "0", "--out", str(out)]
    assert cli.main([*argv, "--optimizers", *NAMES]) == 0
    written = json.loads((out / "results.json").read_text())
    assert _without_timings(written) == _without_timings(results)
    png = (out / "layer_rotation.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    history = layca_optax.RotationHistory.load_csv(out / "history_layca.csv")
    assert list(history.steps) == list(range(1, EPOCHS + 1))
    curve = results["optimizers"]["layca"]["rotation_curves"]["Conv_0/kernel"]
    assert history.as_array("rotation/Conv_0/kernel").tolist() == curve
    report = (out / "report.md").read_text()
    assert "test acc" in report and "(layer_rotation.png)" in report
    assert sorted(p.name for p in out.iterdir()) == [
        "history_layca.csv",
        "history_sgd-wd.csv",
        "layer_rotation.png",
        "report.md",
        "results.json",
    ]  # no temporary file left behind
    captured = capsys.readouterr()
    for word in (*NAMES, "Conv_0", "Dense_0", "test acc", "L2"):
        assert word in captured.out
    for name in NAMES:  # stderr is not a terminal: one line per run
        assert f"{name}: {EPOCHS} epochs, train acc" in captured.err


def test_progress_bar_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress.Progress("[1/1] layca", 3)
    bar(1)
    bar(3)
    run = {"train_accuracy": 1.0, "test_accuracy": 0.5}
    bar.close({**run, "seconds": 1.0, "compile_seconds": 0.5})
    text = sys.stderr.getvalue()
    assert "[1/1] layca" in text and "3/3" in text
    assert "test acc 50.0%" in text


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--epochs", "--seed", "--out", "--quick", "--optimizers"):
        assert option in printed


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"layca-optax {layca_optax.__version__}\n"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["demo", "--epochs", "0"], ["--epochs"]),
        (["demo", "--optimizers", "nadam"], ["--optimizers", "nadam"]),
        (["demo", "--out", "no/such/folder/out"], ["--out", "not exist"]),
        (["nodemo"], ["invalid choice"]),
    ],
)
def test_cli_rejects_bad_arguments(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_cli_rejects_a_file_as_out(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--out", str(path)])
    assert exit_info.value.code == 2
    assert "not a directory" in capsys.readouterr().err


class _Called(Exception):
    """Raised by a stand-in for the demo: the arguments it got."""


def _demo_call(argv, monkeypatch):
    """The arguments ``layca-optax demo`` passes to ``run_demo``."""

    def run_demo(*args, **kwargs):
        raise _Called(args, kwargs)

    monkeypatch.setattr(demo_run, "run_demo", run_demo)
    with pytest.raises(_Called) as called:
        cli.main(["demo", *argv])
    return called.value.args


def test_cli_defaults_are_the_demo_defaults(monkeypatch):
    (epochs, seed, out), kwargs = _demo_call([], monkeypatch)
    assert (epochs, out) == (settings.DEFAULT_EPOCHS, None)
    assert seed == settings.DEFAULT_SEED
    assert kwargs["names"] == list(settings.OPTIMIZERS)
    assert kwargs["sgd_learning_rate"] == settings.SGD_LEARNING_RATE
    (epochs, *_), _ = _demo_call(["--quick"], monkeypatch)
    assert epochs == settings.QUICK_EPOCHS
    (epochs, *_), kwargs = _demo_call(
        ["--quick", "--epochs", "2", "--sgd-lr", "0.5"], monkeypatch
    )
    assert (epochs, kwargs["sgd_learning_rate"]) == (2, 0.5)


def test_cli_reads_its_defaults_from_the_demo(monkeypatch, capsys):
    """The parser is built from the demo module's values, not copies."""
    monkeypatch.setattr(settings, "DEFAULT_EPOCHS", 7)
    monkeypatch.setattr(settings, "QUICK_EPOCHS", 2)
    monkeypatch.setattr(settings, "DEFAULT_SEED", 5)
    monkeypatch.setattr(settings, "OPTIMIZERS", ("sgd", "layca"))
    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    assert (args.seed, args.optimizers) == (5, ["sgd", "layca"])
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--optimizers", "adam"])
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    printed = " ".join(capsys.readouterr().out.split())
    assert "(default: 7, or 2 with --quick)" in printed
    (epochs, seed, _), _ = _demo_call([], monkeypatch)
    assert (epochs, seed) == (7, 5)
