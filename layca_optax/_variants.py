"""The paper's variants as full optimizers: the LARS equivalent, Hyperball."""

from __future__ import annotations

import jax
import optax

from layca_optax import (
    _checks as checks,
    _normalization as normalization,
    _radius as rd,
    _reprojection as reprojection,
)
from layca_optax._axes import Axis
from layca_optax._builder import (
    check_arguments,
    full_optimizer,
    stateless_step,
)
from layca_optax._norm_growth import cap_norm_growth
from layca_optax._radius import Radius


_STATIC = ("axis", "mask")
"""The arguments that ``optax.inject_hyperparams`` must not call as
schedules."""
_HYPERBALL_STATIC = (*_STATIC, "radius")


@checks.public
def layca_lars(
    learning_rate: optax.ScalarOrSchedule,
    base: optax.GradientTransformation | None = None,
    *,
    max_growth: jax.typing.ArrayLike | None = 1e-4,
    mask: optax.MaskOrFn = None,
    other: optax.GradientTransformation | None = None,
    axis: Axis = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The LARS-equivalent variant of Layca: normalize and step, no projection.

    Appendix A.4 of the paper compares Layca with its operations 2 and 3
    only, which the authors call LARS-equivalent: no tangent projection and
    no reprojection (their code: ``Supplementary Results/LARS.py`` in the
    repository of the paper's first version). Per layer, with
    :math:`v` the ``base`` direction (the gradient when ``base`` is None)
    and :math:`\eta` the learning rate:

    .. math::

      s = \frac{v}{\lVert v \rVert} \lVert w \rVert
      \quad (0 \text{ if } \lVert v \rVert = 0), \qquad
      w' = w - \eta s,

    then :func:`cap_norm_growth` (unless ``max_growth`` is None): the norm
    may grow by at most ``max_growth`` times the initial norm per step.
    Without the projection each step lengthens the layer (by
    :math:`\approx \eta^2/2` relative for a step orthogonal to it), which is
    why the authors added the cap and, for their LARS runs, multiplied the
    initial kernels by 1/4 ("as the weights increase a lot during
    training").

    As in the authors' code there is no epsilon: only an exactly zero
    direction gives no step. They used velocity momentum
    :math:`v = \mu m - \eta g`; ``base=optax.trace(mu)`` gives the same
    direction for a constant learning rate.

    As :func:`layca`, ``init`` warns about zero layers (a zero layer gets
    no step) and, when ``other`` is None, lists the leaves that stay frozen.

    Args:
      learning_rate: :math:`\eta \ge 0`, a float or an optax schedule.
      base: the direction (``optax.trace(0.9)``, ``optax.scale_by_adam()``,
        ...); ``None``: the gradient.
      max_growth: the cap :math:`c` of :func:`cap_norm_growth`; ``None``
        for no cap.
      mask: which leaves are layers (default :func:`default_layer_mask`:
        kernels). The authors applied it to every parameter: pass
        ``mask=lambda p: jax.tree.map(lambda _: True, p)``.
      other: the transformation of the other leaves; default: unchanged.
      axis: axes each norm reduces over (see :data:`Axis`).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``params``.

    Example:
      >>> import jax
      >>> import optax
      >>> import layca_optax
      >>> params = {"w": jax.random.normal(jax.random.key(0), (4, 3)) / 4}
      >>> tx = layca_optax.layca_lars(3**-3, other=optax.sgd(0.1))
      >>> state = tx.init(params)
      >>> grads = {"w": jax.random.normal(jax.random.key(1), (4, 3))}
      >>> updates, state = tx.update(grads, state, params)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, Appendix A.4; first version:
      "On layer-level control of DNN training and its impact on
      generalization" (arXiv:1806.01603v1), with the ``LARS.py`` code.
      You, Gitman & Ginsburg, `Large batch training of convolutional networks
      <https://arxiv.org/abs/1708.03888>`_, 2017 (LARS).
    """
    check_arguments(base, other, mask, axis, _STATIC)
    checks.check_learning_rate(learning_rate)
    if max_growth is not None:
        checks.check_scalar(max_growth, "max_growth", low=0.0)
    with checks.checked():
        cap = (
            optax.identity()
            if max_growth is None
            else cap_norm_growth(max_growth, axis=axis)
        )
    return full_optimizer(
        stateless_step(normalization, axis, 0.0),
        optax.scale_by_learning_rate(learning_rate),
        cap,
        base=base,
        other=other,
        mask=mask,
        axis=axis,
    )


@checks.public
def hyperball(
    learning_rate: optax.ScalarOrSchedule,
    base: optax.GradientTransformation | None = None,
    *,
    mask: optax.MaskOrFn = None,
    other: optax.GradientTransformation | None = None,
    axis: Axis = None,
    eps: jax.typing.ArrayLike = 1e-10,
    radius: Radius = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Hyperball (AdamH, MuonH): normalize and reproject, no projection.

    With :math:`R = \lVert w \rVert` the current norm and :math:`u` the
    ``base`` direction, each layer steps

    .. math::

      w \leftarrow R \, \frac{w'}{\lVert w' \rVert}, \qquad
      w' = w - \eta R \frac{u}{\lVert u \rVert}

    (no step if :math:`\lVert u \rVert \le \epsilon`), i.e. Layca without
    the tangent projection: Marin's ``scale_by_adamh`` for
    ``base=optax.scale_by_adam()``, MuonH for Muon's direction. The norm is
    kept, but **the angle turned is not fixed**: with
    :math:`\varphi = \angle(w, u)`,

    .. math::

      \theta = \operatorname{atan2}\left(\eta \sin\varphi,\;
      1 - \eta \cos\varphi\right),

    which is :math:`\arctan\eta` (Layca's angle) only when :math:`u \perp w`,
    0 when :math:`u` is parallel to :math:`w` (:math:`\eta < 1`) and at most
    :math:`\arcsin\eta` (at :math:`\cos\varphi = \eta`). The radial part of
    :math:`u` is wasted; Layca projects it out first.

    Fixed radius (``radius=R``, Hyperball's fixed-radius mode): the new
    weights are :math:`R\, w' / \lVert w' \rVert`, with the same
    :math:`w'` (its step sized by the current norm), so the angle above
    does not depend on :math:`R`. For a layer on its radius this is the
    paper's :math:`W \leftarrow R \operatorname{normalize}(W - \eta R
    \operatorname{normalize}(u))`; a layer that starts off its radius
    turns by the angle above in its first step (the paper's form, whose
    step is :math:`\eta R`, would turn it by that angle at
    :math:`\eta R / \lVert w\rVert`) and lands on :math:`R`.

    Muon: ``optax.contrib.scale_by_muon`` orthogonalizes 2-D leaves; in optax
    0.2.8 its default ``weight_dimension_numbers=None`` fails on a tree of
    several leaves, so pass them explicitly (see the example).

    As :func:`layca`, ``init`` warns about zero layers (a zero layer gets
    no step) and, when ``other`` is None, lists the leaves that stay frozen.

    Args:
      learning_rate: :math:`\eta \ge 0`, a float or an optax schedule.
      base: the direction: ``optax.scale_by_adam()`` (AdamH),
        ``optax.contrib.scale_by_muon(...)`` (MuonH), ...; ``None``: the
        gradient.
      mask: which leaves are layers (default
        :func:`default_layer_mask`: kernels).
      other: the transformation of the other leaves; default: unchanged.
      axis: axes each norm reduces over (see :data:`Axis`); Marin takes one
        norm per leading-axis entry of stacked kernels: ``axis=(1, 2)``.
      eps: directions with norm at or below ``eps`` give no step (Marin
        floors the norm at ``1e-10`` instead).
      radius: ``None`` (default): :math:`R = \lVert w\rVert`, each layer
        keeps its norm (Marin's AdamH). Else the fixed-radius mode: each
        nonzero layer lands on its radius :math:`R` (a positive number, a
        prefix tree of them, per-slice arrays with ``axis``, or a callable
        of the initial layers kept in the state; see
        :func:`reproject_to_sphere`; static under
        ``optax.inject_hyperparams``).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
      ``params``.

    Example:
      >>> import jax
      >>> import optax
      >>> from optax.contrib import MuonDimensionNumbers, scale_by_muon
      >>> import layca_optax
      >>> params = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
      >>> dims = lambda tree: jax.tree.map(lambda _: MuonDimensionNumbers(),
      ...                                  tree)
      >>> tx = layca_optax.hyperball(
      ...     0.02, scale_by_muon(weight_dimension_numbers=dims))
      >>> grads = {"w": jax.random.normal(jax.random.key(1), (4, 3))}
      >>> updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
      >>> new = optax.apply_updates(params, updates)
      >>> norm = jax.numpy.linalg.norm
      >>> bool(jax.numpy.isclose(norm(new["w"]), norm(params["w"])))
      True

    References:
      Wen, Dang, Lyu, Ma & Liang, Hyperball (AdamH/MuonH), arXiv:2606.16899;
      ``marin-community/marin``, ``levanter/optim/adamh.py``.
    """
    check_arguments(base, other, mask, axis, _HYPERBALL_STATIC)
    checks.check_learning_rate(learning_rate)
    checks.check_scalar(eps, "eps", low=0.0)
    rd.check_radius(radius)
    return full_optimizer(
        stateless_step(normalization, axis, eps),
        optax.scale_by_learning_rate(learning_rate),
        reprojection.sphere_step(axis, radius),
        base=base,
        other=other,
        mask=mask,
        axis=axis,
    )
