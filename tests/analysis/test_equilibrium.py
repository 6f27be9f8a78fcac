"""Rotational equilibrium closed forms against simulation (Kosson et al.)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


ROWS, DIM, STEPS, MEASURE = 2, 512, 2500, 500


def simulate(make_tx, settings):
    """Mean per-step angle over the last MEASURE of STEPS steps, per setting.

    Each of ROWS rows of the weights is a scale-invariant layer: its gradient
    is i.i.d. Gaussian, projected orthogonal to the row and divided by the
    row's norm (as behind a normalization layer). Rows start at unit norm,
    away from the equilibrium norm. One compilation for all settings (vmap).
    """
    w0 = jax.random.normal(jax.random.key(0), (ROWS, DIM))
    w0 = w0 / jnp.linalg.norm(w0, axis=1, keepdims=True)
    keys = jax.random.split(jax.random.key(1), STEPS)

    def run(hyper):
        tx = make_tx(*hyper)

        def body(carry, key):
            w, state = carry
            z = jax.random.normal(key, w.shape)
            ww = jnp.sum(w * w, axis=1, keepdims=True)
            g = z - jnp.sum(z * w, axis=1, keepdims=True) / ww * w
            updates, state = tx.update(g / jnp.sqrt(ww), state, w)
            new = optax.apply_updates(w, updates)
            rate = layca_optax.rotation_rate(new, w, axis=1)
            return (new, state), jnp.arctan(rate)

        _, angles = jax.lax.scan(body, (w0, tx.init(w0)), keys)
        return jnp.mean(angles[-MEASURE:])

    return np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(settings)))


def sgdm(lr, wd, momentum):  # torch.optim.SGD(momentum, weight_decay)
    return optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum))


def sgdm_decoupled(lr, wd, momentum):
    return optax.chain(
        optax.trace(momentum), optax.add_decayed_weights(wd), optax.scale(-lr)
    )


def adamw(lr, wd, b1, b2):
    return optax.adamw(lr, b1=b1, b2=b2, weight_decay=wd)


def lion(lr, wd, b1, b2):
    return optax.lion(lr, b1=b1, b2=b2, weight_decay=wd)


# (optimizer of the closed form, make_tx, settings (lr, wd, beta[, b2]),
# tolerance). Measured mean angle vs closed form, radians per step:
#   sgdm            0.02295 vs 0.02294 (1.0004), 0.03653 vs 0.03651 (1.0005)
#   sgdm decoupled  0.02298 vs 0.02294 (1.0016), 0.08182 vs 0.08165 (1.0020)
#   adamw           0.01634 vs 0.01622 (1.0075), 0.04085 vs 0.04082 (1.0005)
#   lion            0.00679 vs 0.00665 (1.0206), 0.00595 vs 0.00604 (0.9846)
CASES = {
    "sgdm": ("sgdm", sgdm, [(0.1, 5e-3, 0.9), (0.5, 2e-3, 0.5)], 0.05),
    "sgdm_decoupled": (
        "adamw",
        sgdm_decoupled,
        [(0.1, 5e-2, 0.9), (0.2, 5e-2, 0.5)],
        0.05,
    ),
    "adamw": (
        "adamw",
        adamw,
        [(1e-2, 0.25, 0.9, 0.999), (5e-3, 0.5, 0.5, 0.99)],
        0.05,
    ),
    "lion": (
        "lion",
        lion,
        [(2e-3, 0.5, 0.9, 0.99), (5e-4, 2.0, 0.95, 0.98)],
        0.10,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_simulated_equilibrium_angle_matches_closed_form(case):
    optimizer, make_tx, settings, tol = CASES[case]
    measured = simulate(make_tx, settings)
    for (lr, wd, *betas), got in zip(settings, measured, strict=True):
        names = {"sgdm": ["momentum"], "adamw": ["b1"], "lion": ["b1", "b2"]}
        kwargs = dict(zip(names[optimizer], betas, strict=False))
        want = layca_optax.analysis.equilibrium_rotation(
            optimizer, learning_rate=lr, weight_decay=wd, **kwargs
        )
        assert abs(got / want - 1) < tol, (case, lr, wd, got, want)


def test_closed_forms_and_inverse():
    rot = layca_optax.analysis.equilibrium_rotation(
        "sgdm", learning_rate=0.1, weight_decay=5e-4, momentum=0.9
    )
    assert rot == pytest.approx(math.sqrt(2 * 0.1 * 5e-4 / 1.9), rel=1e-15)
    rot = layca_optax.analysis.equilibrium_rotation(
        "adamw", learning_rate=1e-3, weight_decay=0.1
    )  # b1 defaults to optax.adamw's 0.9
    assert rot == pytest.approx(math.sqrt(2e-4 * 0.1 / 1.9), rel=1e-15)
    for optimizer, kw in [
        ("sgdm", {"momentum": 0.5}),
        ("sgdm", {}),
        ("adamw", {"b1": 0.8}),
        ("lion", {"b1": 0.9, "b2": 0.98}),
    ]:
        theta = layca_optax.analysis.equilibrium_rotation(
            optimizer, learning_rate=3e-3, weight_decay=0.07, **kw
        )
        wd = layca_optax.analysis.equilibrium_weight_decay(
            optimizer, learning_rate=3e-3, rotation=theta, **kw
        )
        assert wd == pytest.approx(0.07, rel=1e-12)
        rho = layca_optax.analysis.equilibrium_layca_learning_rate(
            optimizer, learning_rate=3e-3, weight_decay=0.07, **kw
        )
        assert math.atan(rho) == pytest.approx(theta, rel=1e-12)


class TestMisuse:
    """Inputs outside the formulas' domain: a ValueError naming the call and
    the bound."""

    @pytest.mark.parametrize(
        "call,match",
        [
            (
                lambda f: f("adam", learning_rate=0.1, weight_decay=0.1),
                r"\(optimizer=.*'adam'",
            ),
            (
                lambda f: f(
                    "adamw", learning_rate=0.1, weight_decay=0.1, momentum=0.9
                ),
                r"\(momentum=.*'adamw'",
            ),
            (
                lambda f: f(
                    "sgdm", learning_rate=0.1, weight_decay=0.1, b2=0.9
                ),
                r"\(b2=.*'sgdm'",
            ),
            (
                lambda f: f(
                    "adamw", learning_rate=0.1, weight_decay=0.1, b1=1.0
                ),
                r"\(b1=.*1\.0",
            ),
            (
                lambda f: f("sgdm", learning_rate=-0.1, weight_decay=0.1),
                r"\(learning_rate=.*-0\.1",
            ),
            (
                lambda f: f(
                    "sgdm", learning_rate=0.1, weight_decay=float("nan")
                ),
                r"\(weight_decay=.*nan",
            ),
        ],
    )
    @pytest.mark.parametrize(
        "fn",
        [
            layca_optax.analysis.equilibrium_rotation,
            layca_optax.analysis.equilibrium_layca_learning_rate,
        ],
    )
    def test_bad_inputs_raise(self, fn, call, match):
        with pytest.raises(ValueError, match=fn.__name__ + match):
            call(fn)

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            (
                {"learning_rate": 0.0, "rotation": 0.1},
                r"\(learning_rate=.*0\.0",
            ),
            ({"learning_rate": 0.1, "rotation": 2.0}, r"\(rotation=.*2\.0"),
            ({"learning_rate": 0.1, "rotation": -0.1}, r"\(rotation=.*-0\.1"),
        ],
    )
    def test_inverse_bad_inputs_raise(self, kwargs, match):
        with pytest.raises(
            ValueError, match=r"equilibrium_weight_decay" + match
        ):
            layca_optax.analysis.equilibrium_weight_decay("sgdm", **kwargs)

    def test_equilibrium_outside_its_domain(self):
        with pytest.raises(
            ValueError,
            match=r"`equilibrium_layca_learning_rate\(learning_rate=10, "
            r"weight_decay=10\)`: no rotational equilibrium for 'sgdm' with "
            r"learning_rate \* weight_decay = 100; it needs learning_rate \* "
            r"weight_decay < min\(1, pi\*\*2 / \(8 f\)\) = 1, with f = 1 ",
        ):
            layca_optax.analysis.equilibrium_layca_learning_rate(
                "sgdm", learning_rate=10, weight_decay=10
            )
        with pytest.raises(
            ValueError, match=r"`equilibrium_rotation\(learning_"
        ):
            layca_optax.analysis.equilibrium_rotation(
                "adamw", learning_rate=2.0, weight_decay=0.5
            )
        # Lion without momentum: f = pi/2, so the angle bound pi/4 binds first.
        with pytest.raises(ValueError, match=r"= 0\.785398, with f = 1\.5708"):
            layca_optax.analysis.equilibrium_layca_learning_rate(
                "lion", learning_rate=0.9, weight_decay=1.0, b1=0.0
            )
        # The inverse: a rotation whose weight decay would leave the domain.
        with pytest.raises(
            ValueError, match=r"`equilibrium_weight_decay\(rotation=1\.5\)`"
        ):
            layca_optax.analysis.equilibrium_weight_decay(
                "sgdm", learning_rate=0.1, rotation=1.5, momentum=0.9
            )

    def test_equilibrium_near_its_bound(self):
        rho = layca_optax.analysis.equilibrium_layca_learning_rate(
            "sgdm", learning_rate=0.99, weight_decay=1.0
        )
        assert rho == pytest.approx(math.tan(math.sqrt(2 * 0.99)))
        assert rho > 0
