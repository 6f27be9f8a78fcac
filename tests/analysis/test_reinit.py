"""reinit_robustness on an MLP trained on scikit-learn's digits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import layca_optax


SIZES = (64, 64, 64, 10)
STEPS = (10, 50, 300)  # checkpoints after these steps
LABELS = ("0", "10", "50", "300")
KERNELS = ("Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel")
HE = jax.nn.initializers.he_normal()  # a truncated normal of variance 2/fan_in


def he_init_fn(key, path, shape, dtype):
    return HE(key, shape, dtype)


def apply(params, x):
    for i in range(len(SIZES) - 1):
        layer = params[f"Dense_{i}"]
        x = x @ layer["kernel"] + layer["bias"][None]
        x = jax.nn.relu(x) if i < len(SIZES) - 2 else x
    return x


@pytest.fixture(scope="module")
def mlp():
    """Full-batch SGD on 1200 digits; checkpoints after 0, 10, 50, 300 steps."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int32)
    x_train, y_train = jnp.asarray(x[:1200]), jnp.asarray(y[:1200])
    x_test, y_test = jnp.asarray(x[1200:]), jnp.asarray(y[1200:])
    tx = optax.sgd(0.1)

    def loss(p):
        logits = apply(p, x_train)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, y_train
        ).mean()

    rng = np.random.default_rng(1)  # He normal: N(0, 2 / fan_in)
    init = {
        f"Dense_{i}": {
            "kernel": jnp.asarray(rng.normal(0, math.sqrt(2 / a), (a, b))),
            "bias": jnp.zeros(b),
        }
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True))
    }
    init = jax.tree.map(lambda x: x.astype(jnp.float32), init)

    @jax.jit
    def train(init):  # one compilation for all steps
        def step(carry, _):
            p, s = carry
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, updates)
            return (p, s), p

        _, path = jax.lax.scan(step, (init, tx.init(init)), length=STEPS[-1])
        return [init] + [
            jax.tree.map(lambda x, n=n: x[n - 1], path) for n in STEPS
        ]

    def accuracy(p):
        return jnp.mean(jnp.argmax(apply(p, x_test), -1) == y_test)

    checkpoints = train(init)
    return accuracy, checkpoints[-1], checkpoints


@pytest.fixture(scope="module")
def result(mlp):
    accuracy, params, checkpoints = mlp
    return layca_optax.analysis.reinit_robustness(
        accuracy,
        params,
        checkpoints,
        key=jax.random.key(1),
        num_draws=4,
        checkpoint_labels=LABELS,
    )


@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_final_checkpoint_column_equals_the_unmodified_metric(mlp, result):
    accuracy, params, _ = mlp
    assert result.paths == KERNELS
    assert result.reinit.shape == (3, 4) and result.rerandom.shape == (3, 4)
    assert result.baseline == float(jax.jit(accuracy)(params))
    assert result.baseline > 0.9  # trained
    np.testing.assert_array_equal(result.reinit[:, -1], result.baseline)
    for row in result.to_table():
        assert row["300"] == result.baseline


def test_reset_to_init_hurts_some_layer(result):
    drops = result.drop()
    np.testing.assert_allclose(drops, result.baseline - result.reinit)
    assert drops[:, 0].max() > 0.05
    verdicts = result.classify()
    for path, d in zip(result.paths, drops[:, 0], strict=True):
        assert verdicts[path] == ("robust" if d <= 0.01 else "critical")
    assert "critical" in verdicts.values()
    # Re-randomized layers do worse than those reset to initialization.
    assert np.all(result.rerandom.mean(axis=1) < result.reinit[:, 0])
    print("\n" + result.to_markdown())


def test_map_matches_vmap_and_draws_do_not_depend_on_the_layer_set(mlp, result):
    accuracy, params, checkpoints = mlp
    one = layca_optax.analysis.reinit_robustness(
        accuracy,
        params,
        checkpoints,
        key=jax.random.key(1),
        num_draws=4,
        layers=["Dense_2/kernel"],
        batch="map",
    )
    assert one.paths == ("Dense_2/kernel",)
    assert one.checkpoint_labels == ("init", "1", "2", "3")
    atol = 1.5 / 597  # at most one test sample may flip under batching
    np.testing.assert_allclose(one.reinit[0], result.reinit[2], atol=atol)
    np.testing.assert_allclose(one.rerandom[0], result.rerandom[2], atol=atol)
    assert one.reinit[0, -1] == result.baseline


