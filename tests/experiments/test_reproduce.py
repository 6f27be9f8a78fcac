"""``layca-optax reproduce`` and ``report``: the quick run end to end, the
claims' statistics, the sweep's determinism, and bad input."""

import dataclasses
import json
import math

import numpy as np
import pytest


pytest.importorskip("flax")
pytest.importorskip("mnist1d")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import layca_optax  # noqa: E402
import layca_optax.experiments  # noqa: E402
from layca_optax.experiments import cli as _cli  # noqa: E402
from layca_optax.experiments.common import limits  # noqa: E402
from layca_optax.experiments.reproduce import (  # noqa: E402
    run as reproduce,
    settings as _settings,
    stats as _claims,
    tasks as _tasks,
    train as _runner,
)
from layca_optax.experiments.reproduce.experiments import (  # noqa: E402
    LAYCA_DEFAULT,
    experiments,
)
from layca_optax.experiments.reproduce.figures import FIGURES  # noqa: E402
from layca_optax.experiments.reproduce.optimizers import (  # noqa: E402
    Optimizer,
)
from tests.experiments.test_datasets import (  # noqa: E402
    write_cifar10,
    write_cifar100,
    write_mnist,
)


VERDICTS = {"holds", "does not hold", "inconclusive"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    status = _cli.main(
        ["reproduce", "--quick", "--jobs", "1", "--out", str(out)]
    )
    assert status == 0
    return out


@pytest.mark.slow  # the quick reproduction end to end (module fixture)
def test_quick_run_writes_every_output(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    assert set(results["experiments"]) == {e.name for e in experiments(True)}
    for name in FIGURES.values():
        assert (quick_run / name).stat().st_size > 10_000  # a real PNG
    report = (quick_run / "report.md").read_text()
    for name in FIGURES.values():
        assert f"]({name})" in report
    for text in (
        "## Layer rotation and re-initialization robustness",
        "Are the least-rotated layers the robust ones?",
        "| pooled | 5 optimizers |",
        "| verdict (test) | verdict (test-2) |",
        "picking on test accuracy instead",
        "Test-2 evidence:",
        "| validation acc. % | test acc. % | test-2 acc. % |",
        "(picked)",
    ):
        assert text in report, text
    seeds = results["settings"]["seeds"]
    assert seeds == list(_settings.QUICK.seeds)
    histories = list((quick_run / "histories").glob("*.csv"))
    runs = sum(
        len(e["configs"]) * len(seeds) for e in results["experiments"].values()
    )
    assert len(histories) == runs
    history = layca_optax.RotationHistory.load_csv(sorted(histories)[0])
    assert len(history.steps) == results["settings"]["cnn"]["epochs"]
    assert not list(quick_run.rglob("*.tmp*"))  # nothing half-written


@pytest.mark.slow  # the quick reproduction end to end (module fixture)
def test_quick_run_results_are_consistent(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    assert results["command"].startswith("layca-optax reproduce --quick")
    for experiment in results["experiments"].values():
        for config in experiment["configs"]:
            assert [r["seed"] for r in config["runs"]] == [0, 1]
            for run in config["runs"]:
                assert 0.0 <= run["test_accuracy"] <= 1.0
                assert all(
                    math.isfinite(v) for v in run["final_rotation"].values()
                )
    claims = results["claims"]
    # fig 1-3 rotation, fig 2, fig 3, adam, fig 8, rotation vs reinit
    assert len(claims) == 6
    assert all(c["verdict"] in VERDICTS and c["evidence"] for c in claims)
    assert all(c["verdict_picked_on_test"] in VERDICTS for c in claims)
    assert [c["verdict_test2"] is None for c in claims] == [False] * 5 + [True]
    test2 = results["settings"]["test2"]
    assert test2 == {"n": 10_000, "data_seed": 43}
    for experiment in results["experiments"].values():
        layers = results["settings"][experiment["task"]]["layers"]
        for config in experiment["configs"]:
            for run in config["runs"]:
                assert 0.0 <= run["validation_accuracy"] <= 1.0
                cnn = experiment["task"] == "cnn"
                assert (run["test2_accuracy"] is not None) == cnn
                assert list(run["reset_accuracy"]) == layers
                if "reinit" in run:  # its "init" column: the same resets
                    init = [row[0] for row in run["reinit"]["reinit"]]
                    reset = list(run["reset_accuracy"].values())
                    np.testing.assert_allclose(init, reset, atol=1e-5)
                    assert run["reinit"]["baseline"] == pytest.approx(
                        run["validation_accuracy"], abs=1e-5
                    )
    # The reinit study ran on Layca's default CNN and on the MLP.
    probed = [
        (name, config["label"])
        for name, e in results["experiments"].items()
        for config in e["configs"]
        if all("reinit" in run for run in config["runs"])
    ]
    assert ("fig1", LAYCA_DEFAULT.label) in probed
    assert [n for n, _ in probed].count("fig8") == 1
    features = results["experiments"]["fig8"]["configs"][0]["runs"][0]
    assert np.asarray(features["features"]).shape == (16, 8, 8)


@pytest.mark.slow  # the quick reproduction end to end (module fixture)
def test_report_redraws_from_results(quick_run):
    report = (quick_run / "report.md").read_text()
    (quick_run / "report.md").unlink()
    (quick_run / FIGURES["fig1"]).unlink()
    assert _cli.main(["report", "--out", str(quick_run)]) == 0
    assert (quick_run / "report.md").read_text() == report
    assert (quick_run / FIGURES["fig1"]).exists()


@pytest.mark.slow  # the quick reproduction end to end (module fixture)
def test_report_of_a_diverged_run(quick_run, tmp_path):
    # A run whose weights or accuracy went non-finite is written as null
    # in results.json; the report and the figures show it as n/a.
    results = json.loads((quick_run / "results.json").read_text())
    mlp = results["experiments"]["fig8"]["configs"][0]["runs"][0]
    layer = results["settings"]["mlp"]["layers"][0]
    mlp["final_rotation"][layer] = None
    mlp["rotation_mean"] = mlp["rotation_min"] = None
    mlp["test_accuracy"] = None
    mlp["rotation_curves"][layer][-1] = None
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert _cli.main(["report", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "nan" not in report.lower().replace("nano", "")
    assert "n/a" in report
    assert (tmp_path / FIGURES["fig8"]).stat().st_size > 10_000


_RUN = ("experiments", "fig2", "configs", 0, "runs", 1)
_LAYER = "Conv_2/kernel"
NEW_FIELDS_BROKEN = {
    "validation-str": ((*_RUN, "validation_accuracy"), "x"),
    "validation-missing": ((*_RUN, "validation_accuracy"), None, "del"),
    "test2-list": ((*_RUN, "test2_accuracy"), [0.5]),
    "reset-missing-layer": ((*_RUN, "reset_accuracy", _LAYER), None, "del"),
    "reset-str": ((*_RUN, "reset_accuracy", _LAYER), "high"),
    "reset-list": ((*_RUN, "reset_accuracy"), [0.5]),
    "old-verdict-missing": (
        ("claims", 1, "verdict_picked_on_test"),
        None,
        "del",
    ),
    "test2-verdict-int": (("claims", 0, "verdict_test2"), 3),
    "test2-evidence-list": (("claims", 2, "evidence_test2"), ["x"]),
    "test2-settings-str": (("settings", "test2"), "10000"),
    "test2-n-str": (("settings", "test2", "n"), "many"),
    "validation-seed-missing": (("settings", "validation_seed"), None, "del"),
    "n-validation-float": (("settings", "cnn", "n_validation"), 0.2),
}


def _mutated(results, where, value, delete=False):
    results = json.loads(json.dumps(results))
    node = results
    for key in where[:-1]:
        node = node[key]
    if delete:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return results


@pytest.mark.slow  # the quick reproduction end to end (module fixture)
@pytest.mark.parametrize("name", list(NEW_FIELDS_BROKEN))
def test_results_checker_rejects_broken_new_fields(quick_run, tmp_path, name):
    where, value, *delete = NEW_FIELDS_BROKEN[name]
    results = json.loads((quick_run / "results.json").read_text())
    bad = _mutated(results, where, value, bool(delete))
    (tmp_path / "results.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError) as e:
        reproduce.load_results(tmp_path)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path) in message
    assert str(where[-1]) in message or "test2" in message


@pytest.mark.slow  # the quick reproduction end to end (module fixture)
def test_results_checker_accepts_runs_without_test2(quick_run, tmp_path):
    # As --task cifar10 writes them: no second test set anywhere.
    results = json.loads((quick_run / "results.json").read_text())
    results["settings"]["test2"] = None
    for claim in results["claims"]:
        claim["verdict_test2"] = claim["evidence_test2"] = None
    for e in results["experiments"].values():
        for c in e["configs"]:
            for run in c["runs"]:
                run["test2_accuracy"] = None
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert reproduce.load_results(tmp_path) == results
    assert _cli.main(["report", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Test-2: n/a" in report and "Test-2 evidence" not in report


@pytest.mark.parametrize(
    "content, why",
    [
        (None, "not found"),
        ("{not json", "not a readable JSON"),
        ('{"experiments": {}}', "not the results of"),
        ("[1, 2]", "not the results of"),
    ],
)
def test_report_bad_results(tmp_path, capsys, content, why):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(SystemExit) as e:
        _cli.main(["report", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        [] if content is None else ["results.json"]
    )


@pytest.mark.parametrize(
    "args, why",
    [
        (["--task", "cifar10", "--data-dir", "{empty}"], "cifar"),
        (["--data-dir", "{empty}"], "train-images-idx3-ubyte"),
        (["--data-dir", "{missing}"], "is not a folder"),
        (["--task", "imagenet"], "invalid choice"),
        (["--jobs", "0"], "must be at least 1"),
        (["--scale", "-1"], "must be positive"),
    ],
)
def test_reproduce_bad_input(tmp_path, capsys, monkeypatch, args, why):
    monkeypatch.delenv("LAYCA_DATA_DIR", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    args = [a.format(empty=empty, missing=tmp_path / "missing") for a in args]
    with pytest.raises(SystemExit) as e:
        _cli.main(["reproduce", "--quick", "--out", str(out), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert why in err.lower() or why in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written before the check


def test_reproduce_unwritable_out(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as e:
        _cli.main(["reproduce", "--quick", "--out", str(target)])
    assert e.value.code == 2
    assert "not a directory" in capsys.readouterr().err


class _Called(Exception):
    """Raised by a stand-in for the reproduction: the arguments it got."""


def _reproduce_call(argv, monkeypatch, tmp_path):
    """What ``layca-optax reproduce`` passes to ``run_reproduce``."""

    def run_reproduce(settings, out, **kwargs):
        raise _Called(settings, kwargs)

    monkeypatch.setattr(reproduce, "run_reproduce", run_reproduce)
    with pytest.raises(_Called) as called:
        _cli.main(["reproduce", "--out", str(tmp_path / "out"), *argv])
    return called.value.args


def test_cli_reproduce_defaults_are_the_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("LAYCA_DATA_DIR", raising=False)
    settings, kwargs = _reproduce_call([], monkeypatch, tmp_path)
    assert settings == _settings.DEFAULT
    assert kwargs["jobs"] == limits.default_jobs()
    settings, _ = _reproduce_call(["--quick"], monkeypatch, tmp_path)
    assert settings == _settings.QUICK
    argv = ["--seeds", "2", "--seed", "5", "--scale", "0.5"]
    settings, _ = _reproduce_call(argv, monkeypatch, tmp_path)
    assert settings == _settings.make_settings(seeds=2, first_seed=5, scale=0.5)
    assert (settings.seeds, settings.epochs) == ((5, 6), 20)
    # Read, not copied: the parser follows the settings module.
    quick = dataclasses.replace(_settings.QUICK, epochs=1, seeds=(0,))
    monkeypatch.setattr(_settings, "QUICK", quick)
    settings, _ = _reproduce_call(["--quick"], monkeypatch, tmp_path)
    assert settings == quick


def test_local_files_select_the_papers_data(tmp_path, monkeypatch):
    monkeypatch.delenv("LAYCA_DATA_DIR", raising=False)
    write_mnist(tmp_path)
    write_cifar10(tmp_path / "cifar-10-batches-py")
    settings = _settings.Settings(task="cifar10", data_dir=str(tmp_path))
    _tasks.check_data(settings)
    cnn, mlp = _tasks.cnn_task(settings), _tasks.mlp_task(settings)
    assert type(cnn.model).__name__ == "C10CNN1"
    assert cnn.data.x_train.shape[1:] == (32, 32, 3)
    assert mlp.data.name == "mnist"
    assert mlp.data.x_train.shape[1:] == (28, 28, 1)
    assert mlp.batch_size <= len(mlp.data.x_train)
    # Without a data folder: MNIST-1D and the bundled digits.
    default = _settings.Settings()
    assert _tasks.mlp_task(default).data.name == "digits"
    assert _tasks.cnn_task(default).data.name == "mnist1d"


@pytest.mark.parametrize(
    ("task", "model", "kernels", "config"),
    [
        ("cifar10", "C10CNN1", 25, "alpha=0, lr=3^-1"),
        ("cifar100", "ResNet32", 34, LAYCA_DEFAULT.label),
    ],
)
@pytest.mark.slow  # 93 s on 2 cores: out of `make test-fast`
def test_cifar_runs_train_end_to_end(
    tmp_path, monkeypatch, task, model, kernels, config
):
    """The paper's own tasks (``--task cifar10/cifar100``) through the
    reproduction's path, on small files in the real formats: one epoch of
    one step (the whole train set as the batch: C10-CNN1 at the task's
    batch of 128 takes minutes per step on CPU), and for Layca's default
    configuration the re-initialization study (ResNet-32 only, for time).
    """
    monkeypatch.delenv("LAYCA_DATA_DIR", raising=False)
    if task == "cifar10":
        write_cifar10(tmp_path / "cifar-10-batches-py")
    else:
        write_cifar100(tmp_path / "cifar-100-python", n_train=12)
    settings = _settings.Settings(
        task=task, data_dir=str(tmp_path), seeds=(0,), epochs=1, quick=True
    )
    _tasks.check_data(settings)
    real = _tasks.cnn_task(settings)
    assert type(real.model).__name__ == model and real.batch_size == 128
    one_step = dataclasses.replace(real, batch_size=len(real.data.x_train))
    monkeypatch.setattr(_tasks, "cnn_task", lambda _: one_step)
    fig1 = experiments(quick=True)[0]
    index = [c.label for c in fig1.configs].index(config)
    entry = _runner.run_unit(settings, _runner.Unit("fig1", index, 0))
    assert 0.0 <= entry["test_accuracy"] <= 1.0
    assert math.isfinite(entry["train_loss"][0])
    rotation = entry["final_rotation"]
    assert len(rotation) == kernels
    # One Layca step at rate lr (alpha=0): every layer turned by arctan(lr).
    lr = fig1.configs[index].hparams["learning_rate"]
    turned = 1 - math.cos(math.atan(lr))
    np.testing.assert_allclose(list(rotation.values()), turned, rtol=1e-3)
    if fig1.configs[index] == LAYCA_DEFAULT:
        reinit = np.asarray(entry["reinit"]["reinit"])
        assert reinit.shape[0] == kernels and np.isfinite(reinit).all()


@pytest.mark.slow  # 8 s on 2 cores: out of `make test-fast`
def test_sweep_runs_do_not_depend_on_each_other():
    from layca_optax.experiments import load_mnist1d, train_sweep

    data = load_mnist1d()
    small = data._replace(
        x_train=data.x_train[:512], y_train=data.y_train[:512]
    )
    build = Optimizer("layca", layca_optax.experiments.CNN().layer_names)
    hp = {"learning_rate": [3**-3, 3**-2], "alpha": [0.0, 0.0]}
    both = train_sweep(build, small, 2, [0, 1], hp)
    alone = train_sweep(build, small, 2, [1], {k: v[1:] for k, v in hp.items()})
    assert len(both) == 2 and both.compile_seconds >= 0
    np.testing.assert_array_equal(both[1].train_loss, alone[0].train_loss)
    assert both[1].test_accuracy == alone[0].test_accuracy
    assert not np.array_equal(both[0].train_loss, both[1].train_loss)
    with pytest.raises(ValueError, match="train_sweep"):
        train_sweep(build, small, 2, [0], hp)


def test_optimizer_kinds():
    with pytest.raises(ValueError, match="unknown kind 'nadam'"):
        Optimizer("nadam")
    assert hash(Optimizer("sgd")) == hash(Optimizer("sgd"))


def _config(label, kind, accuracies, rotation=0.5, **hp):
    runs = [
        {
            "validation_accuracy": a,
            "test_accuracy": a,
            "train_accuracy": 1.0,
            "rotation_mean": rotation,
            "rotation_min": rotation,
        }
        for a in accuracies
    ]
    return {"label": label, "kind": kind, "hparams": hp, "runs": runs}


def test_statistics_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    y[3] = y[5]  # a tie
    expected = stats.spearmanr(x, y).statistic
    assert _claims.spearman(x, y) == pytest.approx(expected, abs=1e-12)
    a = _claims.stats(_config("a", "sgd", [0.9, 0.92, 0.91]))
    b = _claims.stats(_config("b", "sgd", [0.85, 0.86, 0.89]))
    welch = stats.ttest_ind(
        [0.9, 0.92, 0.91], [0.85, 0.86, 0.89], equal_var=False
    )
    assert _claims.welch_t(a, b) == pytest.approx(welch.statistic)
    same = _claims.stats(_config("c", "sgd", [0.9, 0.9]))
    assert _claims.welch_t(same, same) == 0.0


def _table(layca, sgd, wd, adam, adam_layca):
    default = {"learning_rate": 3.0**-3, "alpha": 0.0}
    fig1 = [_config("default", "layca", layca, 0.6, **default)]
    fig1.append(_config("small", "layca", [0.5, 0.52, 0.51], 0.05, alpha=0.0,
                        learning_rate=3.0**-5))  # fmt: skip
    return {
        "fig1": [_claims.stats(c) for c in fig1],
        "fig2": [_claims.stats(_config("sgd", "sgd", sgd, 0.2))],
        "fig3": [_claims.stats(_config("wd", "sgd-wd", wd, 0.6))],
        "fig6": [
            _claims.stats(_config("adam", "adam", adam, 0.1)),
            _claims.stats(_config("adam-l", "adam-layca", adam_layca, 0.5)),
        ],
        "fig8": [
            _claims.stats(
                _config(
                    f"lr{k}",
                    "layca",
                    [0.9 - 0.1 * k] * 2,
                    learning_rate=3.0**-k,
                )
            )  # fmt: skip
            for k in (2, 3, 4)
        ],
    }


def test_claim_verdicts_follow_the_numbers():
    table = _table(
        layca=[0.98, 0.981, 0.979],
        sgd=[0.96, 0.962, 0.958],
        wd=[0.979, 0.982, 0.978],
        adam=[0.95, 0.951, 0.949],
        adam_layca=[0.978, 0.98, 0.979],
    )
    verdicts = [c["verdict"] for c in _claims.check_claims(table)]
    assert verdicts == ["holds"] * 5
    # Reversed: SGD wins, weight decay far below, Adam + Layca worse.
    table = _table(
        layca=[0.90, 0.901, 0.899],
        sgd=[0.96, 0.962, 0.958],
        wd=[0.80, 0.81, 0.79],
        adam=[0.95, 0.951, 0.949],
        adam_layca=[0.93, 0.931, 0.929],
    )
    verdicts = [c["verdict"] for c in _claims.check_claims(table)]
    assert verdicts[1:4] == ["does not hold", "does not hold", "inconclusive"]


def test_history_paths_are_safe_file_names():
    path = reproduce.history_path("fig1", "alpha=-0.6, lr=3^-1 / x", 2)
    assert path == "histories/fig1_alpha=-0.6_lr=3^-1_x_seed2.csv"
