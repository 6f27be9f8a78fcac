"""In-step layer-rotation monitoring as an optax transformation.

What the state records of each layer is computed in :mod:`._tracking_step`;
what the cosine distance compares with is a reference strategy
(:mod:`._references`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _axes as ax, _checks as checks
from layca_optax._axes import Axis
from layca_optax._masks import path_str, resolve_mask
from layca_optax._state_check import check_state_fits
from layca_optax.monitor._references import check_reference
from layca_optax.monitor._tracking_step import initial_values, step_values


class TrackRotationState(NamedTuple):
    """State of :func:`track_rotation`: a step count and per-layer trees.

    Each per-layer field has the params' structure: an array at each layer
    (a scalar with ``axis=None``; else the shape of the axes that ``axis``
    keeps, as :func:`layer_rotation`), an empty ``optax.MaskedNode()`` at other
    leaves (and everywhere in the fields ``reference=None`` leaves out).
    Arrays only, so it checkpoints as any optax state. Read a field of a
    whole chain's state with ``optax.tree.get(state, "rotation_rate")``.

    Attributes:
      count: the number of updates seen (int32).
      rotation_rate: tan of the angle each layer turned in the last update.
      radial_ratio: |radial| / tangential part of the last update.
      weight_norm: each layer's norm after the last update.
      cosine_distance: each layer's cosine distance to init (0 at init).
      reference: the initial layer, its bfloat16 copy, or its sketch.
    """

    count: jax.Array  # type: ignore[assignment]  # int32, as optax
    rotation_rate: Any
    radial_ratio: Any
    weight_norm: Any
    cosine_distance: Any
    reference: Any


@checks.public
def track_rotation(
    *,
    mask: optax.MaskOrFn = None,
    axis: Axis = None,
    reference: str | None = None,
    sketch_dim: int = 256,
    key: jax.Array | None = None,
) -> optax.GradientTransformation:
    r"""Records each layer's rotation in the optimizer state, every step.

    Place it **last** in any chain, Layca or not (e.g.
    ``optax.chain(optax.adam(1e-3), track_rotation())``). It returns the
    updates unchanged and stores, for the update :math:`u` about to be added
    to each layer :math:`w`, in one pass in at least float32:

    - ``rotation_rate``: :math:`\tan\angle(w, w + u)`, with the formula of
      :func:`rotation_rate` but from :math:`u` itself, which keeps small
      turns accurate (for Layca it reads ``learning_rate * multiplier``);
    - ``radial_ratio``: :math:`|r| / t`, with :math:`r = \langle u, w
      \rangle / \lVert w \rVert` and :math:`t = \lVert u - r w / \lVert w
      \rVert \rVert` (large when an update mostly rescales; Layca, which
      keeps the norm, reads :math:`\tan(\theta / 2)`);
    - ``weight_norm``: :math:`\lVert w + u \rVert` (after
      ``optax.apply_updates``, in the params' dtype);
    - ``cosine_distance`` (with ``reference``), as :func:`layer_rotation`.

    Degenerate layers: a zero layer or update reads 0 (rate and ratio), a
    purely radial update a ratio of ``1 / eps`` (8.4e6 in float32); as for
    :func:`rotation_rate`, 90 degrees reads ``inf`` and more a negative
    tangent. :func:`tracked_metrics` flattens the state for logging.

    ``reference`` picks what the cosine distance ``d`` to init compares
    with. For a layer of :math:`n` weights (:math:`4n` bytes in float32),
    the state holds the following, with this error against the exact
    metric (measured in float32 on Dense and Conv kernels of 640, 37k and
    131k weights, at ``d`` from 1e-4 to 1, in
    ``tests/monitor/test_tracking.py``):

    - ``None``: 3 scalars per layer; no cosine distance.
    - ``"exact"``: a copy of the layer in its dtype (:math:`4n` bytes in
      float32, as one Adam moment). Error: float rounding, below 1e-6.
    - ``"bfloat16"``: a bfloat16 copy (:math:`2n` bytes), normalized with
      its own norm, which cancels the radial part of its rounding error;
      the part left shrinks as :math:`1 / \sqrt{n}`. Absolute error below
      :math:`5 \cdot 10^{-3} / \sqrt{n} + 10^{-5}` (measured at most
      7e-5 for 640 weights, 1.3e-5 for 37k, 6e-6 for 131k).
    - ``"sketch"``: ``4 * (sketch_dim + 2)`` bytes (1 KiB at 256) for any
      :math:`n`: a fixed CountSketch (Charikar et al., 2002) of the
      flattened layer, which adds each weight, with a random sign, to one
      of ``sketch_dim`` buckets, both hashed from its index and a seed
      drawn from ``key`` (recomputed each step, never stored). It has a
      dense Gaussian projection's variance for :math:`O(n)` work, where a
      Gaussian one draws ``n * sketch_dim`` numbers a step (1 s for a 512
      x 256 kernel on a CPU core). Relative error: rms :math:`(2 - d) /
      \sqrt{\text{sketch\_dim}}` (12.5% near init, 6% at ``d = 1`` with
      256), 99th percentile below 3 times that. The last two entries hold
      the layer's number of entries: a state updated with a layer of
      another size (a checkpoint restored into another model) reads a NaN
      cosine distance for it; a layer of the same size reshaped cannot be
      told apart.

    Args:
      mask: which leaves are layers (``optax.MaskOrFn``, Python bools);
        default :func:`default_layer_mask` (kernels).
      axis: axes each norm reduces over (see :data:`Axis`); must be ``None``
        with ``reference="sketch"``.
      reference: ``None`` (no cosine distance), ``"exact"``, ``"bfloat16"``
        or ``"sketch"``.
      sketch_dim: the sketch size, a positive int (``"sketch"`` only).
      key: one ``jax.random`` key for the sketch (``"sketch"`` only):
        ``jax.random.key(seed)`` or a legacy ``jax.random.PRNGKey(seed)``;
        default ``jax.random.key(0)``.

    Returns:
      An :class:`optax.GradientTransformation` whose state is a
      :class:`TrackRotationState`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> params = {"kernel": jnp.array([[1.0, 0.0]]), "bias": jnp.zeros(2)}
      >>> tx = optax.chain(optax.sgd(0.5), layca_optax.track_rotation())
      >>> state = tx.init(params)
      >>> grads = {"kernel": jnp.array([[0.0, -1.0]]), "bias": jnp.ones(2)}
      >>> updates, state = tx.update(grads, state, params)
      >>> optax.tree.get(state, "rotation_rate")
      {'bias': MaskedNode(), 'kernel': Array(0.5, dtype=float32)}

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 3.
    """
    ax.check_axis(axis)
    ref = check_reference(reference, sketch_dim, axis, key)

    def init_fn(params: optax.Params) -> TrackRotationState:
        rate, ratio, norm, cos, refs = initial_values(
            params, mask, axis, ref, key
        )
        count = jnp.zeros([], jnp.int32)
        return TrackRotationState(count, rate, ratio, norm, cos, refs)

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        refs = state.reference
        if ref.kind in ("exact", "bfloat16"):  # copies: the layers' shapes
            check_state_fits((refs,), params, resolve_mask(mask, params))
        rate, ratio, norm, cos = step_values(
            updates, params, refs, mask, axis, ref, key
        )
        count = optax.safe_increment(state.count)
        new = TrackRotationState(count, rate, ratio, norm, cos, refs)
        return updates, new

    # One compilation instead of many small eager ones (one per op and shape).
    return optax.GradientTransformation(jax.jit(init_fn), update_fn)


_FIELDS = frozenset(TrackRotationState._fields)


def _is_track_state(x: Any) -> bool:
    """A :class:`TrackRotationState`, or its fields as a mapping: how
    ``nnx.state``, its pure dict and checkpoint restores without a target
    write NamedTuples (``{"count": ..., "rotation_rate": ...}``)."""
    if isinstance(x, TrackRotationState):
        return True
    return isinstance(x, Mapping) and set(x.keys()) == _FIELDS


def _track_states(state: Any) -> list[TrackRotationState]:
    """Every track_rotation state in ``state``, as TrackRotationStates."""
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=_is_track_state)
        if _is_track_state(s)
    ]
    return [
        s
        if isinstance(s, TrackRotationState)
        else TrackRotationState(**{f: s[f] for f in TrackRotationState._fields})
        for s in found
    ]


def _lookup_error(state: Any, n: int) -> str:
    kind = type(state).__name__
    if n == 0:
        return (
            f"{checks.arg('state')} holds no track_rotation() state (got a "
            f"{kind} without a TrackRotationState, or a mapping of its "
            "fields as nnx.state writes it): add layca_optax.track_rotation() "
            "to the optimizer's chain, last, and pass the optimizer state "
            "(optax), the nnx.Optimizer, nnx.state(optimizer) or its pure "
            "dict."
        )
    return (
        f"{checks.arg('state')} holds {n} track_rotation() states (in a "
        f"{kind}); pass the part of the state holding the one to read."
    )


@checks.public
def tracked_metrics(
    state: Any, *, prefix: str = "track/"
) -> dict[str, jax.Array]:
    """The per-layer values of a :func:`track_rotation` state, as a flat dict.

    Keys are ``prefix`` + metric + ``/`` + the layer's path:
    ``"track/rate/Conv_0/kernel"``, ``"track/radial_ratio/..."``,
    ``"track/norm/..."`` and, with a ``reference``, ``"track/cosine/..."``
    (the rotation curves: plot them with
    ``plot_rotation_curves(history, prefix="track/cosine/")``). Metrics come
    in that order, layers in leaf order. Pure and jit-able.

    With ``track_rotation(axis=...)`` keeping some axes of a leaf, that
    leaf's value is an array of the kept axes' shape (``(L,)`` for an
    ``(L, d_in, d_out)`` kernel with ``axis=(-2, -1)``, ``(L, E)`` for
    experts): splitting it into scalars inside a jitted step would cost one
    slice per layer (and, with the layers sharded, communication), so
    :meth:`RotationHistory.append` splits it on the host instead, into
    ``"track/rate/h/mlp/kernel/3"`` (``.../3/5`` for layer 3, expert 5),
    the names of :func:`rotation_metrics`; so does :func:`scalar_metrics`,
    which turns the dict into ``{name: float}`` for any logger.

    Flax NNX: pass the ``nnx.Optimizer`` itself, ``nnx.state(optimizer)``
    or its pure dict (``nnx.to_pure_dict``, ``nnx.as_pure``), where the
    state's NamedTuples have become mappings of their fields; the keys are
    the same as for the optax state.

    Args:
      state: a :class:`TrackRotationState`, or any optimizer state holding
        exactly one (e.g. the state of a whole ``optax.chain``), also as
        ``nnx.Optimizer``, ``nnx.State`` or nested dicts.
      prefix: a str prepended to every key.

    Returns:
      A ``dict[str, jax.Array]`` of float scalars (arrays for leaves with
      several layers).

    Raises:
      ValueError: a ``state`` holding no :func:`track_rotation` state or
        several, or a ``prefix`` that is not a str.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> params = {"Dense_0": {"kernel": jnp.array([[3.0, 4.0]])}}
      >>> tx = optax.chain(optax.sgd(1.0), layca_optax.track_rotation())
      >>> state = tx.init(params)
      >>> metrics = jax.jit(layca_optax.tracked_metrics)(state)
      >>> metrics["track/norm/Dense_0/kernel"]
      Array(5., dtype=float32)

      Per stacked layer of a scanned model's ``(L, d_in, d_out)`` kernel:

      >>> stacked = {"h": {"kernel": jnp.ones((2, 3, 4))}}
      >>> tx = layca_optax.track_rotation(axis=(-2, -1))
      >>> metrics = layca_optax.tracked_metrics(tx.init(stacked))
      >>> metrics["track/rate/h/kernel"].shape
      (2,)
      >>> history = layca_optax.RotationHistory()
      >>> history.append(0, metrics)
      >>> history.keys[:2]
      ('track/rate/h/kernel/0', 'track/rate/h/kernel/1')

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (layer
      rotation curves and per-step tan of the angle, the authors'
      ``LayerRotationCurves`` and ``StepwiseRotation`` callbacks).
    """
    checks.check_prefix(prefix)
    found = _track_states(state)
    if len(found) != 1:
        raise ValueError(_lookup_error(state, len(found)))
    (s,) = found
    fields = {
        "rate": s.rotation_rate,
        "radial_ratio": s.radial_ratio,
        "norm": s.weight_norm,
        "cosine": s.cosine_distance,
    }
    out: dict[str, jax.Array] = {}
    for name, tree in fields.items():
        for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[f"{prefix}{name}/{path_str(path)}"] = value
    return out
