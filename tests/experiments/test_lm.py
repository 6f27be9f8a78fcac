"""The language-model study: its model (against a NumPy forward pass), its
layers and optimizers, its statistics and verdicts, its command's errors,
and ``lm --quick`` end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax
from layca_optax.experiments import cli as _cli
from layca_optax.experiments.lm import run as lm_run, settings, stats
from layca_optax.experiments.lm.optimizers import (
    block_kernel_mask,
    layer_mask,
    model_of,
    optimizer,
)
from layca_optax.experiments.lm.train import lr_shape, windows
from layca_optax.experiments.models import CharLM


pytest.importorskip("bible")

# ---------------------------------------------------------------- model


def _ln(x, scale):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * scale


def _gelu(x):  # Flax's default: the tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def numpy_forward(p, tokens, heads):
    """The pre-LN decoder in NumPy, from the params' own arrays."""
    p = jax.tree.map(np.asarray, p)
    b, n = tokens.shape
    x = p["embed"]["embedding"][tokens] + p["pos_embed"][:n]
    blocks = p["blocks"]
    for i in range(blocks["query"]["kernel"].shape[0]):
        k = {
            name: blocks[name]["kernel"][i]
            for name in blocks
            if name[:2] != "ln"
        }
        y = _ln(x, blocks["ln_attn"]["scale"][i])
        d = x.shape[-1] // heads
        q, kk, v = (
            (y @ k[name]).reshape(b, n, heads, d)
            for name in ("query", "key", "value")
        )
        s = np.einsum("bqhd,bkhd->bhqk", q, kk) / np.sqrt(d)
        s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        mixed = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, n, -1)
        x = x + mixed @ k["out"]
        h = _gelu(_ln(x, blocks["ln_mlp"]["scale"][i]) @ k["mlp_in"])
        x = x + h @ k["mlp_out"]
    return _ln(x, p["ln_final"]["scale"]) @ p["unembed"]["kernel"]


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.slow  # 9 s on 2 cores: out of `make test-fast`
def test_model_matches_numpy(depth):
    model = CharLM(vocab=7, length=9, width=16, heads=4, mlp=24, depth=depth)
    tokens = np.random.default_rng(0).integers(0, 7, (3, 9))
    params = model.init(jax.random.key(1), tokens)["params"]
    # LayerNorm scales off 1, so that they count
    params = jax.tree_util.tree_map_with_path(
        lambda path, w: w * 1.3 if "scale" in str(path) else w, params
    )
    got = model.apply({"params": params}, tokens)
    want = numpy_forward(params, tokens, heads=4)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    shorter = model.apply({"params": params}, tokens[:, :4])  # causal
    np.testing.assert_allclose(shorter, got[:, :4], rtol=2e-4, atol=2e-5)
    assert params["blocks"]["mlp_in"]["kernel"].shape == (depth, 16, 24)


@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_layers_and_stacked_axes():
    model = model_of(settings.QUICK, vocab=11)
    tokens = jnp.zeros((1, model.length), jnp.int32)
    params = model.init(jax.random.key(0), tokens)["params"]
    layers = layer_mask(params)
    assert not layers["blocks"]["ln_attn"]["scale"]
    assert layers["embed"]["embedding"] and layers["blocks"]["query"]["kernel"]
    muon = block_kernel_mask(params)
    assert not muon["embed"]["embedding"] and muon["blocks"]["out"]["kernel"]
    apply = lambda p, t: model.apply({"params": p}, t)
    axis = layca_optax.infer_stacked_axes(apply, params, tokens)
    assert axis["blocks"]["query"]["kernel"] == (1, 2)
    assert axis["unembed"]["kernel"] is None


@pytest.mark.parametrize("family", settings.FAMILIES)
@pytest.mark.slow  # 40 s on 2 cores: out of `make test-fast`
def test_each_optimizer_steps(family):
    s = settings.QUICK
    model = model_of(s, vocab=11)
    tokens = jnp.zeros((2, s.length), jnp.int32)
    params = model.init(jax.random.key(0), tokens)["params"]
    hp = {"learning_rate": 0.03, "weight_decay": 0.1, "factor": 0.5}
    tx = optimizer(family, hp, lr_shape(s), s, model)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    moved = jax.tree.map(lambda u: float(jnp.abs(u).max()), updates)
    assert all(v > 0 for v in jax.tree.leaves(moved)), moved


