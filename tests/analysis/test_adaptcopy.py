"""AdaptCopy: record any optimizer's rotation rates, replay them with Layca."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


SIZES = [8, 32, 32, 4]  # a 3-layer MLP
STEPS = 30


def init_mlp(seed=0):
    rng = np.random.default_rng(seed)
    return {
        f"Dense_{i}": {
            "kernel": np.float32(rng.normal(size=(a, b)) / np.sqrt(a)),
            "bias": np.zeros(b, np.float32),
        }
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True))
    }


def make_data(seed=1):
    rng = np.random.default_rng(seed)
    x = np.float32(rng.normal(size=(256, SIZES[0])))
    y = np.argmax(x @ rng.normal(size=(SIZES[0], SIZES[-1])), -1)
    return x, y


X, Y = make_data()


@jax.jit
def loss_fn(params, x, y):
    for i in range(len(SIZES) - 1):
        layer = params[f"Dense_{i}"]
        x = x @ layer["kernel"] + layer["bias"][None]
        if i < len(SIZES) - 2:
            x = jax.nn.relu(x)
    return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()


def train(tx, params, steps=STEPS):
    """`steps` full-batch steps under jit; each step's rotation-rate row."""

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            grads = jax.grad(loss_fn)(p, X, Y)
            updates, s = tx.update(grads, s, p)
            new = optax.apply_updates(p, updates)
            return (new, s), layca_optax.analysis.rotation_rate_row(new, p)

        (p, _), rows = jax.lax.scan(
            body, (params, tx.init(params)), None, length=steps
        )
        return p, rows

    return run(params)


@pytest.fixture(scope="module")
def recorded():
    params = init_mlp()
    final, rows = train(optax.adam(1e-2), params)
    assert loss_fn(final, X, Y) < 0.8 * loss_fn(params, X, Y)
    return params, layca_optax.analysis.RotationRecording.from_rows(
        params, rows
    )


def test_recording_layout(recorded):
    params, rec = recorded
    assert rec.paths == ("Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel")
    assert rec.rates.shape == (STEPS, 3) and rec.rates.dtype == np.float64
    assert np.all(rec.rates > 1e-3) and np.all(np.isfinite(rec.rates))
    # Adam's rates differ across layers and steps: worth copying.
    assert rec.rates.std(axis=0).min() > 0 and rec.rates.std(axis=1).max() > 0


def test_save_load_round_trip(recorded, tmp_path):
    _, rec = recorded
    file = tmp_path / "adam_rates.npz"
    rec.save(file)
    assert os.listdir(tmp_path) == ["adam_rates.npz"]  # no temp file left
    loaded = layca_optax.analysis.RotationRecording.load(file)
    assert loaded.paths == rec.paths
    np.testing.assert_array_equal(loaded.rates, rec.rates)
    rec.save(str(file))  # overwriting is atomic too
    with np.load(file, allow_pickle=False) as raw:
        assert raw["paths"].dtype.kind == "U"


@pytest.mark.parametrize(
    "base", [None, optax.ema(0.9, debias=False)], ids=["sgd", "sgd_amom"]
)
def test_replay_reproduces_recorded_rates(recorded, base):
    params, rec = recorded
    tx = layca_optax.analysis.adapt_copy(rec, base, other=optax.sgd(0.1))
    final, rows = train(tx, params, steps=STEPS + 3)
    rows = np.asarray(rows, np.float64)
    rel = np.abs(rows[:STEPS] - rec.rates) / rec.rates
    assert rel.max() < 1e-4, rel.max()
    # Past the end, the last recorded row is reused.
    np.testing.assert_allclose(
        rows[STEPS:], np.broadcast_to(rec.rates[-1], (3, 3)), rtol=1e-4
    )
    # The replay trained: the biases moved with `other`, the loss went down.
    assert not np.allclose(final["Dense_0"]["bias"], 0.0)
    assert loss_fn(final, X, Y) < 0.8 * loss_fn(params, X, Y)


