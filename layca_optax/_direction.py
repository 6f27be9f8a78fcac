"""The ``base`` direction: checks (a full optimizer steps uphill), Muon.

Layca turns each layer *against* its ``base`` direction, so ``base`` must be
a direction (``optax.scale_by_adam()``), not a full optimizer
(``optax.adam(1e-3)``), whose update already includes the learning rate and
the sign flip. The two cannot be told apart from their types (both are
``GradientTransformation``\\ s), so :func:`checked_base` probes: at ``init``
it runs two updates of a fresh state of ``base`` on a tiny stand-in layer
(of the first leaf's dtype, at most 2 entries per axis, weights and
gradients all ones: a few operations, whatever the model's size) and raises
``ValueError`` if they point against the gradient. The stand-in needs only
the first leaf's shape and dtype, never its values, and the probe runs
eagerly (``jax.ensure_compile_time_eval``), so the check is the same for an
eager ``init``, ``jax.jit(tx.init)``, ``jax.eval_shape(tx.init, ...)``
(Flax's sharded init) and an ``nnx.Optimizer`` built inside ``nnx.jit``;
under a jit it runs once per trace, not per call. A
direction transformation has a positive inner product with a positive
gradient (momentum, Adam, RMS scaling, Lion's sign, Muon's
orthogonalization, added weight decay); a full optimizer a negative one.
Two steps, so that a warmup schedule starting at 0 is caught at its second
step. The probe's state is discarded: the real ``base.init`` runs on the
real params. Muon's structure is first checked on the real shapes with
``jax.eval_shape`` (no computation), so that
``optax.contrib.scale_by_muon()`` without dimension numbers (which fails on
any tree of layers) fails at ``init`` with the fix in the message, not deep
inside ``update``; :func:`muon_dimension_numbers` gives them.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _axes as ax, _checks as checks
from layca_optax._axes import Axis
from layca_optax._masks import path_str


_DIRECTIONS = (
    "base=optax.scale_by_adam() for optax.adam(lr), base=optax.trace(0.9) "
    "for optax.sgd(lr, momentum=0.9), base=None for optax.sgd(lr), "
    "base=optax.scale_by_lion() for optax.lion(lr)"
)


def _stand_in(x: Any, value: float) -> Any:
    """A constant array of ``x``'s dtype with at most 2 entries per axis;
    only ``x``'s shape and dtype are read (it may be a tracer)."""
    shape = tuple(min(n, 2) for n in np.shape(x))
    return jnp.full(shape, value, jnp.result_type(x))


def _inner(a: Any, b: Any) -> float:
    total = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        total += float(jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)))
    return total


def _muon_hint(base: Any) -> str:
    name = getattr(getattr(base, "update", None), "__qualname__", "")
    if "muon" not in name:
        return ""
    return (
        " optax.contrib.scale_by_muon needs dimension numbers for a tree of "
        "layers: base=optax.contrib.scale_by_muon(weight_dimension_numbers="
        "layca_optax.muon_dimension_numbers()) (pass the same `axis` as "
        "Layca's to both)."
    )


def _check_structure(base: Any, params: Any) -> None:
    """``base`` traced on the real shapes, without computing anything."""

    def run(p):
        state = base.init(p)
        return base.update(p, state, p)

    try:
        jax.eval_shape(run, params)
    except (TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{checks.arg('base')}: the base transformation fails on the "
            f"layers ({type(err).__name__}: {first}).{_muon_hint(base)}"
        ) from err


def _probe(base: Any, leaf: Any, grad: float) -> list[tuple] | None:
    """Two probe updates of a fresh state of ``base`` on a stand-in layer
    cut from ``leaf`` (weights all ones, gradients all ``grad``), eagerly
    (also inside a jit): ``[(update, weights), ...]``; None when ``base``
    cannot take a single array (a structure-dependent mask, extra
    arguments)."""
    out = []
    try:
        with jax.ensure_compile_time_eval():  # eager, also inside a jit
            w, g = _stand_in(leaf, 1.0), _stand_in(leaf, grad)
            state = base.init(w)
            for _ in range(2):
                u, state = base.update(g, state, w)  # extra args: TypeError
                out.append((u, w))
    except Exception:  # noqa: BLE001 (a stand-in the base cannot take)
        return None
    return out


def _probe_sign(base: Any, params: Any) -> float | None:
    """The smaller inner product of two probe updates with the gradient, on
    one stand-in layer (cut from the first leaf); None when ``base`` cannot
    take a single array."""
    probed = _probe(base, jax.tree.leaves(params)[0], 1.0)
    if probed is None:
        return None
    with jax.ensure_compile_time_eval():
        return min(_inner(u, w) for u, w in probed)


def check_direction(base: Any, params: Any) -> None:
    """Raises ``ValueError`` naming the ``base`` argument if ``base`` fails on
    the layers ``params`` or is a full optimizer (steps against the
    gradient). ``params`` may be concrete or abstract (tracers inside
    ``jit`` or ``eval_shape``): only shapes and dtypes are read. Nothing is
    checked for a tree without leaves."""
    if not jax.tree.leaves(params):
        return
    if _muon_hint(base):
        _check_structure(base, params)
    dot = _probe_sign(base, params)
    if dot is not None and dot < 0:
        raise ValueError(
            f"{checks.arg('base')} got a full optimizer: its update points "
            "against the gradient (it includes a learning rate and the sign "
            "flip), so Layca would turn the layers uphill. Pass the "
            f"direction only: {_DIRECTIONS}. Layca sets the step itself "
            f"({checks.arg('learning_rate')})."
        )