def relative_variance_tolerance(n):
    """5 standard errors of a Gaussian sample variance over n values."""
    return 5 * math.sqrt(2 / (n - 1))


def test_default_draws_follow_the_initial_values_variance(mlp, result):
    accuracy, params, checkpoints = mlp
    init = checkpoints[0]
    draws = layca_optax.analysis.rerandom_draws(
        init, key=jax.random.key(1), num_draws=4
    )
    assert list(draws) == list(KERNELS)
    for path, a, b in zip(KERNELS, SIZES[:-1], SIZES[1:], strict=True):
        w0 = np.asarray(init[path.split("/")[0]]["kernel"], np.float64)
        d = np.asarray(draws[path], np.float64)
        assert d.shape == (4, a, b)
        tol = relative_variance_tolerance(d.size)
        assert abs(d.var() / w0.var() - 1) < tol, path
        # ... and so the initializer's 2 / fan_in, up to the error of both.
        both = tol + relative_variance_tolerance(w0.size)
        assert abs(d.var() / (2 / a) - 1) < both, path
        mean_tol = 5 * math.sqrt(w0.var() / d.size)
        assert abs(d.mean() - w0.mean()) < mean_tol, path
        # Fresh: uncorrelated with the initial value and with each other.
        corr = np.corrcoef(d.reshape(4, -1), w0.reshape(1, -1))
        assert np.abs(corr - np.eye(5)).max() < 5 / math.sqrt(w0.size)
    # These are the draws behind `result.rerandom`.
    p = jax.tree.map(lambda x: x, params)
    for k in range(4):
        p["Dense_1"] = dict(p["Dense_1"], kernel=draws["Dense_1/kernel"][k])
        got = float(jax.jit(accuracy)(p))
        assert abs(got - result.rerandom[1, k]) <= 1.5 / 597


def test_init_fn_draws_follow_he_normal_variance(mlp):
    _, _, checkpoints = mlp
    draws = layca_optax.analysis.rerandom_draws(
        checkpoints[0],
        key=jax.random.key(3),
        init_fn=he_init_fn,
        layers=["Dense_0/kernel"],
        num_draws=8,
    )
    d = np.asarray(draws["Dense_0/kernel"], np.float64)
    assert d.shape == (8, 64, 64)
    tol = relative_variance_tolerance(d.size)
    assert abs(d.var() / (2 / 64) - 1) < tol
    assert abs(d.mean()) < 5 * math.sqrt(2 / 64 / d.size)
    assert np.abs(d).max() <= 2 * math.sqrt(2 / 64) / 0.8796 + 1e-6
    assert not np.allclose(d[0], d[1])


def test_init_fn_gets_each_layer(mlp):
    accuracy, params, checkpoints = mlp
    seen = []

    def zeros(key, path, shape, dtype):
        seen.append((path, shape, dtype))
        return jnp.zeros(shape, dtype)

    r = layca_optax.analysis.reinit_robustness(
        accuracy,
        params,
        checkpoints,
        key=jax.random.key(3),
        init_fn=zeros,
        layers=["Dense_2/kernel", "Dense_0/kernel"],  # rows in this order
        num_draws=2,
    )
    assert r.paths == ("Dense_2/kernel", "Dense_0/kernel")
    assert seen == [
        ("Dense_2/kernel", (64, 10), jnp.float32),
        ("Dense_0/kernel", (64, 64), jnp.float32),
    ]
    for row, name in enumerate(("Dense_2", "Dense_0")):
        zero = jnp.zeros_like(params[name]["kernel"])
        p = dict(params, **{name: dict(params[name], kernel=zero)})
        want = float(jax.jit(accuracy)(p))
        np.testing.assert_allclose(r.rerandom[row], want, atol=1.5 / 597)


