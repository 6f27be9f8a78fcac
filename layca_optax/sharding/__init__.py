"""Sharded training: parameter and state shardings, sums over a mesh.

``from layca_optax import sharding``: recipes for the params' shardings
(FSDP, tensor parallel, both), the optimizer state's shardings, and the
context that completes Layca's per-layer sums inside ``jax.shard_map``.
``param_shardings`` and ``state_shardings`` live only here;
``psum_layer_sums`` and ``with_psum_layer_sums`` are also at the top level.
See ``docs/multihost.md``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from layca_optax import sharding
  >>> mesh = jax.make_mesh((1,), ("data",))
  >>> params = {"Dense_0": {"kernel": jnp.zeros((4, 2))}}
  >>> specs = sharding.param_shardings(params, mesh, fsdp="data")
  >>> specs["Dense_0"]["kernel"].spec
  P('data', None)
"""

from layca_optax._shard_map import psum_layer_sums, with_psum_layer_sums
from layca_optax.sharding._shardings import param_shardings, state_shardings


__all__ = (
    "param_shardings",
    "psum_layer_sums",
    "state_shardings",
    "with_psum_layer_sums",
)
