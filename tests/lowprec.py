"""Helpers of the bfloat16/float16 tests: stored values, the neighbours of
a value in a low-precision dtype (from the dtype's full list of values,
independent of JAX)."""

import jax
import jax.numpy as jnp
import numpy as np


LOW = [jnp.bfloat16, jnp.float16]
DRIFT = "ignore:.*would drift:UserWarning"


def stored(x):
    """``x`` rounded to its dtype even where XLA keeps a bfloat16 result in
    float32 inside one jit (excess precision): as a step's output is."""
    info = jnp.finfo(x.dtype)
    wide = jax.lax.reduce_precision(
        x.astype(jnp.float32), info.nexp, info.nmant
    )
    return wide.astype(x.dtype)


def neighbours(x, dtype):
    """The values of ``dtype`` below and above each ``x`` (float64), from
    the sorted list of all its finite values: independent of JAX."""
    bits = np.arange(2**16, dtype=np.uint32)
    if dtype == jnp.bfloat16:  # the top half of a float32
        bits = bits[(bits & 0x7F80) != 0x7F80]  # finite
        values = (bits << 16).view(np.float32).astype(np.float64)
    else:
        bits = bits[(bits & 0x7C00) != 0x7C00]
        values = bits.astype(np.uint16).view(np.float16).astype(np.float64)
    values = np.unique(values)
    x = np.asarray(x, np.float64)
    hi = values[np.searchsorted(values, x, side="left")]
    lo = values[np.searchsorted(values, x, side="right") - 1]
    return lo, hi


def _norm(w):
    return jnp.linalg.norm(w.astype(jnp.float32))
