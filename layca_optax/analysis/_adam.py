"""Adaptive-method diagnostics: per-layer spread of Adam's second moment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from layca_optax import _checks as checks, _sums as sm
from layca_optax._masks import leaf_paths, path_str, resolve_mask


_ADAM_STATES = (optax.ScaleByAdamState, optax.ScaleByAmsgradState)


def _adam_states(opt_state: Any) -> list[tuple[str, Any]]:
    """``(where, state)`` for every Adam state inside ``opt_state``."""
    is_adam = lambda x: isinstance(x, _ADAM_STATES)
    flat, _ = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=is_adam)
    return [(jax.tree_util.keystr(p), s) for p, s in flat if is_adam(s)]


def _second_moments(opt_state: Any) -> dict[str, tuple[jax.Array, Any]]:
    """``{param path: (nu, count)}`` merged over all Adam states."""
    states = _adam_states(opt_state)
    if not states:
        kinds = sorted({type(s).__name__ for s in jax.tree.leaves(opt_state)})
        raise ValueError(
            f"{checks.arg('opt_state')} holds no Adam state "
            "(optax.ScaleByAdamState or ScaleByAmsgradState, from "
            "optax.adam, adamw, nadam, amsgrad, scale_by_adam...); it holds "
            f"only leaves of types {kinds}."
        )
    found: dict[str, tuple[jax.Array, Any]] = {}
    where: dict[str, str] = {}
    for loc, state in states:
        flat, _ = jax.tree_util.tree_flatten_with_path(state.nu)
        for p, nu in flat:
            name = path_str(p)
            if name in found:
                raise ValueError(
                    f"{checks.arg('opt_state')}: parameter {name!r} has a "
                    f"second moment in two Adam states, at {where[name]} "
                    f"and at {loc}; pass the sub-state you mean."
                )
            found[name], where[name] = (nu, state.count), loc
    return found


def _check_percentiles(percentiles: Any) -> list[float]:
    """The percentiles as floats; a string (``'50'``) is refused, not read
    as the percentiles 5 and 0."""
    qs: list[float] = []
    if not isinstance(percentiles, str | bytes):
        try:
            items = list(percentiles)
            if not any(isinstance(q, str | bytes) for q in items):
                qs = [float(q) for q in items]
        except (TypeError, ValueError):
            qs = []
    if not qs or not all(0 <= q <= 100 for q in qs):
        try:  # a single number, or a string of one: suggest the list
            hint = f" (for one percentile, write [{float(percentiles):g}])"
        except (TypeError, ValueError):
            hint = ""
        raise ValueError(
            f"{checks.arg('percentiles')} must be a non-empty list of "
            f"numbers in [0, 100], got {percentiles!r}{hint}."
        )
    return qs


@checks.public
def adam_nu_percentiles(
    opt_state: optax.OptState,
    params: optax.Params | None = None,
    *,
    percentiles: Sequence[float] = (10, 50, 90),
    mask: optax.MaskOrFn = None,
    b2: float | None = None,
    prefix: str = "adam_nu",
) -> dict[str, jax.Array]:
    r"""Per-layer percentiles of Adam's second-moment estimate ``nu``.

    Finds every ``optax.ScaleByAdamState`` (``optax.adam``, ``adamw``,
    ``nadam``, ``radam``, ``lamb``, ``scale_by_adam``) and
    ``optax.ScaleByAmsgradState`` anywhere in ``opt_state``: plain, inside
    ``optax.chain``, ``optax.inject_hyperparams``, ``optax.partition``,
    ``optax.masked``, :func:`layca`'s ``base``, or a Flax NNX
    ``nnx.Optimizer``'s ``opt_state``. Each parameter's ``nu``
    (the EMA of squared gradients, :math:`v_t`) is summarized by its
    percentiles over the layer's entries (NumPy's default linear
    interpolation). These spreads show how differently an adaptive method
    scales the parameters of each layer, the analysis of Section 5.4 (Fig.
    5) of the Layca paper. Pure and jit-able.

    ``optax.adamax`` stores its infinity norm (a running max of
    :math:`|g|`) in the same state type: its values are read as they are.

    Args:
      opt_state: any optax state containing Adam.
      params: the parameters: sets the keys' order (leaf order) and
        which leaves the mask sees; needed for a ``mask`` that is not None.
        Without it, leaves are met in the state's order.
      percentiles: in [0, 100]; ``50`` is the median.
      mask: which leaves are layers (an ``optax.MaskOrFn`` over
        ``params``); default :func:`default_layer_mask` (kernels).
      b2: Adam's ``b2``: when given, the bias-corrected
        :math:`\hat v_t = v_t / (1 - b_2^t)` (0 before the first step) is
        summarized instead, with :math:`t` the state's ``count``. With
        ``optax.inject_hyperparams``, pass ``state.hyperparams["b2"]``.
      prefix: the keys' start; ``"_hat"`` is appended with ``b2``.

    Returns:
      ``{f"{prefix}_p{q}/{path}": float32 scalar}`` (``"adam_nu_p50/
      Dense_0/kernel"``), percentiles outer, then layers.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2))}}
      >>> tx = optax.adam(1e-3)
      >>> state = tx.init(params)
      >>> grads = {"Dense_0": {"kernel": jnp.array([[1., 2.], [3., 4.]])}}
      >>> _, state = tx.update(grads, state)
      >>> layca_optax.analysis.adam_nu_percentiles(state, percentiles=[50])
      {'adam_nu_p50/Dense_0/kernel': Array(0.0065, dtype=float32)}

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 5.4.
    """
    qs = _check_percentiles(percentiles)
    if b2 is not None:
        checks.check_scalar(b2, "b2", low=0.0, high=1.0, high_open=True)
    checks.check_prefix(prefix)
    moments = _second_moments(opt_state)
    name = prefix + ("_hat" if b2 is not None else "")
    values = {}
    for path in _summarized(moments, params, mask):
        nu, count = moments[path]
        x = jnp.asarray(nu, sm.reduction_dtype(jnp.result_type(nu)))
        if b2 is not None:
            den = 1 - jnp.asarray(b2, x.dtype) ** count  # 0 before a step
            x = x * sm.ratio(jnp.ones_like(den), den)
        values[path] = jnp.percentile(x.ravel(), jnp.asarray(qs, x.dtype))
    return {
        f"{name}_p{q:g}/{path}": v[k]
        for k, q in enumerate(qs)
        for path, v in values.items()
    }


def _summarized(moments: dict, params: Any, mask: optax.MaskOrFn) -> list:
    """The paths whose second moment is summarized: the layers of
    ``params`` (by ``mask``) in leaf order, or without ``params`` every
    moment with ``ndim >= 2`` in the state's order."""
    if mask is not None and params is None:
        raise ValueError(f"{checks.arg('mask')} needs `params`.")
    if params is None:
        return [p for p, (nu, _) in moments.items() if jnp.ndim(nu) >= 2]
    flags = resolve_mask(mask, params)
    paths = zip(leaf_paths(flags), jax.tree.leaves(flags), strict=True)
    layers = [p for p, flag in paths if flag]
    missing = [p for p in layers if p not in moments]
    if mask is not None and missing:
        raise ValueError(
            f"{checks.arg('mask')} selects {missing}, which have no "
            "Adam second moment in `opt_state`."
        )
    return [p for p in layers if p in moments]
