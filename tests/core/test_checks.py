"""The public entry points and the name their errors give (``_checks``)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from layca_optax import _checks as checks, analysis, monitor, sharding


LR = 0.1
PARAMS = {"w": jnp.eye(3)}

# Context managers keep their owner's name in their own context (the body
# runs after the call returns); classes name their methods themselves.
_NOT_WRAPPED = {"psum_layer_sums"}


def _public_functions():
    for module in (layca_optax, monitor, analysis, sharding):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) and name not in _NOT_WRAPPED:
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("name, fn", list(_public_functions()))
def test_every_public_function_is_an_entry_point(name, fn):
    # @checks.public: functools.wraps keeps the name and the docstring.
    assert hasattr(fn, "__wrapped__"), f"{name} lacks @checks.public"
    assert fn.__name__ == name.rsplit(".", 1)[1]
    assert fn.__doc__


def test_errors_name_the_outermost_public_call_on_both_paths():
    for fused in (True, False):
        tx = layca_optax.layca(LR, axis=5, fused=fused)
        # fused=False chains project_to_tangent & co.: still `layca`.
        with pytest.raises(ValueError, match=r"^`layca\(axis=\.\.\.\)`"):
            tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    tx = layca_optax.project_to_tangent(axis=5)
    with pytest.raises(
        ValueError, match=r"^`project_to_tangent\(axis=\.\.\.\)`"
    ):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)


def test_errors_under_jit_name_the_public_call():
    tx = layca_optax.hyperball(LR, axis=5, mask=True, other=None)
    # Concrete params: init resolves the axes (for its zero-layer warning).
    with pytest.raises(ValueError, match=r"^`hyperball\(axis=\.\.\.\)`"):
        tx.init({"w": jnp.ones((2, 2))})
    state = jax.jit(tx.init)({"w": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match=r"^`hyperball\(axis=\.\.\.\)`"):
        jax.jit(tx.update)(PARAMS, state, PARAMS)


def test_the_name_is_reset_after_an_error_and_outside_calls():
    assert checks.caller() == "layca_optax"
    with pytest.raises(ValueError):
        layca_optax.layca(-1.0)
    assert checks.caller() == "layca_optax"
    with checks.calling("outer"):
        with checks.calling("inner"):
            assert checks.caller() == "outer"
        assert checks.arg("x") == "`outer(x=...)`"


def test_the_wrapped_transformation_keeps_its_type_and_works():
    tx = layca_optax.layca(LR, mask=True, other=None)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    u, _ = jax.jit(tx.update)(PARAMS, tx.init(PARAMS), PARAMS)
    new = optax.apply_updates(PARAMS, u)["w"]
    np.testing.assert_allclose(
        jnp.linalg.norm(new), jnp.linalg.norm(PARAMS["w"]), rtol=1e-6
    )


def test_scheduled_static_argument_is_caught_through_the_decorator():
    injected = optax.inject_hyperparams(layca_optax.layca)
    tx = injected(learning_rate=LR, mask=lambda p: {"w": True})
    with pytest.raises(ValueError, match=r"static_args=\('mask',\)"):
        tx.init(PARAMS)


@pytest.mark.parametrize(
    "key, ok",
    [
        (jax.random.key(0), True),
        (jax.random.PRNGKey(0), True),
        (jax.random.split(jax.random.key(0), 2), False),
        (np.zeros(3, np.uint32), False),
        (0, False),
    ],
)
def test_check_key(key, ok):
    with checks.calling("f"):
        if ok:
            checks.check_key(key)
        else:
            with pytest.raises(ValueError, match=r"^`f\(key=\.\.\.\)`"):
                checks.check_key(key)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3", None])
def test_check_count(value):
    with checks.calling("f"):
        with pytest.raises(
            ValueError, match=r"^`f\(n=\.\.\.\)` must be an int"
        ):
            checks.check_count(value, "n")
    checks.check_count(np.int64(3), "n")
