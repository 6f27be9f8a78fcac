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


# The chain's cases are slow-marked: `make test-fast` runs the fused step
# only (the chain is still compared with it there, in
# test_fused_step_matches_the_primitive_chain); `make test` runs both.
@pytest.fixture(params=["fused", pytest.param("chain", marks=pytest.mark.slow)])
def layca_path(request, monkeypatch):
    """Runs a test with `layca`'s fused step, then with its primitive chain.

    Only tests that build a `layca` opt in, one by one (or a class):
    ``@pytest.mark.usefixtures("layca_path")``. They build it inside the
    test through ``layca_optax.layca`` (a cache reads the path from its
    ``keywords``); tests/core/test_layca_path.py checks that no such module
    imports ``layca`` by name or builds one at import.
    """
    import functools

    import layca_optax

    fused = request.param == "fused"
    original = layca_optax.layca
    monkeypatch.setattr(
        layca_optax, "layca", functools.partial(original, fused=fused)
    )
    return request.param