SMALL = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}
RENAMED = {"Dense_0": {"kernel": jnp.ones((3, 4)), "b": jnp.zeros(4)}}
WIDE = {"Dense_0": {"kernel": jnp.ones((3, 5)), "bias": jnp.zeros(4)}}
BAD_INPUT = {
    r"\(checkpoints=\.\.\.\)` is empty": ([], {}),
    r"\(checkpoints=\.\.\.\)`: checkpoint 1 does not have the structure "
    r"of `params` \(missing \['Dense_0/bias'\], extra \['Dense_0/b'\]\)": (
        [SMALL, RENAMED],
        {},
    ),
    r"\(checkpoints=\.\.\.\)`: checkpoint 0, leaf 'Dense_0/kernel' has "
    r"shape \(3, 5\), `params` has \(3, 4\)": ([WIDE], {}),
    r"\(layers=\.\.\.\)`: no leaf 'Dense_0/kernl' in `params` \(closest: "
    r"\['Dense_0/kernel', 'Dense_0/bias'\]": (
        [SMALL],
        {"layers": "Dense_0/kernl"},
    ),
    r"\(layers=\.\.\.\)` leaves must be Python bools": (
        [SMALL],
        {"layers": {"Dense_0": 1}},
    ),
    r"\(layers=\.\.\.\)`: no leaf 'Dense_1/kernel'": (
        [SMALL],
        {"layers": ["Dense_1/kernel"]},
    ),
    r"\(layers=.*\)` selects no leaf": (
        [SMALL],
        {"layers": {"Dense_0": False}},
    ),
    r"\(batch=\.\.\.\)": ([SMALL], {"batch": "pmap"}),
    r"\(num_draws=\.\.\.\)` must be an int >= 1 .*, got -1": (
        [SMALL],
        {"num_draws": -1},
    ),
    r"\(checkpoint_labels=\.\.\.\)` has 1 labels for 2": (
        [SMALL, SMALL],
        {"checkpoint_labels": ["init"]},
    ),
    r"\(eval_fn=\.\.\.\)` must return a scalar": (
        [SMALL],
        {"eval_fn": lambda p: p["Dense_0"]["bias"]},
    ),
    r"\(init_fn=\.\.\.\)` returned shape \(3,\) for leaf 'Dense_0/kernel'": (
        [SMALL],
        {"init_fn": lambda key, path, shape, dtype: jnp.zeros(3)},
    ),
}


def test_key_path_layers():
    key_path = (jax.tree_util.DictKey("Dense_0"), jax.tree_util.DictKey("bias"))
    r = layca_optax.analysis.reinit_robustness(
        lambda p: jnp.sum(p["Dense_0"]["bias"]),
        SMALL,
        [SMALL],
        key=jax.random.key(0),
        layers=[key_path],
    )
    assert r.paths == ("Dense_0/bias",) and r.rerandom.shape == (1, 1)
    assert r.reinit.tolist() == [[0.0]] and r.baseline == 0.0


def kernel_sum(params):
    return jnp.sum(params["Dense_0"]["kernel"])


def _reinit_fields(**changes):
    fields = {
        "paths": ("a", "b"),
        "checkpoint_labels": ("init", "final"),
        "baseline": 0.9,
        "reinit": np.array([[0.5, 0.9], [0.9, 0.9]]),
        "rerandom": np.zeros((2, 1)),
    }
    return fields | changes


