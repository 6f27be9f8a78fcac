"""In-step layer-rotation monitoring as an optax transformation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _numerics as nx, _sums as sm
from layca_optax._masks import path_str, resolve_mask
from layca_optax._metrics import (
    cosine_from_sums,
    metric_sums,
    tan_from_parts,
    tangent_parts,
)
from layca_optax._numerics import Axis


_CALLER = "track_rotation"
_REFERENCES = ["exact", "bfloat16", "sketch"]
_EMPTY = optax.MaskedNode()


class TrackRotationState(NamedTuple):
    """State of :func:`track_rotation`: a step count and per-layer trees.

    Each per-layer field has the params' structure: an array (a scalar with
    ``axis=None``) at each layer, an empty ``optax.MaskedNode()`` at other
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


def _applied(w: jax.Array, u: jax.Array) -> jax.Array:
    """``w + u`` in ``w``'s dtype, as ``optax.apply_updates`` gives it."""
    return jnp.asarray(w + u).astype(w.dtype)


def _update_sums(w: jax.Array, u: jax.Array, new: jax.Array, axes) -> tuple:
    """``<w, w>``, ``<u, w>``, ``<u, u>`` and ``<new, new>`` (``new = w + u``
    as ``optax.apply_updates`` gives it), the arguments of tan_from_sums."""
    dtype = nx.reduction_dtype(jnp.result_type(u, w))
    xs = (w.astype(dtype), u.astype(dtype), new.astype(dtype))
    return sm.layer_sums(xs, ((0, 0), (1, 0), (1, 1), (2, 2)), axes)


def _update_metrics(ww, uw, uu, nn, *ref_sums) -> tuple:
    """Per layer: rate, radial ratio, norm and (with ref sums) cosine."""
    nw, k, tangential = tangent_parts(ww, uw, uu)
    radial = jnp.abs(k) * nw  # |<u, w>| / ||w||
    floor = nx.machine_eps(jnp.result_type(ww)) * radial
    ratio = sm.ratio(radial, jnp.maximum(tangential, floor))
    ratio = ratio + sm.nan_if_nonfinite(ww, uu)
    rate = tan_from_parts(nw, k, tangential, ww, uu, nn)
    if not ref_sums:
        return rate, ratio, jnp.sqrt(nn)
    return rate, ratio, jnp.sqrt(nn), cosine_from_sums(*ref_sums)


def _track_leaf(static: tuple, u: Any, w: Any, ref: Any, seed: Any) -> tuple:
    """Rate, radial ratio, norm and (with a reference) cosine of one leaf;
    ``static`` is ``(axes, reference axes, reference, sketch_dim)``."""
    axes, ref_axes, reference, sketch_dim = static
    u, w = jnp.asarray(u), jnp.asarray(w)
    new = _applied(w, u)
    sums = _update_sums(w, u, new, axes)
    if reference is None:
        return _update_metrics(*sums)
    if reference == "sketch":
        new = _sketch(new, seed, sketch_dim)
    return _update_metrics(*sums, *metric_sums(new, ref, ref_axes))


