"""Selection on a validation split: the split itself (disjoint, stratified,
seeded, one for every run), MNIST-1D's second test set, and claims whose
picks never read test accuracy."""

import math

import numpy as np
import pytest


pytest.importorskip("flax")
pytest.importorskip("mnist1d")
pytest.importorskip("sklearn")

from layca_optax.experiments.data import (  # noqa: E402
    DatasetError,
    load_mnist1d,
    load_mnist1d_test2,
    make_dataset,
    stratified_validation_split,
)
from layca_optax.experiments.reproduce import (  # noqa: E402
    report as _repro_report,
    settings as _settings,
    stats as _claims,
    tasks as _tasks,
)


def _ids(n, classes, seed=0):
    """A dataset whose inputs are their own index (to follow them)."""
    y = np.random.default_rng(seed).integers(0, classes, size=n)
    x = np.arange(n, dtype=float)[:, None]
    return make_dataset(x, y, x[:3], y[:3], "ids", classes)


def test_split_is_disjoint_stratified_and_seeded():
    data = _ids(1000, 7)
    split = stratified_validation_split(data, 0.2, seed=3)
    train, val = split.x_train[:, 0], split.x_test[:, 0]
    assert len(val) == 200 and len(train) == 800
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(1000))
    np.testing.assert_array_equal(split.y_test, data.y_train[val.astype(int)])
    counts = np.bincount(data.y_train, minlength=7)
    held = np.bincount(split.y_test, minlength=7)
    assert np.all(np.abs(held - 0.2 * counts) < 1)  # stratified
    again = stratified_validation_split(data, 0.2, seed=3)
    np.testing.assert_array_equal(again.x_test, split.x_test)
    other = stratified_validation_split(data, 0.2, seed=4)
    assert not np.array_equal(other.x_test, split.x_test)
    with pytest.raises(DatasetError, match="leaves no validation"):
        stratified_validation_split(_ids(3, 2), 0.1)
    with pytest.raises(DatasetError, match="leaves no validation"):
        stratified_validation_split(data, 1.0)


def test_tasks_hold_one_validation_split_for_every_run():
    short = _settings.Settings(seeds=(0,), epochs=1)
    other = _settings.Settings(seeds=(5, 6, 7), epochs=9, quick=True)
    for make in (_tasks.cnn_task, _tasks.mlp_task):
        a, b = make(short), make(other)
        x_val, y_val = a.validation
        np.testing.assert_array_equal(x_val, b.validation[0])
        np.testing.assert_array_equal(y_val, b.validation[1])
        rows = {r.tobytes() for r in a.data.x_train}
        assert not any(r.tobytes() in rows for r in x_val)
        total = len(a.data.x_train) + len(x_val)
        assert len(x_val) == round(_tasks.VALIDATION_FRACTION * total)
    full = load_mnist1d()
    cnn = _tasks.cnn_task(short)
    assert len(cnn.data.x_train) + len(cnn.validation[1]) == 4000
    np.testing.assert_array_equal(cnn.data.x_test, full.x_test)  # untouched


def test_second_test_set():
    x, y = load_mnist1d_test2(200)
    assert x.shape == (200, 40, 1) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [20] * 10
    full = load_mnist1d()
    seen = {r.tobytes() for r in (*full.x_train, *full.x_test)}
    assert not any(r.tobytes() in seen for r in x)
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2
    with pytest.raises(ValueError, match="differ"):
        load_mnist1d_test2(100, data_seed=42)
    assert _tasks.second_test_set(_settings.Settings(task="cifar10")) is None


def _config(label, kind, val, test, **hp):
    runs = [
        {
            "validation_accuracy": v,
            "test_accuracy": t,
            "test2_accuracy": t,
            "train_accuracy": 1.0,
            "rotation_mean": 0.5,
            "rotation_min": 0.2,
        }
        for v, t in zip(val, test, strict=True)
    ]
    return _claims.stats(
        {"label": label, "kind": kind, "hparams": hp, "runs": runs}
    )


class _NoTest(dict):
    """A configuration's statistics whose test accuracies cannot be read."""

    def __getitem__(self, key):
        if key.startswith("test"):
            raise AssertionError(f"selection read {key}")
        return super().__getitem__(key)


def test_pick_reads_validation_only():
    good_val = _config("a", "sgd", [0.9, 0.91], [0.5, 0.52])
    good_test = _config("b", "sgd", [0.6, 0.61], [0.99, 0.98])
    diverged = _config("c", "sgd", [None, None], [None, None])
    rows = [_NoTest(c) for c in (good_test, diverged, good_val)]
    assert _claims.pick(rows)["label"] == "a"
    assert _claims.pick([good_val, good_test], on="test")["label"] == "b"


def _table():
    """SGD's best rate on validation is its worst on test."""
    default = {"learning_rate": 3.0**-3, "alpha": 0.0}
    same = ([0.95, 0.951, 0.949], [0.95, 0.951, 0.949])
    return {
        "fig1": [_config("layca", "layca", *same, **default)],
        "fig2": [
            _config("sgd-val", "sgd", [0.99, 0.99, 0.99], [0.90, 0.901, 0.899]),
            _config("sgd-test", "sgd", [0.5, 0.5, 0.5], [0.99, 0.991, 0.989]),
        ],
        "fig3": [_config("wd", "sgd-wd", *same)],
        "fig6": [
            _config("adam", "adam", *same),
            _config("adam-l", "adam-layca", *same),
        ],
        "fig8": [
            _config(f"lr{k}", "layca", *same, learning_rate=3.0**-k)
            for k in (2, 3)
        ],
    }


def test_verdicts_change_with_the_selection():
    table = _table()
    claims = _claims.verdicts(table)
    sgd = claims[1]
    assert "sgd-val" in sgd["evidence"] and "sgd-test" not in sgd["evidence"]
    assert sgd["verdict"] == "holds"  # Layca 95% beats the picked SGD's 90%
    assert sgd["verdict_picked_on_test"] == "does not hold"
    assert sgd["verdict_test2"] == "holds" and "test-2" in sgd["evidence_test2"]
    assert claims[4]["verdict_test2"] == "n/a"  # no test-2 for the MLP
    assert [c["verdict"] == c["verdict_picked_on_test"] for c in claims] == [
        True, False, True, True, True,
    ]  # fmt: skip
    lines = _repro_report._verdicts(claims)
    text = "\n".join(lines)
    assert "would change: claims 2." in text
    assert "**holds** (picked on test: does not hold)" in text


def test_no_test2_off_mnist1d():
    table = {name: [dict(c) for c in rows] for name, rows in _table().items()}
    for rows in table.values():
        for c in rows:
            c["test2_mean"] = c["test2_std"] = math.nan
    claims = _claims.verdicts(table)
    assert all(c["verdict_test2"] is None for c in claims)
    text = "\n".join(_repro_report._verdicts(claims))
    assert "Test-2 evidence" not in text and "| n/a |" in text