class TestMisuse:
    """Bad input to `reinit_robustness`, `rerandom_draws` and
    `ReinitResult`: a ValueError naming the call, the argument and the
    value."""

    @pytest.mark.parametrize("pattern", list(BAD_INPUT))
    def test_bad_input(self, pattern):
        checkpoints, kwargs = BAD_INPUT[pattern][0], dict(BAD_INPUT[pattern][1])
        eval_fn = kwargs.pop(
            "eval_fn", lambda p: jnp.sum(p["Dense_0"]["kernel"])
        )
        with pytest.raises(ValueError, match="`reinit_robustness" + pattern):
            layca_optax.analysis.reinit_robustness(
                eval_fn, SMALL, checkpoints, key=jax.random.key(0), **kwargs
            )

    @pytest.mark.parametrize("num_draws", [0, -1, 1.0, True, "2"])
    def test_reinit_robustness_num_draws(self, num_draws):
        with pytest.raises(
            ValueError,
            match=r"`reinit_robustness\(num_draws=\.\.\.\)` must be an int "
            rf">= 1 \(re-randomized draws per layer\), got {num_draws!r}\.",
        ):
            layca_optax.analysis.reinit_robustness(
                kernel_sum,
                SMALL,
                [SMALL],
                key=jax.random.key(0),
                num_draws=num_draws,
            )

    def test_rerandom_draws_num_draws(self):
        with pytest.raises(
            ValueError, match=r"`rerandom_draws\(num_draws=\.\.\.\)"
        ):
            layca_optax.analysis.rerandom_draws(
                SMALL, key=jax.random.key(0), num_draws=0
            )

    @pytest.mark.parametrize(
        "key,got",
        [
            (0, "0"),
            ("seed", "'seed'"),
            (jnp.zeros(3), r"an array of shape \(3,\) and dtype float32"),
            (jax.random.split(jax.random.key(0)), r"an array of \(2,\) keys"),
        ],
    )
    def test_reinit_robustness_key(self, key, got):
        with pytest.raises(
            ValueError,
            match=r"`reinit_robustness\(key=\.\.\.\)` must be one JAX PRNG "
            r"key, jax\.random\.key\(seed\) \(or a legacy "
            rf"jax\.random\.PRNGKey\(seed\)\), got {got}\.",
        ):
            layca_optax.analysis.reinit_robustness(
                kernel_sum, SMALL, [SMALL], key=key
            )
        with pytest.raises(ValueError, match=r"`rerandom_draws\(key=\.\.\.\)`"):
            layca_optax.analysis.rerandom_draws(SMALL, key=key)

    def test_reinit_robustness_takes_legacy_keys(self):
        new = layca_optax.analysis.reinit_robustness(
            kernel_sum, SMALL, [SMALL], key=jax.random.key(3), num_draws=2
        )
        old = layca_optax.analysis.reinit_robustness(
            kernel_sum, SMALL, [SMALL], key=jax.random.PRNGKey(3), num_draws=2
        )
        np.testing.assert_array_equal(new.rerandom, old.rerandom)

    @pytest.mark.parametrize(
        "change, match",
        [
            (
                {"paths": "ab"},
                r"ReinitResult\(paths=\.\.\.\)` must be a sequence",
            ),
            ({"paths": ("a", 1)}, r"paths=.*sequence of str"),
            ({"paths": ("a", "a")}, r"paths=.*distinct"),
            ({"checkpoint_labels": ()}, r"checkpoint_labels=.*at least one"),
            ({"baseline": "0.9"}, r"baseline=.*a real number"),
            ({"baseline": True}, r"baseline=.*a real number"),
            (
                {"reinit": np.zeros((2, 3))},
                r"reinit=.*shape \(2, 3\).*\[2, 2\]",
            ),
            ({"reinit": np.zeros(4)}, r"reinit=.*2-D array"),
            ({"reinit": np.full((2, 2), "x")}, r"reinit=.*real numbers"),
            ({"rerandom": np.zeros((3, 1))}, r"rerandom=.*\[2, draws\]"),
            ({"tolerance": -0.1}, r"tolerance=.*non-negative"),
            ({"tolerance": float("nan")}, r"tolerance=.*finite"),
            ({"higher_is_better": 1}, r"higher_is_better=.*a bool"),
        ],
    )
    def test_reinit_result_checks_its_fields(self, change, match):
        with pytest.raises(ValueError, match=match):
            layca_optax.analysis.ReinitResult(**_reinit_fields(**change))

    def test_reinit_result_normalizes_its_fields(self):
        r = layca_optax.analysis.ReinitResult(
            **_reinit_fields(paths=["a", "b"], reinit=[[1, 0], [0, 1]])
        )
        assert r.paths == ("a", "b") and r.reinit.dtype == np.float64
