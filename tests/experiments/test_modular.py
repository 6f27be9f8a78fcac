"""The modular-arithmetic study: its data, its transformer, its training
path (``QUICK``, end to end), its verdicts and its command."""

import copy
import json
import math

import jax
import numpy as np
import pytest

import layca_optax
from layca_optax.experiments import cli as _cli
from layca_optax.experiments.data import modular_addition
from layca_optax.experiments.models import Transformer
from layca_optax.experiments.modular import (
    run as modular_run,
    settings as modular,
    stats,
)
from layca_optax.experiments.modular.train import steps_to


# ---------------------------------------------------------------- data


@pytest.mark.parametrize(("p", "fraction"), [(7, 0.5), (13, 0.3), (47, 0.5)])
def test_every_pair_once_with_its_label(p, fraction):
    data = modular_addition(p, fraction, 0.2, seed=3)
    xs = [data.x_train, data.x_val, data.x_test]
    ys = [data.y_train, data.y_val, data.y_test]
    x, y = np.concatenate(xs), np.concatenate(ys)
    pairs = {(int(a), int(b)) for a, b, _ in x}
    assert len(x) == p * p and len(pairs) == p * p  # each once: disjoint
    assert (x[:, 2] == p).all() and data.vocab == p + 1
    np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1]) % p)
    n_train_val = round(fraction * p * p)
    assert len(data.x_train) + len(data.x_val) == n_train_val
    assert len(data.x_val) == round(0.2 * n_train_val)
    assert x.dtype == y.dtype == np.int32
    assert not data.x_train.flags.writeable


def test_the_split_is_seeded():
    a, b = modular_addition(11, 0.5, seed=1), modular_addition(11, 0.5, seed=1)
    c = modular_addition(11, 0.5, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize(
    "args", [(1, 0.5), (7, 0.0), (7, 1.0), (7, 0.5, 1.0), (2, 0.01)]
)
def test_bad_splits_are_refused(args):
    with pytest.raises(ValueError, match="modular_addition"):
        modular_addition(*args)


# --------------------------------------------------------------- model


def _reference(params, tokens, heads, depth):
    """A plain transformer in NumPy: every position, causal attention."""
    p = jax.tree.map(np.asarray, params)
    x = p["embed"]["embedding"][tokens] + p["pos_embed"][: tokens.shape[1]]
    n = tokens.shape[1]
    for i in range(depth):
        b = p[f"block_{i}"]
        d = x.shape[-1] // heads
        q, k, v = (
            (x @ b[m]["kernel"]).reshape(*x.shape[:2], heads, d)
            for m in ("query", "key", "value")
        )
        s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
        s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        mixed = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(x.shape)
        x = x + mixed @ b["out"]["kernel"]
        hidden = np.maximum(x @ b["mlp_in"]["kernel"], 0)
        x = x + hidden @ b["mlp_out"]["kernel"]
    return x[:, -1] @ p["unembed"]["kernel"]


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_transformer_shapes_and_logits(depth):
    model = Transformer(12, 11, width=16, heads=4, mlp=32, depth=depth)
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (7, 3), 0, 12))
    params = model.init(jax.random.key(0), tokens)["params"]
    names = [
        layca_optax.path_str(k) for k, _ in jax.tree.leaves_with_path(params)
    ]
    assert sorted(names) == sorted(model.layer_names)
    assert len(names) == 3 + 6 * depth
    shapes = {
        n: np.shape(w)
        for n, w in zip(names, jax.tree.leaves(params), strict=True)
    }
    assert shapes["embed/embedding"] == (12, 16)
    assert shapes["pos_embed"] == (3, 16)
    assert shapes["block_0/mlp_in/kernel"] == (16, 32)
    assert shapes["unembed/kernel"] == (16, 11)
    logits = model.apply({"params": params}, tokens)
    assert logits.shape == (7, 11)
    expected = _reference(params, tokens, 4, depth)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------- steps to 99%


def test_steps_to_99():
    steps = [0, 50, 100, 150, 200]
    assert steps_to([0.1, 0.5, 0.99, 0.9, 1.0], steps) == 100
    assert steps_to([0.1, 0.989, 0.98, None, 0.5], steps) is None
    assert steps_to([None, 0.995, 1.0, 1.0, 1.0], steps) == 50
    assert steps_to([0.2, 0.6], [0, 20], target=0.5) == 20


# ------------------------------------------------------------ verdicts


def _stats(family, accs, steps):
    """A configuration's statistics from per-seed final test accuracies
    and steps to 99% (None: never)."""
    entry = {
        "family": family,
        "label": f"{family}, lr=1",
        "hparams": {"learning_rate": 1.0},
        "runs": [
            {
                "final_train": 1.0,
                "final_val": a,
                "final_test": a,
                "steps_to_99_val": s,
                "steps_to_99_test": s,
                "rotation": {"w": [0.0, 0.5]},
            }
            for a, s in zip(accs, steps, strict=True)
        ],
    }
    return stats.config_stats(entry)


ADAMW = _stats("adamw", [0.99, 1.0, 0.995], [400, 500, 600])


