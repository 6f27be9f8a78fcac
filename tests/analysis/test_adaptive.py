"""adam_nu_percentiles on real optax states, against NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


PARAMS = {
    "Dense_0": {"kernel": jnp.ones((5, 6)), "bias": jnp.zeros(6)},
    "Dense_1": {"kernel": jnp.ones((6, 3)), "bias": jnp.zeros(3)},
}
KERNELS = ["Dense_0/kernel", "Dense_1/kernel"]
STEPS = 3
# float32 state: 1 - b2 for b2 = 0.999 alone is off by up to 6e-5 relative.
RTOL = 1e-4
LABELS = lambda p: jax.tree.map(lambda x: "adam" if x.ndim >= 2 else "sgd", p)


def gradients(step):
    """Different, deterministic gradients for each step and entry."""
    rng = np.random.default_rng(step)
    return jax.tree.map(
        lambda x: jnp.asarray(rng.lognormal(size=x.shape), jnp.float32), PARAMS
    )


def run(tx):
    params, state = PARAMS, tx.init(PARAMS)
    for step in range(STEPS):
        updates, state = tx.update(gradients(step), state, params)
        params = optax.apply_updates(params, updates)
    return state


def reference_nu(b2):
    """Adam's nu after STEPS steps, in float64, as a flat {path: array}."""
    nu = {p: 0.0 for p in KERNELS + ["Dense_0/bias", "Dense_1/bias"]}
    for step in range(STEPS):
        g = gradients(step)
        for p in nu:
            a, b = p.split("/")
            nu[p] = b2 * nu[p] + (1 - b2) * np.float64(g[a][b]) ** 2
    return nu