def test_zero_step_threshold():
    with jax.enable_x64(True):
        w = {"w": jnp.eye(4, 3, dtype=jnp.float64)}
        g = {"w": jnp.full((4, 3), 1e-3, jnp.float64)}  # ||g_perp|| ~ 3e-3
        rec = layca_optax.analysis.RotationRecording(("w",), [[1e-5], [1e-3]])
        turned = []
        for eps in (1e-7, 0.0):
            tx = layca_optax.analysis.adapt_copy(rec, eps=eps)
            state, p, rates = tx.init(w), w, []
            for _ in range(2):
                u, state = jax.jit(tx.update)(g, state, p)
                new = optax.apply_updates(p, u)
                rates.append(
                    float(layca_optax.analysis.rotation_rate_row(new, p)[0])
                )
                p = new
            turned.append(rates)
    # 1e-5 * 3e-3 <= 1e-7: no turn; 1e-3 * 3e-3 > 1e-7: replayed exactly.
    np.testing.assert_allclose(turned[0], [0.0, 1e-3], rtol=1e-12, atol=0)
    np.testing.assert_allclose(turned[1], [1e-5, 1e-3], rtol=1e-10)


class TestMisuse:
    """Bad recordings and arguments of `adapt_copy` and
    `RotationRecording`: a ValueError naming the argument and the value."""

    def test_recording_must_match_layers(self, recorded):
        params, rec = recorded
        bad = layca_optax.analysis.RotationRecording(
            ("Dense_0/kernel", "Dense_1/kernel", "Dense_9/kernel"), rec.rates
        )
        tx = layca_optax.analysis.adapt_copy(bad)
        with pytest.raises(
            ValueError, match=r"adapt_copy\(recording=.*Dense_9"
        ):
            tx.init(params)

    @pytest.mark.parametrize(
        "rates,match",
        [
            (np.zeros((0, 1)), "at least one step"),
            ([[0.1], [-0.2]], "non-negative"),
            ([[0.1], [np.inf]], "finite"),
        ],
    )
    def test_bad_recordings_raise(self, rates, match):
        rec = layca_optax.analysis.RotationRecording(("w",), rates)
        with pytest.raises(
            ValueError, match=r"adapt_copy\(recording=.*" + match
        ):
            layca_optax.analysis.adapt_copy(rec)

    def test_bad_arguments_raise(self, tmp_path):
        with pytest.raises(
            ValueError, match=r"RotationRecording\(rates=.*\(2, 3\)"
        ):
            layca_optax.analysis.RotationRecording(("a", "b"), np.zeros((2, 3)))
        with pytest.raises(
            ValueError, match=r"RotationRecording\(paths=.*duplicates"
        ):
            layca_optax.analysis.RotationRecording(("a", "a"), np.zeros((2, 2)))
        with pytest.raises(ValueError, match=r"adapt_copy\(recording=.*dict"):
            layca_optax.analysis.adapt_copy({"w": [0.1]})
        rec = layca_optax.analysis.RotationRecording(("w",), [[0.1]])
        with pytest.raises(ValueError, match=r"adapt_copy\(eps=.*-1"):
            layca_optax.analysis.adapt_copy(rec, eps=-1.0)
        with pytest.raises(ValueError, match=r"adapt_copy\(base="):
            layca_optax.analysis.adapt_copy(rec, base="adam")
        np.savez(tmp_path / "other.npz", x=np.zeros(2))
        with pytest.raises(ValueError, match=r"RotationRecording.load.*'x'"):
            layca_optax.analysis.RotationRecording.load(tmp_path / "other.npz")

    def test_rotation_recording_refuses_one_string(self):
        with pytest.raises(
            ValueError,
            match=r"`RotationRecording\(paths=\.\.\.\)` must be a sequence of "
            r"path strings, one per column, got the single string 'ab'; for "
            r"one layer write \('ab',\)",
        ):
            layca_optax.analysis.RotationRecording("ab", [[0.1, 0.2]])
        rec = layca_optax.analysis.RotationRecording(("ab",), [[0.1]])
        assert rec.paths == ("ab",)

    @pytest.mark.parametrize(
        "paths,rates,match",
        [
            (3, [[0.1]], r"\(paths=\.\.\.\)` must be distinct strings .*got 3"),
            (("w",), "fast", r"\(rates=\.\.\.\)` must be numbers .*got str"),
        ],
    )
    def test_rotation_recording_bad_types(self, paths, rates, match):
        with pytest.raises(ValueError, match=r"`RotationRecording" + match):
            layca_optax.analysis.RotationRecording(paths, rates)