def test_windows_and_schedule():
    w = windows(np.arange(100), 9, 5)
    assert w.shape == (5, 10) and w[0, 0] == 0 and w[-1, -1] == 99
    shape = lr_shape(settings.DEFAULT)
    steps = settings.DEFAULT.steps
    assert float(shape(0)) < 0.1 and float(shape(steps // 2)) == 1.0
    assert float(shape(steps)) == 0.0


# ------------------------------------------------------------ verdicts


def _summary(losses, steps):
    reached = [s for s in steps if s is not None]
    return {
        "final_test_loss": stats.mean_sd(losses),
        "steps_to_target": {
            **stats.mean_sd(reached),
            "reached": len(reached),
            "seeds": len(steps),
        },
    }


@pytest.mark.parametrize(
    ("losses", "steps", "loss_verdict", "speed_verdict"),
    [
        ([2.0, 2.01, 1.99], [300, 310, 320], "holds", "holds"),
        ([2.2, 2.21, 2.19], [480, 490, 500], "does not hold", "does not hold"),
        ([1.9, 2.5, 2.0], [300, None, 350], "inconclusive", "does not hold"),
    ],
)
def test_verdicts_follow_the_numbers(
    losses, steps, loss_verdict, speed_verdict
):
    adamw = _summary([2.0, 2.005, 1.995], [400, 410, 420])
    x = _summary(losses, steps)
    assert stats.loss_claim("X", x, adamw)["verdict"] == loss_verdict
    assert stats.speed_claim("X", x, adamw)["verdict"] == speed_verdict


def test_steps_to_target():
    assert stats.steps_to([4.0, 2.5, 2.0], [0, 25, 50], 2.5) == 25
    assert stats.steps_to([4.0, None, 3.0], [0, 25, 50], 2.5) is None


# ------------------------------------------------------------- command


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--steps", "15"], "multiple of 10"),
        (["--seeds", "0"], "--seeds"),
        (["--scale"], "not allowed with"),
        (["--text", "/nonexistent/x.txt"], "cannot open"),
        (["--text", "/"], "not a regular file"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, word, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        _cli.main(["lm", "--quick", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert len(err.strip("\n").split("\n")) == 1 and word in err, err
    assert not out.exists()


def test_a_short_text_file_is_refused(tmp_path, capsys):
    f = tmp_path / "short.txt"
    f.write_text("to be or not to be " * 20)
    with pytest.raises(SystemExit):
        _cli.main(["lm", "--quick", "--text", str(f), "--out", str(tmp_path)])
    assert "each block needs at least 33" in capsys.readouterr().err


# ---------------------------------------------------- QUICK, end to end


@pytest.mark.slow
def test_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["lm", "--quick", "--jobs", "2", "--out", str(out)]
    assert _cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert sum(
        printed.count(f"[{v}]")
        for v in ("holds", "does not hold", "inconclusive")
    ) == 2 * (len(settings.FAMILIES) - 1) + 2 * len(stats.PAIRS)
    results = json.loads((out / settings.RESULTS_NAME).read_text())
    assert results["command"] == "layca-optax " + " ".join(argv)
    block = results["results"]
    assert list(block["families"]) == list(settings.FAMILIES)
    adamw = block["families"]["adamw"]
    finals = [s["final_val_loss"] for s in adamw["seeds"]]
    assert block["target"] == pytest.approx(np.mean(finals), rel=1e-5)
    for fam in block["families"].values():
        assert [s["seed"] for s in fam["seeds"]] == [0, 1]
        for seed in fam["seeds"]:
            assert (
                math.isfinite(seed["final_val_loss"])
                and seed["final_val_loss"] < 4
            )
            assert seed["final_test_bpc"] == pytest.approx(
                seed["final_test_loss"] / math.log(2), rel=1e-4
            )
            assert "steps_to_target" in seed and seed["chars_per_second"] > 0
    entry = results["entries"][1]  # adam-layca: every layer rotated
    rot = entry["runs"][0]["slices"]
    assert sorted(rot) == sorted(entry["setup"]["slices"])
    assert all(
        c[0] == pytest.approx(0, abs=1e-6) and c[-1] > 1e-3
        for c in rot.values()
    )
    text = (out / settings.REPORT_NAME).read_text()
    for name in settings.FIGURE_NAMES.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in text
    assert callable(lm_run.run_lm)
