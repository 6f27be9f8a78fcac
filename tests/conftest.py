"""Shared test settings: 8 CPU devices, strict JAX shapes, a key fixture."""

import jax
import pytest


# Eight virtual CPU devices for the sharding tests
# (tests/sharding/test_sharding.py):
# set before any array exists, i.e. before JAX's backends start. Tests that
# use one device are unaffected (arrays land on the first device).
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(params=["fused", "chain"])
def layca_path(request, monkeypatch):
    """Runs a test with `layca`'s fused step, then with its primitive chain.

    Modules opt in with `pytestmark = pytest.mark.usefixtures("layca_path")`.
    """
    import functools

    import layca_optax

    fused = request.param == "fused"
    original = layca_optax.layca
    monkeypatch.setattr(
        layca_optax, "layca", functools.partial(original, fused=fused)
    )
    return request.param
