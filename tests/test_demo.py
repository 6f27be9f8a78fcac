"""End-to-end tests of the MNIST-1D demo and the ``layca-optax`` CLI."""

import json
import math

import pytest


pytest.importorskip("flax")
pytest.importorskip("mnist1d")
pytest.importorskip("matplotlib")

from layca_optax import _cli  # noqa: E402
from layca_optax.examples import mnist1d  # noqa: E402


EPOCHS = 2
TIMINGS = ("seconds", "compile_seconds")


def _without_timings(results):
    runs = {
        name: {k: v for k, v in run.items() if k not in TIMINGS}
        for name, run in results["optimizers"].items()
    }
    return {**results, "optimizers": runs}


@pytest.fixture(scope="module")
def results():
    return mnist1d.run_demo(epochs=EPOCHS, seed=0)


def test_run_demo_results(results):
    layers = results["layers"]
    assert layers == [f"Conv_{i}/kernel" for i in range(4)] + ["Dense_0/kernel"]
    assert set(results["optimizers"]) == {"layca", "sgd"}
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


def test_same_seed_same_results_other_seed_differs(results):
    again = mnist1d.run_demo(epochs=EPOCHS, seed=0)
    assert _without_timings(again) == _without_timings(results)
    other = mnist1d.run_demo(epochs=EPOCHS, seed=1)
    assert (
        other["optimizers"]["layca"]["final_rotation"]
        != (results["optimizers"]["layca"]["final_rotation"])
    )


def test_cli_demo_writes_results_and_figure(results, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--epochs", str(EPOCHS), "--seed", "0", "--out", str(out)]
    assert _cli.main(argv) == 0
    written = json.loads((out / "results.json").read_text())
    assert _without_timings(written) == _without_timings(results)
    png = (out / "layer_rotation.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert sorted(p.name for p in out.iterdir()) == [
        "layer_rotation.png",
        "results.json",
    ]  # no temporary file left behind
    printed = capsys.readouterr().out
    for word in ("layca", "sgd", "Conv_0", "Dense_0", "test acc"):
        assert word in printed


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--epochs", "--seed", "--out"):
        assert option in printed


def test_cli_rejects_bad_epochs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["demo", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--epochs" in capsys.readouterr().err


def test_cli_default_epochs_is_the_demo_default():
    assert _cli.DEMO_EPOCHS == mnist1d.DEFAULT_EPOCHS