def _mix(x: jax.Array) -> jax.Array:
    """lowbias32 (C. Wellons): a full-avalanche hash of uint32 words."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _sketch(x: jax.Array, seed: jax.Array, dim: int) -> jax.Array:
    """CountSketch of the flattened ``x``: each entry goes, with a random
    sign, to one of ``dim`` buckets, both hashed from its index and the
    two-word ``seed``."""
    x = jnp.ravel(x).astype(nx.reduction_dtype(x.dtype))
    h = _mix(_mix(jnp.arange(x.size, dtype=jnp.uint32) ^ seed[0]) + seed[1])
    sign = jnp.where(h >> 31 == 0, 1.0, -1.0).astype(x.dtype)
    bucket = ((h & 0x7FFFFFFF) % dim).astype(jnp.int32)
    return jax.ops.segment_sum(sign * x, bucket, num_segments=dim)


def _check_args(axis: Axis, reference: Any, sketch_dim: Any) -> None:
    nx.check_axis(axis, _CALLER)
    if reference is not None and reference not in _REFERENCES:
        raise ValueError(
            f"`{_CALLER}(reference=...)` must be None, 'exact', 'bfloat16' "
            f"or 'sketch', got {reference!r}."
        )
    if type(sketch_dim) is not int or sketch_dim < 1:
        raise ValueError(
            f"`{_CALLER}(sketch_dim=...)` must be a positive int, "
            f"got {sketch_dim!r}."
        )
    if reference == "sketch" and axis is not None:
        raise ValueError(
            f"`{_CALLER}(axis=...)` must be None with reference='sketch', "
            f"got {axis!r}."
        )


def _unzip(treedef: Any, rows: list, n: int, empty: Any) -> list[Any]:
    """Per-leaf rows of ``n`` values -> ``n`` trees (``empty`` if no leaf)."""
    if not rows:
        return [empty] * n
    return [treedef.unflatten(col) for col in zip(*rows, strict=True)]


def _flatten_up_to(treedef: Any, tree: Any, name: str) -> list[Any]:
    """The subtrees of ``tree`` at the leaves of ``treedef``, or ValueError."""
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"`{_CALLER}`: the {name} and the params differ in structure: {err}"
        ) from None


def _flags(params: Any, n: int, mask: optax.MaskOrFn) -> list[bool]:
    if not n:  # optax.tree.map_params' placeholder, or no leaves at all
        return []
    return jax.tree.leaves(resolve_mask(mask, params, _CALLER))


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
    131k weights, at ``d`` from 1e-4 to 1, in ``tests/test_tracking.py``):

    - ``None``: 3 scalars per layer; no cosine distance.
    - ``"exact"``: a copy of the layer in its dtype (:math:`4n` bytes in
      float32, as one Adam moment). Error: float rounding, below 1e-6.
    - ``"bfloat16"``: a bfloat16 copy (:math:`2n` bytes), normalized with
      its own norm, which cancels the radial part of its rounding error;
      the part left shrinks as :math:`1 / \sqrt{n}`. Absolute error below
      :math:`5 \cdot 10^{-3} / \sqrt{n} + 10^{-5}` (measured at most
      7e-5 for 640 weights, 1.3e-5 for 37k, 6e-6 for 131k).
    - ``"sketch"``: ``4 * sketch_dim`` bytes (1 KiB at 256) for any
      :math:`n`: a fixed CountSketch (Charikar et al., 2002) of the
      flattened layer, which adds each weight, with a random sign, to one
      of ``sketch_dim`` buckets, both hashed from its index and a seed
      drawn from ``key`` (recomputed each step, never stored). It has a
      dense Gaussian projection's variance for :math:`O(n)` work, where a
      Gaussian one draws ``n * sketch_dim`` numbers a step (1 s for a 512
      x 256 kernel on a CPU core). Relative error: rms :math:`(2 - d) /
      \sqrt{\text{sketch\_dim}}` (12.5% near init, 6% at ``d = 1`` with
      256), 99th percentile below 3 times that.

    Args:
      mask: which leaves are layers (``optax.MaskOrFn``, Python bools);
        default :func:`default_layer_mask` (``ndim >= 2``).
      axis: axes each norm reduces over (see :data:`Axis`); must be ``None``
        with ``reference="sketch"``.
      reference: ``None`` (no cosine distance), ``"exact"``, ``"bfloat16"``
        or ``"sketch"``.
      sketch_dim: the sketch size, a positive int (``"sketch"`` only).
      key: a ``jax.random`` key for the sketch (``"sketch"`` only); default
        ``jax.random.key(0)``.

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
    _check_args(axis, reference, sketch_dim)

    def seeds(n: int) -> Any:  # two uint32 words per leaf, for the hash
        if reference != "sketch" or not n:
            return [None] * n
        return jax.random.bits(
            jax.random.key(0) if key is None else key, (n, 2), jnp.uint32
        )

    def ref_axes(ref: Any) -> tuple[int, ...]:
        return nx.resolve_axes(
            ref, None if reference == "sketch" else axis, _CALLER
        )

    def init_sums(w: Any) -> tuple:
        w = jnp.asarray(w)
        axes = nx.resolve_axes(w, axis, _CALLER)
        wf = w.astype(nx.reduction_dtype(w.dtype))
        return sm.layer_sums((wf,), ((0, 0),), axes)

    def init_leaf(w: Any, seed: Any, norm: Any):
        w = jnp.asarray(w)
        zero = jnp.zeros_like(norm)
        if reference is None:
            return zero, zero, norm, _EMPTY, _EMPTY
        if reference == "sketch":
            ref = _sketch(w, seed, sketch_dim)
        else:
            dtype = jnp.bfloat16 if reference == "bfloat16" else w.dtype
            ref = jnp.array(w, dtype, copy=True)
        return zero, zero, norm, zero, ref

    def track_leaf(u: Any, w: Any, ref: Any, seed: Any) -> tuple:
        axes = nx.resolve_axes(w, axis, _CALLER)
        r_axes = () if reference is None else ref_axes(ref)
        static = (axes, r_axes, reference, sketch_dim)
        return sm.per_leaf(_track_leaf, static, u, w, ref, seed)

    def init_fn(params: optax.Params) -> TrackRotationState:
        leaves, treedef = jax.tree.flatten(params)
        flags = _flags(params, len(leaves), mask)
        layers = [k for k, f in enumerate(flags) if f]
        keys = seeds(len(leaves))
        rows: list = [(_EMPTY,) * 5] * len(leaves)
        for k in layers:
            (ww,) = init_sums(leaves[k])
            rows[k] = init_leaf(leaves[k], keys[k], jnp.sqrt(ww))
        rate, ratio, norm, cos, ref = _unzip(treedef, rows, 5, params)
        count = jnp.zeros([], jnp.int32)
        return TrackRotationState(count, rate, ratio, norm, cos, ref)

    def update_fn(updates, state, params=None):
        if params is None:
            raise nx.no_params_error(_CALLER)
        leaves, treedef = jax.tree.flatten(params)
        u_leaves = _flatten_up_to(treedef, updates, "updates")
        refs = _flatten_up_to(treedef, state.reference, "state")
        flags = _flags(params, len(leaves), mask)
        args = list(
            zip(u_leaves, leaves, refs, seeds(len(leaves)), strict=True)
        )
        layers = [k for k, f in enumerate(flags) if f]
        rows: list = [(_EMPTY,) * 4] * len(leaves)
        for k in layers:
            row = track_leaf(*args[k])
            rows[k] = row if reference is not None else (*row, _EMPTY)
        rate, ratio, norm, cos = _unzip(treedef, rows, 4, state.reference)
        count = optax.safe_increment(state.count)
        new = TrackRotationState(count, rate, ratio, norm, cos, state.reference)
        return updates, new

    # One compilation instead of many small eager ones (one per op and shape).
    return optax.GradientTransformation(jax.jit(init_fn), update_fn)


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

    Args:
      state: a :class:`TrackRotationState`, or any optimizer state holding
        exactly one (e.g. the state of a whole ``optax.chain``).
      prefix: prepended to every key.

    Returns:
      A ``dict[str, jax.Array]``: float scalars (arrays with ``axis``).

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

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (layer
      rotation curves and per-step tan of the angle, the authors'
      ``LayerRotationCurves`` and ``StepwiseRotation`` callbacks).
    """
    is_state = lambda x: isinstance(x, TrackRotationState)
    found = [s for s in jax.tree.leaves(state, is_leaf=is_state) if is_state(s)]
    if len(found) != 1:
        raise ValueError(
            "`tracked_metrics(state=...)` must hold exactly one "
            f"TrackRotationState (put `track_rotation()` last in the chain), "
            f"found {len(found)} in a {type(state).__name__}."
        )
    (s,) = found
    fields = {
        "rate": s.rotation_rate,
        "radial_ratio": s.radial_ratio,
        "norm": s.weight_norm,
        "cosine": s.cosine_distance,
    }
    out = {}
    for name, tree in fields.items():
        for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[f"{prefix}{name}/{path_str(path)}"] = v
    return out
