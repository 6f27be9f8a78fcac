"""The layer/other split of the optimizers, its checks and its warnings."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import optax

from layca_optax import _axes as ax, _checks as checks, _sums as sm
from layca_optax._axes import Axis
from layca_optax._masks import path_str, resolve_mask, shape_mismatch
from layca_optax._state_check import check_state_fits, explain


_LAYER, _OTHER = "layca", "other"
_SHOWN = 8  # paths listed per group in a warning


def _labels_fn(mask: optax.MaskOrFn):
    def labels(tree):
        if not jax.tree.leaves(tree):  # optax.tree.map_params' placeholder
            return tree
        flags = resolve_mask(mask, tree)
        return jax.tree.map(lambda f: _LAYER if f else _OTHER, flags)

    return labels


def zero_layers(params: Any, axis: Axis) -> list[str]:
    """Paths of the leaves of ``params`` with a zero layer (a zero slice
    with ``axis``); empty unless ``params`` holds values (not tracers)."""
    if not checks.is_concrete(params):
        return []
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    axes = ax.axes_per_leaf(params, axis)
    with jax.ensure_compile_time_eval():  # concrete params inside a jit
        flags = jax.device_get(
            [
                jnp.any(jnp.all(w == 0, axis=a)) if jnp.size(w) else False
                for (_, w), a in zip(flat, axes, strict=True)
            ]
        )
    return [path_str(p) for (p, _), f in zip(flat, flags, strict=True) if f]


def warn_zero_layers(
    tx: optax.GradientTransformation, axis: Axis
) -> optax.GradientTransformationExtraArgs:
    """``tx`` whose ``init`` warns, when given concrete params, about the
    layers that are zero (which Layca leaves unchanged)."""
    tx = optax.with_extra_args_support(tx)

    def init_fn(params):
        zero = zero_layers(params, axis)
        if zero:
            warnings.warn(
                f"`{checks.caller()}`: these layers are zero: "
                f"{', '.join(zero)}. "
                "A zero layer is left unchanged (it has no direction to "
                "rotate), so they will not train. Route them to `other` "
                "with a mask computed once from the initial params, e.g. "
                "mask=jax.tree.map(lambda w: w.ndim >= 2 and bool(w.any()), "
                "params), other=optax.adam(1e-3); or initialize them "
                "nonzero.",
                UserWarning,
                stacklevel=3,
            )
        return tx.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, tx.update)


def check_partition_args(base: Any, other: Any, mask: optax.MaskOrFn) -> None:
    """``ValueError`` for a bad ``base``, ``other`` or ``mask``."""
    checks.check_transformation(base, "base")
    checks.check_transformation(other, "other")
    if mask is not None and not callable(mask):
        resolve_mask(mask, mask)  # static leaves must be bools


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:_SHOWN])
    more = len(paths) - _SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")


def split_message(params: Any, mask: Any, other: Any) -> str:
    """The warning due when leaves would stay frozen ("" when none is):
    ``other`` is None and some leaves are not layers. A given ``other``
    trains every leaf that is not a layer, so nothing is frozen by
    surprise: no warning, whatever ``mask``."""
    if other is not None:
        return ""
    flags = resolve_mask(mask, params)
    flat = jax.tree_util.tree_flatten_with_path(flags)[0]
    layers = [path_str(p) for p, f in flat if f]
    rest = [path_str(p) for p, f in flat if not f]
    if not rest:
        return ""
    rule = "the default rule" if mask is None else "`mask`"
    return (
        f"`{checks.caller()}`: by {rule}, {len(layers)} leaves are layers "
        f"(rotated): {_listed(layers)}; {len(rest)} are not and stay frozen "
        f"at their initial values, because `other` is None: {_listed(rest)}."
        " Pass other=optax.adam(1e-3) (or another optimizer) to train them, "
        "or other=optax.set_to_zero() to keep them frozen without this "
        "warning. The default rule (layca_optax.default_layer_mask) takes "
        "leaves named kernel, never bias/scale/embedding, and others with "
        "ndim >= 2."
    )


def check_arrays(params: Any) -> None:
    """``ValueError`` naming the first leaf of ``params`` that is neither
    an array nor a number (a string, an object)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        number = isinstance(leaf, int | float) and not isinstance(leaf, bool)
        if not number and not (
            hasattr(leaf, "shape") and hasattr(leaf, "dtype")
        ):
            where = repr(path_str(path)) if path else "the params"
            raise ValueError(
                f"`{checks.caller()}`'s init got {where} = {leaf!r:.60}, "
                f"of type {type(leaf).__name__}: the params must be a pytree "
                "of arrays (jax.Array, np.ndarray or jax.ShapeDtypeStruct)."
            )


def check_update_args(updates: Any, state: Any, params: Any) -> None:
    """``ValueError`` for a missing state or params, or gradients whose
    structure or shapes differ from the params'."""
    if state is None:
        raise ValueError(
            f"`{checks.caller()}`'s update got state=None: pass the state "
            "that `tx.init(params)` returned (and then the one each update "
            "returns)."
        )
    if params is None:
        raise checks.no_params_error()
    udef: Any
    pdef: Any
    ups, udef = jax.tree_util.tree_flatten_with_path(updates)
    ps, pdef = jax.tree.flatten(params)
    if udef != pdef:
        raise ValueError(
            f"`{checks.caller()}`'s update got `updates` (the gradients) and "
            f"`params` of different structures: {udef} and {pdef}."
        )
    bad = shape_mismatch(ups, ps)
    if bad:
        path, shape, param_shape = bad
        raise ValueError(
            f"`{checks.caller()}`'s update got `updates` and `params` of "
            f"different shapes at {path!r}: {shape} and {param_shape}."
        )


def partition_layers(
    layer_tx: optax.GradientTransformation,
    other: optax.GradientTransformation | None,
    mask: optax.MaskOrFn,
) -> optax.GradientTransformationExtraArgs:
    """``layer_tx`` on the layers of ``mask``, ``other`` (default: no update)
    on the other leaves; bad masks raise ``ValueError``.

    ``init`` warns once (see :func:`split_message`) when ``other`` is None
    and leaves other than layers exist (they stay frozen); ``update`` checks
    its arguments (state, params, matching structures and shapes) with
    messages naming the public function called.
    """
    other_tx = optax.set_to_zero() if other is None else other
    tx = optax.partition({_LAYER: layer_tx, _OTHER: other_tx}, _labels_fn(mask))
    warned: list[bool] = []

    def init_fn(params):
        check_arrays(params)
        if jax.tree.leaves(params):
            sm.check_floating(params, resolve_mask(mask, params))
        if not warned and jax.tree.leaves(params):
            message = split_message(params, mask, other)
            if message:
                warned.append(True)
                warnings.warn(message, UserWarning, stacklevel=2)
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        check_update_args(updates, state, params)
        check_state_fits(state, params, _labels_fn(mask)(params))
        try:
            return tx.update(updates, state, params, **extra_args)
        except (TypeError, ValueError) as err:
            if str(err).startswith("`"):  # this package's own message
                raise
            raise explain(err) from err

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
