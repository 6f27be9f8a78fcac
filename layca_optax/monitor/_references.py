"""What :func:`track_rotation`'s cosine distance to init compares with.

A reference strategy says what the state stores of each layer at init and
how the updated layer is compared with it at each step:

- ``None``: nothing; no cosine distance.
- ``"exact"``: a copy of the layer in its dtype, compared as it is.
- ``"bfloat16"``: a bfloat16 copy, compared as it is (the cosine distance
  divides by the copy's own norm, which cancels the radial part of its
  rounding error).
- ``"sketch"``: a CountSketch of the flattened layer, ``sketch_dim``
  numbers; each step the updated layer is sketched with the same hash and
  compared with it. The hash's seeds are drawn from ``key`` each step,
  never stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _checks as checks, _sums as sm
from layca_optax._axes import Axis
from layca_optax.monitor._formulas import cosine_from_sums, metric_sums


KINDS = ("exact", "bfloat16", "sketch")
EMPTY = optax.MaskedNode()


class Reference(NamedTuple):
    """A reference strategy (hashable: part of the per-leaf ``jit``'s key).

    Attributes:
      kind: ``None``, ``"exact"``, ``"bfloat16"`` or ``"sketch"``.
      sketch_dim: the sketch's size (``"sketch"`` only).
    """

    kind: str | None
    sketch_dim: int

    def store(self, w: jax.Array, seed: Any) -> Any:
        """What the state keeps of the layer ``w`` at init."""
        if self.kind is None:
            return EMPTY
        if self.kind == "sketch":
            stored = sketch(w, seed, self.sketch_dim)
            return jnp.concatenate([stored, size_words(w, stored.dtype)])
        dtype = jnp.bfloat16 if self.kind == "bfloat16" else w.dtype
        return jnp.array(w, dtype, copy=True)

    def cosine(
        self, new: jax.Array, ref: Any, seed: Any, axes: tuple[int, ...]
    ) -> jax.Array:
        """The cosine distance of the updated layer ``new`` to ``ref``, per
        layer of ``axes`` (kept dims, as :func:`_sums.layer_sums`)."""
        if self.kind != "sketch":
            return cosine_from_sums(**metric_sums(new, ref, axes))
        # One vector, whatever the layer's shape, and the layer's number of
        # entries: a state of a layer of another size (a checkpoint restored
        # into another model) reads NaN, not a distance between unrelated
        # sketches.
        dim = self.sketch_dim
        same = jnp.all(ref[dim:] == size_words(new, ref.dtype))
        cosine = cosine_from_sums(
            **metric_sums(sketch(new, seed, dim), ref[:dim], (0,))
        )
        return jnp.where(same, cosine, jnp.nan)


def check_reference(
    reference: Any, sketch_dim: Any, axis: Axis, key: Any
) -> Reference:
    """The strategy, or ``ValueError`` naming the bad argument."""
    if reference is not None and reference not in KINDS:
        raise ValueError(
            f"{checks.arg('reference')} must be None, 'exact', 'bfloat16' "
            f"or 'sketch', got {reference!r}."
        )
    checks.check_count(sketch_dim, "sketch_dim")
    if reference == "sketch" and axis is not None:
        raise ValueError(
            f"{checks.arg('axis')} must be None with reference='sketch', "
            f"got {axis!r}."
        )
    if key is not None:
        checks.check_key(key)
    return Reference(reference, int(sketch_dim))


def seeds(reference: Reference, key: Any, n: int) -> Any:
    """Two uint32 words per leaf of ``n`` for the sketch's hash, drawn from
    ``key`` (default ``jax.random.key(0)``); ``None`` per leaf otherwise."""
    if reference.kind != "sketch" or not n:
        return [None] * n
    key = jax.random.key(0) if key is None else key
    return jax.random.bits(key, (n, 2), jnp.uint32)


def _mix(x: jax.Array) -> jax.Array:
    """lowbias32 (C. Wellons): a full-avalanche hash of uint32 words."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def size_words(x: jax.Array, dtype: Any) -> np.ndarray:
    """``x``'s number of entries as two floats, each exact in float32:
    ``size mod 2^20`` and ``size // 2^20`` (the sketch's last two)."""
    return np.asarray([x.size % 2**20, x.size // 2**20], dtype)


def sketch(x: jax.Array, seed: jax.Array, dim: int) -> jax.Array:
    """CountSketch of the flattened ``x``: each entry goes, with a random
    sign, to one of ``dim`` buckets, both hashed from its index and the
    two-word ``seed``."""
    x = jnp.ravel(x).astype(sm.reduction_dtype(x.dtype))
    h = _mix(_mix(jnp.arange(x.size, dtype=jnp.uint32) ^ seed[0]) + seed[1])
    sign = jnp.where(h >> 31 == 0, 1.0, -1.0).astype(x.dtype)
    bucket = ((h & 0x7FFFFFFF) % dim).astype(jnp.int32)
    return jax.ops.segment_sum(sign * x, bucket, num_segments=dim)