# A small float16 gradient entry: optax's Adam and RMSProp square it (times
# 1 - b2 or 1 - decay) below float16's range, and their default eps=1e-8 is
# 0 in float16.
_SMALL_FLOAT16_GRAD = 1e-4


def warn_float16_direction(base: Any, params: Any) -> None:
    """Warns, with the fix, when ``base`` gives a non-finite direction for
    a float16 layer whose gradient entries are 1e-4 (two probe updates on
    a stand-in layer, as :func:`check_direction`): optax's ``scale_by_adam``
    and ``scale_by_rms`` with their default ``eps=1e-8`` (0 in float16)
    return ``inf``/NaN for any entry below about 8e-3 (Adam) or 8e-4
    (RMSProp), which makes the layer's Layca update NaN."""
    leaf = next(
        (x for x in jax.tree.leaves(params) if jnp.result_type(x) == "float16"),
        None,
    )
    probed = None if leaf is None else _probe(base, leaf, _SMALL_FLOAT16_GRAD)
    if probed is None:
        return
    with jax.ensure_compile_time_eval():
        finite = all(
            bool(jnp.isfinite(x).all())
            for u, _ in probed
            for x in jax.tree.leaves(u)
        )
    if not finite:
        warnings.warn(
            f"{checks.arg('base')} returns a non-finite direction for float16 "
            f"layers with gradient entries of {_SMALL_FLOAT16_GRAD:g}, so "
            "their Layca update would be NaN: Adam's and RMSProp's default "
            "eps=1e-8 is 0 in float16, and their squared gradients fall "
            "below float16's range for entries under about 8e-3 (Adam) or "
            "8e-4 (RMSProp). "
            "Pass eps=1e-6 (e.g. optax.scale_by_adam(eps=1e-6)), or keep "
            "float32 params (master weights).",
            stacklevel=3,
        )


def checked_base(
    base: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``base`` whose ``init`` first runs :func:`check_direction` and
    :func:`warn_float16_direction`."""
    wrapped = optax.with_extra_args_support(base)

    def init_fn(params):
        check_direction(base, params)
        warn_float16_direction(base, params)
        return wrapped.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, wrapped.update)


@checks.public
def muon_dimension_numbers(axis: Axis = None) -> Any:
    """Muon's dimension numbers for Layca's layers, as ``axis`` makes them.

    ``optax.contrib.scale_by_muon`` orthogonalizes each leaf as a matrix
    given by ``weight_dimension_numbers``; without them it fails on any tree
    of layers. This gives each layer (each slice that ``axis`` makes a
    layer) to Muon as the matrix (its reduced axes but the last) x (the
    last reduced axis); the axes that ``axis`` keeps are batch axes. With
    the default ``axis=None``: a ``(fan_in, fan_out)`` kernel is one
    matrix, a ``(*window, in, out)`` conv kernel the matrix
    ``(window * in, out)``; with ``axis=(-2, -1)``, each stacked layer (and
    expert) of a scanned model is its own matrix. Pass the same ``axis`` to
    :func:`layca_optax.layca`.

    The rule reads only the reduced axes, not which of them the model
    contracts: on an attention query kernel ``(d, H, hd)`` it makes the
    matrix ``(d * H) x hd`` (``128 x 8`` for ``d = 32``, 4 heads of 8), not
    ``d x (H * hd)`` (``32 x 32``). For multi-axis kernels, use
    :func:`infer_muon_dimension_numbers`, which reads the contraction from
    the model.

    Args:
      axis: the reduction axes of each layer; see :data:`Axis`.

    Returns:
      A callable of the (layers') params giving a tree of
      ``optax.contrib.MuonDimensionNumbers``, for
      ``scale_by_muon(weight_dimension_numbers=...)``. Layers with fewer
      than two reduced axes raise ``ValueError`` (Muon needs matrices).

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> muon = optax.contrib.scale_by_muon(
      ...     weight_dimension_numbers=layca_optax.muon_dimension_numbers())
      >>> tx = layca_optax.layca(0.1, base=muon)
      >>> params = {"a": {"kernel": jnp.eye(3)}, "b": {"kernel": jnp.eye(3)}}
      >>> updates, state = tx.update(params, tx.init(params), params)

    References:
      Jordan et al., `Muon: an optimizer for hidden layers in neural
      networks <https://kellerjordan.github.io/posts/muon/>`_, 2024.
    """
    ax.check_axis(axis)

    def fn(params: Any) -> Any:
        treedef: Any
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        out = []
        for (path, x), axes in zip(
            flat, ax.axes_per_leaf(params, axis), strict=True
        ):
            if len(axes) < 2:
                raise ValueError(
                    f"`muon_dimension_numbers(axis={axis!r})`: the layer "
                    f"{path_str(path)!r} of shape {np.shape(x)} reduces "
                    f"over {len(axes)} axis; Muon needs matrices (two or "
                    "more reduced axes). Route vectors to `other`."
                )
            out.append(
                optax.contrib.MuonDimensionNumbers(
                    reduction_axis=axes[:-1], output_axis=axes[-1]
                )
            )
        return treedef.unflatten(out)

    return fn
