"""Metric dicts as flat ``{name: float}`` dicts, for any logger.

:func:`tracked_metrics` keeps a leaf with several layers (``axis=...``) as
one array; :func:`rotation_metrics` gives one scalar per slice;
:func:`layer_rotation` a pytree. :func:`scalar_metrics` turns all of them
(and any nested dict of numbers, arrays or Flax NNX states) into the one
form loggers take: names joined with ``/``, one Python float per name,
array entries named ``name/i`` (``name/i/j``...) as
:func:`rotation_metrics` and :class:`RotationHistory` name them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _checks as checks
from layca_optax._masks import path_str
from layca_optax.monitor._keys import slice_items


def _join(name: str, key: str) -> str:
    return f"{name}/{key}" if name and key else name or key


def _is_mapping(x: Any) -> bool:
    return isinstance(x, Mapping)


def _leaves(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``(name, leaf)`` pairs, depth first: mappings in their own order
    (``{"b": .., "a": ..}`` stays b, a), other pytrees (tuples, NamedTuples,
    ``nnx`` Variables, whose ``.value`` adds no name) in JAX's order."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(_join(name, str(key)), item)
        return
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        value, is_leaf=_is_mapping
    )
    if not flat:  # None, empty nodes (optax.MaskedNode), empty tuples
        return
    if jax.tree_util.treedef_is_leaf(treedef):
        yield name, value
        return
    for path, item in flat:
        yield from _leaves(_join(name, path_str(path)), item)


def _check_leaf(name: str, value: Any) -> np.ndarray:
    """``value`` (fetched) as a real NumPy array, or ``ValueError``."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    dtype = array.dtype
    real = dtype == np.bool_ or any(
        jnp.issubdtype(dtype, kind) for kind in (jnp.integer, jnp.floating)
    )
    if not real:
        raise ValueError(
            f"{checks.arg('metrics')}: the value at {name!r} must be a real "
            f"number or array (float, int, bool; NumPy or JAX), got "
            f"{_short(value)}."
        )
    return array


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@checks.public
def scalar_metrics(metrics: Any, *, prefix: str = "") -> dict[str, float]:
    """A metric dict as a flat ``{name: float}`` dict, for any logger.

    Takes the output of :func:`tracked_metrics`, :func:`rotation_metrics`,
    :func:`layer_rotation` (a pytree) and any nested mapping of numbers and
    arrays (also a Flax ``nnx.State`` or its pure dict), and returns what
    TensorBoard's ``add_scalar``, a CSV writer or a metrics writer's
    ``write_scalars`` take: one Python float per name. Nested keys are
    joined with ``/`` (``{"train": {"loss": x}}`` gives ``"train/loss"``;
    tuples and lists add their index, ``nnx.Variable`` boxes nothing). An
    array value is split into one name per entry, in C order, named as
    :func:`rotation_metrics` and :class:`RotationHistory` name slices:
    ``"track/rate/h/kernel/3"`` for a ``(L,)`` value (one kept axis),
    ``".../3/1"`` for ``(L, E)`` (two). Names keep the mappings' order;
    ``None`` and empty nodes (``optax.MaskedNode``) give none; NaN and
    infinities are kept. All values are fetched from the devices at once.

    Call it on the host, on the values a jitted step returns: it makes
    Python floats, so it is not jit-able (traced values raise).

    Args:
      metrics: a mapping (str keys, or keys written with ``str``) of real
        numbers, NumPy or JAX arrays (float, int or bool), or nested
        mappings and pytrees of them.
      prefix: a str prepended to every name, e.g. ``"train/"``.

    Returns:
      A ``dict[str, float]``.

    Raises:
      ValueError: ``metrics`` that is not a mapping, holds a value that is
        not a real number or array (naming its key) or a traced value, or
        names one entry twice (a key ``"a/0"`` and the first entry of an
        array at ``"a"``); a ``prefix`` that is not a str.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> metrics = {"loss": jnp.float32(0.25),
      ...            "rate": {"h/kernel": jnp.array([0.5, 0.125])}}
      >>> layca_optax.scalar_metrics(metrics)
      {'loss': 0.25, 'rate/h/kernel/0': 0.5, 'rate/h/kernel/1': 0.125}

      The arrays of :func:`tracked_metrics` (one value per stacked layer)
      become one float per layer:

      >>> import optax
      >>> stacked = {"h": {"kernel": jnp.ones((2, 3, 4))}}
      >>> tx = layca_optax.track_rotation(axis=(-2, -1))
      >>> scalars = layca_optax.scalar_metrics(
      ...     layca_optax.tracked_metrics(tx.init(stacked)))
      >>> scalars["track/norm/h/kernel/1"], len(scalars)
      (3.464101552963257, 6)

      Written to a CSV file with the standard library, one row per step:

      >>> import csv, io
      >>> row = layca_optax.scalar_metrics(metrics, prefix="train/")
      >>> out = io.StringIO()
      >>> writer = csv.DictWriter(out, ["step", *row], lineterminator="\\n")
      >>> _ = writer.writeheader(), writer.writerow({"step": 1, **row})
      >>> print(out.getvalue())
      step,train/loss,train/rate/h/kernel/0,train/rate/h/kernel/1
      1,0.25,0.5,0.125
      <BLANKLINE>
    """
    checks.check_prefix(prefix)
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"{checks.arg('metrics')} must be a mapping of names to numbers "
            "or arrays (e.g. the dict of tracked_metrics or "
            f"rotation_metrics), got a {type(metrics).__name__}: "
            f"{_short(metrics)}."
        )
    pairs = list(_leaves("", metrics))
    for name, value in pairs:
        if isinstance(value, jax.core.Tracer):
            raise ValueError(
                f"{checks.arg('metrics')}: the value at {name!r} is traced "
                "(inside jit, grad or vmap); call scalar_metrics on the host, "
                "on the metrics the jitted step returns."
            )
    fetched = jax.device_get([value for _, value in pairs])
    out: dict[str, float] = {}
    for (name, _), value in zip(pairs, fetched, strict=True):
        for key, v in slice_items(prefix + name, _check_leaf(name, value)):
            if key in out:
                raise ValueError(
                    f"{checks.arg('metrics')} names {key!r} twice: a key and "
                    "an entry of an array split into per-slice names "
                    "(name/i); rename one of them."
                )
            out[key] = float(v)
    return out
