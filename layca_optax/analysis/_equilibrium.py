"""Rotational equilibrium: weight decay versus per-step rotation (Kosson+)."""

from __future__ import annotations

import math

from layca_optax import _checks as checks


_DEFAULTS = {
    "sgdm": {"momentum": 0.0},
    "adamw": {"b1": 0.9},
    "lion": {"b1": 0.9, "b2": 0.99},
}


def _factor(optimizer, momentum, b1, b2) -> float:
    """``theta**2 / (2 * learning_rate * weight_decay)`` for ``optimizer``."""
    if optimizer not in _DEFAULTS:
        raise ValueError(
            f"{checks.arg('optimizer')} must be one of {sorted(_DEFAULTS)}, "
            f"got {optimizer!r}."
        )
    given = {"momentum": momentum, "b1": b1, "b2": b2}
    args = dict(_DEFAULTS[optimizer])
    for name, value in given.items():
        if value is None:
            continue
        if name not in args:
            raise ValueError(
                f"{checks.arg(name)} does not apply to optimizer "
                f"{optimizer!r} (it takes {sorted(args)}), got {value!r}."
            )
        checks.check_scalar(value, name, low=0.0, high=1.0, high_open=True)
        args[name] = float(value)
    if optimizer == "sgdm":
        return 1.0 / (1.0 + args["momentum"])
    beta1 = args["b1"]
    if optimizer == "adamw":
        return (1.0 - beta1) / (1.0 + beta1)
    beta2 = args["b2"]
    return (math.pi / 2) * (
        (1.0 - beta1) ** 2 + beta1**2 * (1.0 - beta2) / (1.0 + beta2)
    )


@checks.public
def equilibrium_rotation(
    optimizer: str,
    *,
    learning_rate: float,
    weight_decay: float,
    momentum: float | None = None,
    b1: float | None = None,
    b2: float | None = None,
) -> float:
    r"""The expected per-step angle of a layer in rotational equilibrium.

    Kosson, Messmer & Jaggi derive (and their code ``epfml/REQ`` uses as
    ``etar_func``), with :math:`\eta` the learning rate and :math:`\lambda`
    the weight decay:

    =========  ============================================================
    ``sgdm``   :math:`\sqrt{2\eta\lambda / (1 + \alpha)}`
    ``adamw``  :math:`\sqrt{2\eta\lambda (1 - \beta_1) / (1 + \beta_1)}`
    ``lion``   :math:`\sqrt{\tfrac{\pi}{2} \, 2\eta\lambda \left((1-\beta_1)^2
               + \beta_1^2 \tfrac{1-\beta_2}{1+\beta_2}\right)}`
    =========  ============================================================

    The quantity is the **angle in radians** between a layer's weights
    before and after one step, in the steady state where weight decay's
    shrinking balances the growth of the norm caused by the updates. Strictly
    it is the root mean square :math:`\sqrt{E\lVert \Delta w_\perp
    \rVert^2} / \lVert w \rVert`; for a layer of many weights the angle
    concentrates, so it is also the mean angle. It holds for
    scale-invariant weights (a normalization follows the layer, so the
    gradient is orthogonal to :math:`w` and scales as
    :math:`1 / \lVert w \rVert`) whose gradients behave like a random walk
    (uncorrelated from step to step, no dominant direction), to first order
    in the angle. It is reached after a few times
    :math:`(1 - \alpha) / (4 \eta \lambda)` steps (SGDM) or
    :math:`1 / (2 \eta \lambda)` steps (AdamW, Lion). It exists for
    :math:`\eta\lambda < \min(1, \pi^2 / (8 f))`, with :math:`f` the factor
    of :math:`2\eta\lambda` under the square root above (:math:`1 / (1 +
    \alpha)` for SGDM): the decay multiplies the weights by :math:`1 -
    \eta\lambda`, which must stay positive, and the angle must stay below
    :math:`\pi / 2`. Outside, a ``ValueError`` says so.

    The optimizers, as optax chains:

    * ``"sgdm"``: ``optax.chain(optax.add_decayed_weights(wd),
      optax.sgd(lr, momentum))``, i.e. ``torch.optim.SGD(weight_decay=wd)``:
      the decay goes through the momentum. With decoupled decay,
      ``optax.chain(optax.trace(momentum), optax.add_decayed_weights(wd),
      optax.scale(-lr))``, use ``"adamw"`` with ``b1=momentum``.
    * ``"adamw"``: ``optax.adamw(lr, b1=b1, weight_decay=wd)`` (``b2`` and
      ``eps`` do not enter).
    * ``"lion"``: ``optax.lion(lr, b1, b2, weight_decay=wd)``; an
      approximation (sign of a Gaussian), within 10% in our simulations.

    Args:
      optimizer: ``"sgdm"``, ``"adamw"`` or ``"lion"``.
      learning_rate: :math:`\eta \ge 0`.
      weight_decay: :math:`\lambda \ge 0`, as optax and PyTorch scale it
        (the decay per step is :math:`\eta\lambda w`).
      momentum: :math:`\alpha \in [0, 1)`, ``"sgdm"`` only (default 0).
      b1: :math:`\beta_1 \in [0, 1)`, ``"adamw"`` and ``"lion"`` (default
        0.9).
      b2: :math:`\beta_2 \in [0, 1)`, ``"lion"`` only (default 0.99).

    Returns:
      The angle, in radians per step. Layca turns by :math:`\arctan\eta`:
      see :func:`equilibrium_layca_learning_rate`.

    Example:
      >>> import layca_optax
      >>> layca_optax.analysis.equilibrium_rotation(
      ...     "adamw", learning_rate=1e-3, weight_decay=0.1)
      0.0032444284226152507

    References:
      Kosson, Messmer & Jaggi, `Rotational Equilibrium: How Weight Decay
      Balances Learning Across Neural Networks
      <https://arxiv.org/abs/2305.17212>`_, ICML 2024; code ``epfml/REQ``.
    """
    factor = _factor(optimizer, momentum, b1, b2)
    checks.check_scalar(learning_rate, "learning_rate", low=0.0)
    checks.check_scalar(weight_decay, "weight_decay", low=0.0)
    product = float(learning_rate) * float(weight_decay)
    given = f"learning_rate={learning_rate!r}, weight_decay={weight_decay!r}"
    _check_product(given, optimizer, factor, product)
    return math.sqrt(2.0 * product * factor)