@pytest.mark.parametrize(
    ("accs", "verdict"),
    [
        ([0.99, 1.0, 0.995], "holds"),  # the same
        ([0.992, 0.99, 0.99], "holds"),  # 0.4 points below
        ([0.95, 0.94, 0.96], "does not hold"),  # 4.8 points, t << -2
        ([1.0, 0.5, 1.0], "inconclusive"),  # 16 points, |t| < 2
        ([1.0, None, 1.0], "inconclusive"),  # a diverged seed
    ],
)
def test_accuracy_verdict_follows_the_numbers(accs, verdict):
    x = _stats("sgd-layca", accs, [100, 100, 100])
    claim = stats.accuracy_claim(x, ADAMW)
    assert claim["verdict"] == verdict, claim["evidence"]
    assert "Welch t" in claim["evidence"]


@pytest.mark.parametrize(
    ("steps", "verdict"),
    [
        ([100, 150, 200], "holds"),  # faster
        ([1500, 1600, 1700], "does not hold"),  # slower, t >> 2
        ([100, 200, 3000], "inconclusive"),  # slower on average, |t| < 2
        ([100, 100, None], "does not hold"),  # fewer seeds reached it
    ],
)
def test_speed_verdict_follows_the_numbers(steps, verdict):
    x = _stats("hyperball", [1.0, 1.0, 1.0], steps)
    claim = stats.speed_claim(x, ADAMW)
    assert claim["verdict"] == verdict, claim["evidence"]


def test_speed_verdict_when_adamw_never_reaches_99():
    never = _stats("adamw", [0.5, 0.6, 0.7], [None, None, None])
    late = _stats("adam-layca", [1.0, 1.0, 1.0], [900, None, None])
    assert stats.speed_claim(late, never)["verdict"] == "holds"
    assert "never (0/3" in stats.speed_claim(late, never)["evidence"]
    neither = _stats("adam-layca", [0.5, 0.5, 0.5], [None, None, None])
    assert stats.speed_claim(neither, never)["verdict"] == "inconclusive"


# ---------------------------------------------------- QUICK, end to end


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("modular")
    return out, modular_run.run_modular(modular.QUICK, out, jobs=1)


@pytest.mark.slow  # the quick study end to end (module fixture)
def test_quick_run_is_complete_and_json_ready(quick):
    out, results = quick
    text = json.dumps(results, allow_nan=False)  # no NaN or infinity
    assert json.loads(text) == results
    written = json.loads((out / modular.RESULTS_NAME).read_text())
    assert written == results
    entries = results["entries"]
    assert [e["label"] for e in entries] == [
        u.label for u in modular.units(modular.QUICK)
    ]
    layers = entries[0]["setup"]["layers"]
    for entry in entries:
        assert entry["eval_steps"] == [0, 20, 40, 60]
        assert [r["seed"] for r in entry["runs"]] == [0, 1]
        for run in entry["runs"]:
            for key in ("train", "val", "test"):
                assert all(0 <= v <= 1 for v in run[key]), run[key]
            assert all(math.isfinite(v) for v in run["loss"])
            assert sorted(run["rotation"]) == sorted(layers)
            for curve in run["rotation"].values():
                assert len(curve) == 4 and curve[0] == pytest.approx(
                    0, abs=1e-6
                )
                assert all(0 <= v <= 2 for v in curve)
                assert curve[-1] > 1e-4  # every layer moved
            assert run["final_test"] == run["test"][-1]


@pytest.mark.slow  # the quick study end to end (module fixture)
def test_quick_summary_and_report(quick):
    out, results = quick
    block = results["results"]
    assert list(block["families"]) == list(modular.FAMILIES)
    assert len(block["claims"]) == 6
    for claim in block["claims"]:
        assert claim["verdict"] in ("holds", "does not hold", "inconclusive")
    adamw = block["families"]["adamw"]
    assert len(adamw["grid"]) == 2
    assert adamw["best"] == max(adamw["grid"], key=stats.selection_key)
    text = (out / modular.REPORT_NAME).read_text()
    assert "## Modular arithmetic with a transformer" in text
    for name in modular.FIGURE_NAMES.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in text


@pytest.mark.slow  # the quick study end to end (module fixture)
def test_selection_uses_validation_not_test(quick):
    _, results = quick
    entries = copy.deepcopy(results["entries"][:2])  # AdamW's two configs
    for entry, (val, test) in zip(
        entries, [(1.0, 0.2), (0.5, 0.9)], strict=True
    ):
        for run in entry["runs"]:
            run["final_val"], run["final_test"] = val, test
    block = stats.summarize(entries)
    assert block["families"]["adamw"]["best"]["label"] == entries[0]["label"]
    assert block["claims"] == []  # AdamW alone: nothing to compare


# ------------------------------------------------------------- command


@pytest.mark.slow  # the quick study end to end (module fixture)
def test_command_writes_its_files(tmp_path, capsys, quick):
    out = tmp_path / "out"  # compiled runs of `quick` are reused
    argv = ["modular", "--quick", "--jobs", "1", "--out", str(out)]
    assert _cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        printed.count("[holds]")
        + printed.count("[does not hold]")
        + (printed.count("[inconclusive]"))
        == 6
    )
    results = json.loads((out / modular.RESULTS_NAME).read_text())
    assert results["command"] == "layca-optax " + " ".join(argv)
    for name in [modular.REPORT_NAME, *modular.FIGURE_NAMES.values()]:
        assert (out / name).is_file()


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--steps", "30"], "multiple of 20"),
        (["--seeds", "0"], "--seeds"),
        (["--steps", "x"], "--steps"),
        (["--seed", "-1"], "--seed"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, word, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        _cli.main(["modular", "--quick", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert len(err.strip("\n").split("\n")) == 1 and word in err, err
    assert not out.exists()