OPTIMIZERS = {
    "adam": (optax.adam(1e-3), 0.999),
    "adamw": (optax.adamw(1e-3, b2=0.99), 0.99),
    "amsgrad": (optax.amsgrad(1e-3, b2=0.95), 0.95),
    "chain": (optax.chain(optax.clip(1e3), optax.adam(1e-3, b2=0.9)), 0.9),
    "inject": (optax.inject_hyperparams(optax.adam)(learning_rate=0.1), 0.999),
    "partition": (
        optax.partition(
            {"adam": optax.adam(1e-3, b2=0.9), "sgd": optax.sgd(0.1)}, LABELS
        ),
        0.9,
    ),
    "masked": (
        optax.masked(
            optax.adam(1e-3, b2=0.9),
            lambda p: jax.tree.map(lambda x: x.ndim >= 2, p),
        ),
        0.9,
    ),
    "layca": (
        layca_optax.layca(0.01, base=optax.scale_by_adam(b2=0.98)),
        0.98,
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_percentiles_match_numpy(name):
    tx, b2 = OPTIMIZERS[name]
    state = run(tx)
    want = reference_nu(b2)
    qs = (10, 50, 90)
    got = layca_optax.analysis.adam_nu_percentiles(state)
    assert list(got) == [f"adam_nu_p{q}/{p}" for q in qs for p in KERNELS]
    for q in qs:
        for p in KERNELS:
            ref = np.percentile(want[p], q)
            np.testing.assert_allclose(got[f"adam_nu_p{q}/{p}"], ref, RTOL)
    # Bias-corrected, with other percentiles.
    got = layca_optax.analysis.adam_nu_percentiles(
        state, percentiles=(0, 99.5), b2=b2
    )
    correction = 1 - b2**STEPS
    for q in (0, 99.5):
        for p in KERNELS:
            ref = np.percentile(want[p] / correction, q)
            key = f"adam_nu_hat_p{q:g}/{p}"
            np.testing.assert_allclose(got[key], ref, RTOL)


def test_jit_matches_eager():
    state = run(OPTIMIZERS["layca"][0])
    fn = functools.partial(
        layca_optax.analysis.adam_nu_percentiles, percentiles=(5, 95), b2=0.98
    )
    eager, jitted = fn(state), jax.jit(fn)(state)
    assert list(eager) == list(jitted)
    for k, v in eager.items():
        np.testing.assert_allclose(jitted[k], v, rtol=1e-5)


def test_mask_selects_vectors_and_orders_by_params():
    state = run(optax.adam(1e-3))
    want = reference_nu(0.999)
    only_bias = lambda p: jax.tree.map(lambda x: x.ndim == 1, p)
    got = layca_optax.analysis.adam_nu_percentiles(
        state, PARAMS, percentiles=[50], mask=only_bias, prefix="v"
    )
    assert list(got) == ["v_p50/Dense_0/bias", "v_p50/Dense_1/bias"]
    for p in ("Dense_0/bias", "Dense_1/bias"):
        np.testing.assert_allclose(
            got[f"v_p50/{p}"], np.median(want[p]), rtol=RTOL
        )


def test_before_the_first_step_is_zero():
    state = optax.adam(1e-3).init(PARAMS)
    got = layca_optax.analysis.adam_nu_percentiles(state, b2=0.999)
    assert all(float(v) == 0.0 for v in got.values())


def expect(pattern, *args, **kwargs):
    with pytest.raises(ValueError, match=pattern):
        layca_optax.analysis.adam_nu_percentiles(*args, **kwargs)


class TestMisuse:
    """Bad input to `adam_nu_percentiles`: a ValueError naming the
    argument and the value."""

    def test_bad_input(self):
        sgd_state = optax.sgd(0.1, momentum=0.9).init(PARAMS)
        expect(
            r"adam_nu_percentiles\(opt_state=\.\.\.\)` holds no Adam", sgd_state
        )
        state = run(optax.adam(1e-3))
        expect(r"percentiles=\.\.\.\).*\[150\]", state, percentiles=[150])
        expect(r"percentiles=\.\.\.\).*\(\)", state, percentiles=())
        expect(r"b2=\.\.\.\).*1\.0", state, b2=1.0)
        expect(r"mask=\.\.\.\)` needs `params`", state, mask=LABELS)
        partition = run(OPTIMIZERS["partition"][0])
        everything = lambda p: jax.tree.map(lambda _: True, p)
        expect(
            r"mask=\.\.\.\)` selects \['Dense_0/bias', 'Dense_1/bias'\]",
            partition,
            PARAMS,
            mask=everything,
        )
        twice = run(optax.chain(optax.scale_by_adam(), optax.scale_by_adam()))
        expect(r"'Dense_0/bias' has a second moment in two Adam states", twice)

    @pytest.mark.parametrize(
        "percentiles",
        ["50", "10", b"50", [10, "50"], 50],
        ids=["str", "str10", "bytes", "list_with_str", "int"],
    )
    def test_adam_nu_percentiles_refuses_strings_and_scalars(self, percentiles):
        with pytest.raises(
            ValueError,
            match=r"`adam_nu_percentiles\(percentiles=\.\.\.\)` must be a "
            r"non-empty list of numbers in \[0, 100\], got "
            + repr(percentiles).replace("[", r"\[").replace("]", r"\]"),
        ):
            layca_optax.analysis.adam_nu_percentiles(
                run(optax.adam(1e-3)), percentiles=percentiles
            )

    def test_adam_nu_percentiles_suggests_a_list(self):
        with pytest.raises(ValueError, match=r"got '50' .*write \[50\]"):
            layca_optax.analysis.adam_nu_percentiles(
                run(optax.adam(1e-3)), percentiles="50"
            )

    def test_adam_nu_percentiles_takes_any_iterable(self):
        state = run(optax.adam(1e-3))
        want = layca_optax.analysis.adam_nu_percentiles(
            state, percentiles=[10, 90]
        )
        got = layca_optax.analysis.adam_nu_percentiles(
            state, percentiles=(q for q in [10, 90])
        )
        assert list(got) == list(want)
        got = layca_optax.analysis.adam_nu_percentiles(
            state, percentiles=np.array([10, 90])
        )
        assert list(got) == list(want)
