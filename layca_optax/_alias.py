"""Layca: the full optimizer, a chain of this package's primitives."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import optax

from layca_optax import _checks as checks, _radius as rd
from layca_optax._axes import Axis
from layca_optax._builder import check_arguments, full_optimizer
from layca_optax._chain import layca_chain
from layca_optax._layca import scale_by_layca
from layca_optax._masks import KeyPathLike
from layca_optax._multipliers import (
    Multipliers,
    check_multipliers,
    ordered_depth_multipliers,
    product,
)
from layca_optax._radius import Radius
from layca_optax._rates import LayerRates


_STATIC = ("axis", "mask", "layer_order", "multipliers", "radius")
"""The arguments of :func:`layca` that ``optax.inject_hyperparams`` must
not call as schedules."""


@checks.public
def layca(
    learning_rate: optax.ScalarOrSchedule,
    base: optax.GradientTransformation | None = None,
    *,
    alpha: jax.typing.ArrayLike | None = None,
    layer_order: Sequence[KeyPathLike] | str | None = None,
    multipliers: Multipliers | None = None,
    mask: optax.MaskOrFn = None,
    other: optax.GradientTransformation | None = None,
    axis: Axis = None,
    eps: jax.typing.ArrayLike = 1e-7,
    fused: bool = True,
    radius: Radius = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Layca: layer-level controlled amount of weight rotation.

    Each layer :math:`w` (by default the kernels: see
    :func:`default_layer_mask`) is rotated by exactly
    :math:`\arctan(\eta_l)` per step, with
    :math:`\eta_l = \rho(t)\, m_l` (``learning_rate`` times the layer's
    multiplier), and keeps its norm: to float32 rounding for float32
    layers whose direction is not within a few degrees of the weights
    (the fused step's error in the turn grows as ``2 eps / sin^2`` of that
    angle, and in the norm as ``lr^2 / (1 + lr^2)`` times that;
    ``fused=False`` keeps the norm, and its turn's error grows as ``(1 +
    lr) 2 eps / sin``), and in expectation for bfloat16 and
    float16 layers, whose new weights are rounded stochastically (their
    norm walks by about ``0.52 * 2^-p / sqrt(n)`` per step; see
    ``docs/robustness.md``). With :math:`d` the ``base`` direction (the
    gradient when ``base`` is None), per layer:

    .. math::

      s &= \eta_l d - \frac{\langle \eta_l d, w \rangle}{\lVert w\rVert^2} w
      && \text{(tangent projection)} \\
      s &\leftarrow s \lVert w \rVert / \lVert s \rVert
      \quad (0 \text{ if } \lVert s \rVert \le \epsilon)
      && \text{(rotation-based normalization)} \\
      w' &= w - \eta_l s, \qquad
      w_{t+1} = \lVert w \rVert \, w' / \lVert w' \rVert
      && \text{(step, reprojection)}

    Since :math:`s \perp w` and :math:`\lVert s \rVert = \lVert w \rVert`,
    :math:`\tan\angle(w_t, w_{t+1}) = \eta_l`. This is Algorithm 1 of the
    paper as the authors' code does it, including its absolute zero-step
    threshold :math:`\epsilon` on the *learning-rate-scaled* step. As a chain:
    ``base``, the multipliers and learning rate (so the threshold sees the
    scaled step), :func:`project_to_tangent`, :func:`normalize_to_param_norm`,
    the multipliers and learning rate again, :func:`reproject_to_sphere`.

    .. warning::
      **Leaves that are not layers are left unchanged by default**, as in the
      authors' code (biases and BatchNorm scales stay at their initial value;
      the paper's models have none). To train them, pass e.g.
      ``other=optax.sgd(0.1)`` or ``other=optax.adam(1e-3)``. ``init``
      warns once, listing them, unless ``other`` is given (then no leaf
      stays frozen by surprise). ``base`` is a direction, not a full
      optimizer: ``base=optax.adam(1e-3)`` raises at ``init`` (it would
      step uphill).

    Layer order for ``alpha``: pytree leaves are sorted by key, so
    ``Conv_10`` comes before ``Conv_2`` and leaf order is generally *not*
    forward order. ``alpha != 0`` therefore needs ``layer_order``, the
    layers' paths from input to output (or ``"leaves"`` to accept leaf
    order explicitly).

    Degenerate layers get no update (finite, never NaN): zero-norm weights,
    zero gradients, gradients parallel to the weights, and steps with
    :math:`\lVert s \rVert \le \epsilon`. A zero layer (e.g. a
    zero-initialized output projection) therefore never trains: ``init``
    warns, naming such layers, when it is given concrete params; route them
    to ``other`` with ``mask``. Norms are plain float32 sums, exact for
    layers whose root-mean-square entry lies within about 1e-15 and 1e15
    (up to 1e8 entries; see :func:`scale_by_layca`); a layer whose sums
    overflow gets a NaN update, one whose squares underflow none. A
    non-finite entry makes its layer's update NaN, as optax propagates
    non-finite gradients, so that ``optax.apply_if_finite`` and
    ``optax.MultiSteps(..., should_skip_update_fn=optax.skip_not_finite)``
    skip the step. See
    ``docs/robustness.md``.

    Args:
      learning_rate: :math:`\rho(t)`, a non-negative float or an optax
        schedule. Each step turns a layer by ``arctan(learning_rate * m_l)``.
        A schedule's negative values make no update and a NaN or infinite
        value a NaN update, on both paths.
      base: the transformation giving the direction, without learning rate
        and without sign flip (``optax.trace(0.9)``, ``optax.scale_by_adam()``,
        ``optax.scale_by_rms()``, ``optax.scale_by_rss()``,
        ``optax.ema(0.9, debias=False)`` (the paper's SGD_AMom),
        ``optax.scale_by_lion()``, ...). Its state is updated from the raw
        gradients of the layers. ``None``: the plain gradient (the paper's
        SGD without momentum).
      alpha: Eq. 1's depth parameter in (-1, 1); see
        :func:`depth_multipliers`. ``None`` (default) or 0: every layer gets
        multiplier 1. A nonzero value, or any value injected with
        ``optax.inject_hyperparams``, needs ``layer_order``.
      layer_order: every layer's key path (``"Conv_0/kernel"`` or a JAX key
        path), input side first, or ``"leaves"`` for pytree leaf order. A
        leaf that ``axis`` splits into slices (a scanned stack) is listed
        whole (one depth for all its slices) or per slice
        (``"blocks/attn/query/kernel/0"``, as
        ``forward_order(..., per_slice=True)`` gives them, with
        ``axis=infer_stacked_axes(...)``): each slice then gets Eq. 1's
        multiplier of its own depth.
      multipliers: extra per-layer factors (see
        :func:`scale_by_layer_multipliers`), multiplied with the ``alpha``
        ones. A callable here receives the tree of layers only.
      mask: which leaves are layers: an ``optax.MaskOrFn``; a tree with the
        same structure as (or a prefix of) the params, or a callable that
        returns one given the params, with Python bools at the leaves, True
        for layers. Default :func:`default_layer_mask` (leaves named
        ``kernel``; never ``bias``, ``scale``, ``embedding``; other names
        with ``ndim >= 2``). ``init`` warns once, listing the split, when
        ``other`` is None and some leaves are not layers (they stay frozen).
      other: the transformation for the leaves that are not layers. Default:
        none, they are left unchanged (:func:`optax.set_to_zero`).
      axis: axes each layer norm reduces over; ``None`` (default) makes each
        leaf one layer. See :data:`Axis` and :func:`fan_in_axes`.
      eps: the zero-step threshold on the learning-rate-scaled, projected
        step (the authors' ``1e-7``).
      fused: True (default): after ``base``, one :func:`scale_by_layca`
        (one reduction and one elementwise pass per layer, the fast path).
        False: the chain of primitives described above. Both give the same
        updates to float32 rounding (tested to 1e-6 relative), within the
        chain's range: its intermediate values carry the rate
        (``eta_l d`` and ``w - eta_l s``), so a layer whose entries times
        ``max(1, eta_l)`` leave float32's sums (root-mean-square
        ``1.8e19 / sqrt(n)``) gets a NaN update where the fused step is
        exact.
      radius: ``None`` (default): each layer keeps its norm, as in the
        paper. Else the Hyperball family's fixed radius: every nonzero
        layer lands on its radius :math:`R_l` at each step (its new weights
        scaled by :math:`R_l / \lVert w\rVert`) and still turns by exactly
        :math:`\arctan(\eta_l)`, also in the first step of a layer that
        starts off its radius; a zero layer stays zero. A positive number,
        a prefix tree of them (per-slice arrays with ``axis``) or a callable
        of the initial layers (the other leaves ``optax.MaskedNode``),
        called at ``init`` and kept in the state; see
        :func:`reproject_to_sphere`. A callable must be static under
        ``optax.inject_hyperparams`` (``static_args=('radius',)``).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`; its ``update`` needs
      ``params``.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> def loss(p):
      ...   return jnp.sum((p["w"] @ jnp.ones(3) - jnp.arange(3.0)) ** 2)
      >>> params = {"w": jax.random.normal(jax.random.key(0), (3, 3))}
      >>> tx = layca_optax.layca(3**-3, base=optax.scale_by_adam())
      >>> state = tx.init(params)
      >>> for _ in range(5):
      ...   grads = jax.grad(loss)(params)
      ...   updates, state = tx.update(grads, state, params)
      ...   params = optax.apply_updates(params, updates)

      Per-layer rates with Eq. 1 and a forward order:

      >>> tx = layca_optax.layca(
      ...     0.1, alpha=0.3, layer_order=["Dense_0/kernel", "Dense_1/kernel"],
      ...     other=optax.sgd(0.1))

      Hyperparameters as state (``multipliers`` and callable masks must be
      static):

      >>> tx = optax.inject_hyperparams(layca_optax.layca)(learning_rate=0.1)

      Each layer on a fixed radius, e.g. unit root-mean-square entries:

      >>> tx = layca_optax.layca(
      ...     0.1, radius=lambda p: jax.tree.map(lambda w: w.size**0.5, p))

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (Algorithm 1, Eq. 1).
    """
    check_arguments(base, other, mask, axis, _STATIC)
    checks.check_learning_rate(learning_rate)
    if alpha is not None:
        checks.check_scalar(
            alpha,
            "alpha",
            low=-1.0,
            high=1.0,
            low_open=True,
            high_open=True,
        )
    checks.check_scalar(eps, "eps", low=0.0)
    checks.check_bool(fused, "fused")
    rd.check_radius(radius)
    # A traced alpha (optax.inject_hyperparams) may change later: it always
    # needs an order, or it would be silently ignored.
    if layer_order is None and alpha is not None:
        if not checks.is_concrete(alpha) or alpha != 0:
            raise ValueError(
                f"`{checks.caller()}(alpha={alpha!r})` needs `layer_order`: "
                "the layers' key paths from input to output (pytree leaf "
                "order is alphabetical, not forward order), or "
                "layer_order='leaves' to use leaf order."
            )

    factors: Multipliers = 1.0 if multipliers is None else multipliers
    check_multipliers(factors, None)
    if layer_order is not None:
        depth = ordered_depth_multipliers(
            0.0 if alpha is None else alpha, layer_order, axis
        )
        factors = product(depth, factors)
    return layca_optimizer(
        learning_rate,
        factors,
        base=base,
        mask=mask,
        other=other,
        axis=axis,
        eps=eps,
        fused=fused,
        radius=radius,
    )


def layca_optimizer(
    learning_rate: optax.ScalarOrSchedule | LayerRates,
    multipliers: Multipliers,
    *,
    base: optax.GradientTransformation | None,
    mask: optax.MaskOrFn,
    other: optax.GradientTransformation | None,
    axis: Axis,
    eps: jax.typing.ArrayLike,
    fused: bool,
    radius: Radius = None,
) -> optax.GradientTransformationExtraArgs:
    """:func:`layca` from checked arguments: the fused step or the chain
    after ``base``, in :func:`~layca_optax._builder.full_optimizer`. A
    :class:`~layca_optax._rates.LayerRates` rate (each layer its own rate,
    e.g. :func:`~layca_optax.analysis.adapt_copy`'s recording) needs
    ``fused``."""
    with checks.checked():  # each argument was checked by the caller
        if fused:
            step = scale_by_layca(
                learning_rate,  # a LayerRates too
                multipliers,
                axis=axis,
                eps=eps,
                radius=radius,
            )
        else:
            assert not isinstance(learning_rate, LayerRates)
            step = layca_chain(
                learning_rate, multipliers, axis=axis, eps=eps, radius=radius
            )
    return full_optimizer(step, base=base, other=other, mask=mask, axis=axis)
