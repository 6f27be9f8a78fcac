"""AdaptCopy: replay a run's recorded per-layer rotation rates in Layca."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _checks as checks, _sums as sm
from layca_optax._alias import layca_optimizer
from layca_optax._axes import Axis
from layca_optax._builder import check_arguments
from layca_optax._masks import leaf_paths
from layca_optax._rates import LayerRates
from layca_optax.analysis._recording import RotationRecording


class ScaleByRecordedRatesState(NamedTuple):
    """State of :func:`scale_by_recorded_rates`: the step count."""

    count: jax.Array  # type: ignore[assignment]  # int32, as optax


def _columns(recording: RotationRecording, tree: Any) -> list[int]:
    """The recording's column of each leaf of ``tree``."""
    paths = leaf_paths(tree)
    missing = sorted(set(paths) - set(recording.paths))
    unused = sorted(set(recording.paths) - set(paths))
    if missing or unused:
        raise ValueError(
            f"{checks.arg('recording')} must have one column per layer. "
            f"Layers not recorded: {missing}; recorded paths that are not "
            f"layers: {unused}."
        )
    return [recording.paths.index(p) for p in paths]


def _check_recording(recording: Any) -> None:
    """``ValueError`` unless a :class:`RotationRecording` of at least one
    step of finite, non-negative rates."""
    if not isinstance(recording, RotationRecording):
        raise ValueError(
            f"{checks.arg('recording')} must be a RotationRecording, "
            f"got {type(recording).__name__}."
        )
    table = recording.rates
    if table.shape[0] == 0 or not np.all(np.isfinite(table) & (table >= 0)):
        raise ValueError(
            f"{checks.arg('recording')} needs at least one step of finite, "
            f"non-negative rates, got shape {table.shape}, min "
            f"{np.min(table, initial=np.inf)}, max "
            f"{np.max(table, initial=-np.inf)}."
        )


def recorded_rates(recording: RotationRecording) -> LayerRates:
    """The recording's rate of each layer at the step count (its row, the
    last one past the end), matched by path; a checked ``recording``."""
    table = recording.rates
    last = table.shape[0] - 1

    def rates(count: jax.Array, layers: Any) -> list[Any]:
        row = jnp.asarray(table)[jnp.minimum(count, last)]
        return [row[c] for c in _columns(recording, layers)]

    def check(layers: Any) -> None:
        _columns(recording, layers)

    return LayerRates(rates, check)


@checks.public
def scale_by_recorded_rates(
    recording: RotationRecording,
) -> optax.GradientTransformation:
    """Scales each layer's update by its recorded rate at the current step.

    At the ``t``-th update (counted in the state, from 0), layer ``l`` is
    multiplied by ``recording.rates[t, l]``; past the end, by the last row.
    Works under ``jax.jit``: the rates are a constant of the computation and
    the row is picked by the traced count.

    Args:
      recording: a :class:`RotationRecording` of finite, non-negative rates,
        one column per layer that this transformation sees (by path).

    Returns:
      A :class:`optax.GradientTransformation` with a
      :class:`ScaleByRecordedRatesState`.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> rec = layca_optax.analysis.RotationRecording(("w",), [[0.1], [0.2]])
      >>> tx = layca_optax.analysis.scale_by_recorded_rates(rec)
      >>> u = {"w": jnp.ones((1, 2))}
      >>> state = tx.init(u)
      >>> out, state = tx.update(u, state)
      >>> out, state = tx.update(u, state)
      >>> out["w"]
      Array([[0.2, 0.2]], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 5.4.
    """
    _check_recording(recording)
    rates = recorded_rates(recording)

    def init_fn(params):
        if jax.tree.leaves(params):  # skip optax's empty placeholders
            rates.check(params)
        return ScaleByRecordedRatesState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params

        def scale(u, r):
            dtype = sm.reduction_dtype(u.dtype)
            return (u.astype(dtype) * r.astype(dtype)).astype(u.dtype)

        treedef: Any
        leaves, treedef = jax.tree.flatten(updates)
        row = rates.rates(state.count, updates)
        new = treedef.unflatten(map(scale, leaves, row))
        count = optax.safe_increment(state.count)
        return new, ScaleByRecordedRatesState(count)

    return optax.GradientTransformation(init_fn, update_fn)


@checks.public
def adapt_copy(
    recording: RotationRecording,
    base: optax.GradientTransformation | None = None,
    *,
    mask: optax.MaskOrFn = None,
    other: optax.GradientTransformation | None = None,
    axis: Axis = None,
    eps: jax.typing.ArrayLike = 1e-7,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaptCopy: Layca with each layer's recorded rate as its learning rate.

    Replays a :class:`RotationRecording` of any optimizer's run (Section 5.4
    of the paper; the authors copied RMSprop, Adam and Adagrad runs onto
    SGD + Layca and SGD_AMom + Layca): at step :math:`t` layer :math:`l`
    gets :math:`\eta_l(t)` = ``recording.rates[t, l]``, and since Layca
    turns each layer by exactly :math:`\arctan\eta_l`, the replayed run's
    rates equal the recording while the direction comes from ``base``
    (``None``: the gradient, the authors' SGD_layca;
    ``optax.ema(0.9, debias=False)``: their SGD_AMom_layca).

    It is :func:`layca` (its fused step, in its range and dtypes, with its
    warnings) with the recorded rate in place of the learning rate; past
    the last step the last row is reused. With ``axis``, each slice of a
    leaf turns by the leaf's recorded rate (at a kept norm, the whole leaf
    then turns by that angle too).

    **Zero-step threshold**: as in :func:`layca`, a step whose
    learning-rate-scaled tangential part is at most ``eps``,
    :math:`\eta_l(t) \lVert d_\perp \rVert \le \epsilon`, gives no turn
    (the authors' ``1e-7``). So a recorded rate below
    :math:`\epsilon / \lVert d_\perp \rVert` replays as 0; ``eps=0`` replays
    every nonzero rate (given a nonzero direction).

    Args:
      recording: per-step per-layer rates, one column per layer (matched by
        path). Must be finite and non-negative (a turn beyond 90 degrees
        records a negative tangent and cannot be replayed).
      base: the direction; ``None``: the gradient.
      mask: which leaves are layers (default :func:`default_layer_mask`:
        kernels); use the mask of the recording.
      other: the transformation of the other leaves; default: unchanged.
      axis: axes each layer norm reduces over (see :data:`Axis`); the
        recording has one column per leaf, whose rate each slice gets.
      eps: the zero-step threshold.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``params``.

    Example:
      >>> import jax
      >>> import optax
      >>> import layca_optax
      >>> params = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
      >>> rec = layca_optax.analysis.RotationRecording(("w",), [[0.05], [0.02]])
      >>> tx = layca_optax.analysis.adapt_copy(
      ...     rec, optax.ema(0.9, debias=False))
      >>> state = tx.init(params)
      >>> grads = {"w": jax.random.normal(jax.random.key(1), (4, 3))}
      >>> updates, state = tx.update(grads, state, params)
      >>> new = optax.apply_updates(params, updates)
      >>> rates = layca_optax.analysis.rotation_rate_row(new, params)
      >>> round(float(rates[0]), 6)
      0.05

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 5.4.
    """
    _check_recording(recording)
    check_arguments(base, other, mask, axis, ("axis", "mask"))
    checks.check_scalar(eps, "eps", low=0.0)
    return layca_optimizer(
        recorded_rates(recording),
        1.0,
        base=base,
        mask=mask,
        other=other,
        axis=axis,
        eps=eps,
        fused=True,
    )