def _check_product(given, optimizer, factor, product) -> None:
    """Raises unless ``product`` (learning rate times weight decay) is in
    the domain where the equilibrium exists: the decay's factor
    ``1 - product`` stays positive, and the angle ``sqrt(2 product f)``
    stays below ``pi/2`` (where Layca's ``tan`` ends)."""
    bound = min(1.0, math.pi**2 / (8.0 * factor))
    if product < bound:
        return
    raise ValueError(
        f"`{checks.caller()}({given})`: no rotational equilibrium for "
        f"{optimizer!r} with learning_rate * weight_decay = {product:.6g}; "
        "it needs learning_rate * weight_decay < min(1, pi**2 / (8 f)) = "
        f"{bound:.6g}, with f = {factor:.6g} (the decay multiplies the "
        "weights by 1 - learning_rate * weight_decay, which must stay "
        "positive, and the angle sqrt(2 * learning_rate * weight_decay * f) "
        "must stay below pi/2)."
    )


@checks.public
def equilibrium_weight_decay(
    optimizer: str,
    *,
    learning_rate: float,
    rotation: float,
    momentum: float | None = None,
    b1: float | None = None,
    b2: float | None = None,
) -> float:
    r"""The weight decay whose equilibrium angle per step is ``rotation``.

    The inverse of :func:`equilibrium_rotation` in ``weight_decay``:
    :math:`\lambda = \theta^2 / (2 \eta f)` with :math:`f` the optimizer's
    factor (:math:`1/(1+\alpha)` for SGDM, :math:`(1-\beta_1)/(1+\beta_1)`
    for AdamW). To match a Layca learning rate :math:`\rho`, pass
    ``rotation=math.atan(rho)``.

    Args:
      optimizer: ``"sgdm"``, ``"adamw"`` or ``"lion"``.
      learning_rate: :math:`\eta > 0`.
      rotation: the target angle :math:`\theta`, radians per step, in
        :math:`[0, \pi/2)`.
      momentum: as in :func:`equilibrium_rotation`.
      b1: as in :func:`equilibrium_rotation`.
      b2: as in :func:`equilibrium_rotation`.

    Returns:
      The weight decay :math:`\lambda` (as optax scales it).

    Example:
      >>> import math
      >>> import layca_optax
      >>> wd = layca_optax.analysis.equilibrium_weight_decay(
      ...     "sgdm", learning_rate=0.1, rotation=math.atan(3**-3),
      ...     momentum=0.9)
      >>> round(wd, 6)
      0.01302

    References:
      Kosson, Messmer & Jaggi, `Rotational Equilibrium: How Weight Decay
      Balances Learning Across Neural Networks
      <https://arxiv.org/abs/2305.17212>`_, ICML 2024.
    """
    factor = _factor(optimizer, momentum, b1, b2)
    checks.check_scalar(learning_rate, "learning_rate", low=0.0, low_open=True)
    checks.check_scalar(
        rotation, "rotation", low=0.0, high=math.pi / 2, high_open=True
    )
    product = float(rotation) ** 2 / (2.0 * factor)
    _check_product(f"rotation={rotation!r}", optimizer, factor, product)
    return product / float(learning_rate)


@checks.public
def equilibrium_layca_learning_rate(
    optimizer: str,
    *,
    learning_rate: float,
    weight_decay: float,
    momentum: float | None = None,
    b1: float | None = None,
    b2: float | None = None,
) -> float:
    r"""The Layca learning rate turning a layer as far as the equilibrium.

    Layca turns each layer by exactly :math:`\arctan\rho` per step, so the
    equivalent of an optimizer with weight decay in equilibrium is
    :math:`\rho = \tan\theta` with :math:`\theta` from
    :func:`equilibrium_rotation`. Unlike the equilibrium, Layca's angle
    holds at every step, from the first.

    Args:
      optimizer: ``"sgdm"``, ``"adamw"`` or ``"lion"``.
      learning_rate: the optimizer's learning rate :math:`\eta \ge 0`.
      weight_decay: its weight decay :math:`\lambda \ge 0`.
      momentum: as in :func:`equilibrium_rotation`.
      b1: as in :func:`equilibrium_rotation`.
      b2: as in :func:`equilibrium_rotation`.

    Returns:
      :math:`\tan\theta`, to pass as ``layca(learning_rate=...)``.

    Example:
      >>> import layca_optax
      >>> rho = layca_optax.analysis.equilibrium_layca_learning_rate(
      ...     "sgdm", learning_rate=0.1, weight_decay=5e-4, momentum=0.9)
      >>> round(rho, 6)
      0.007255

    References:
      Kosson, Messmer & Jaggi, `Rotational Equilibrium: How Weight Decay
      Balances Learning Across Neural Networks
      <https://arxiv.org/abs/2305.17212>`_, ICML 2024.
    """
    theta = equilibrium_rotation(
        optimizer,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        momentum=momentum,
        b1=b1,
        b2=b2,
    )
    return math.tan(theta)
