"""The layers' forward order, found by tracing the model to a jaxpr (read
by :mod:`._jaxpr_walk`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import optax

from layca_optax import _checks as checks
from layca_optax._masks import leaf_paths, resolve_mask
from layca_optax.tracing._slice_order import slice_order
from layca_optax.tracing._trace import walk


@checks.public
def forward_order(
    fn: Callable[..., Any],
    params: Any,
    *args: Any,
    mask: optax.MaskOrFn = None,
    strict: bool = False,
    per_slice: bool = False,
    **kwargs: Any,
) -> list[str]:
    """The layers' key paths in the order in which ``fn`` first uses them.

    Gives :func:`layca`'s ``layer_order`` (the depth of Eq. 1) for any model,
    without relying on names: pytree leaves are sorted by key (``Conv_10``
    before ``Conv_2``, NNX attributes alphabetically), and module numbering
    follows creation, not use. ``fn(params, *args, **kwargs)`` is traced to a
    jaxpr with :func:`jax.make_jaxpr` on abstract values (nothing is
    computed), and its equations are read in order, inside ``jit``,
    ``remat``/``checkpoint``, ``custom_jvp``/``custom_vjp``, ``shard_map``,
    ``cond``, ``while`` and ``scan`` too.

    **What a use is.** A value *moves* a param leaf if it is the leaf or the
    output of a data-movement primitive (``convert_element_type``,
    ``reshape``, ``transpose``, ``broadcast_in_dim``, ``squeeze``, ``copy``,
    ``device_put``, ``slice``, ``dynamic_slice``, ``gather``, ``split``,
    ``concatenate``, ``pad``, ``rev``, ``select_n``, ``stop_gradient``,
    sharding constraints, ...) applied to a value that moves it: such
    outputs only copy, select or cast the leaf's elements. A leaf's *first
    use* is the first equation, in program order, that takes a value moving
    it and is not data movement: ``dot_general``, ``conv_general_dilated``,
    arithmetic, reductions, comparisons, a ``cond`` index, a ``while``
    predicate, a callback, or any primitive this walk does not open. Call-like
    primitives (``jit``, ``remat``, ``custom_jvp_call``, ``custom_vjp_call``,
    ``shard_map``, and any primitive with one sub-jaxpr taking its operands)
    are walked inline. ``cond`` walks its branches in index order (for
    ``lax.cond(pred, true_fun, false_fun)``: ``false_fun`` first).
    ``while`` and ``scan`` walk their bodies until the carry's moved leaves
    are a fixed point; a ``scan``'s per-step slice of ``xs`` moves what
    ``xs`` moves. Printing (``jax.debug.print``) and returning a leaf from
    ``fn`` are not uses. Leaves first used by the same equation are ordered
    by their first read (the first equation, data movement included, that
    takes a value moving them: an embedding's lookup comes before the layer
    that consumes the looked-up rows), then as the pytree's leaves.

    **Layers never used** by ``fn`` come last, in leaf order; with
    ``strict=True`` they raise a ``ValueError`` instead.

    **Stacked layers.** A leaf with stacked layer axes (``(L, d, H, hd)``
    sliced by a ``lax.scan`` / ``nnx.scan`` / ``nn.scan``, indexed per
    step, or experts ``(L, E, d, f)`` batched in a ``dot_general``) is
    ``L`` (or ``L * E``) layers. By default it is one entry, placed at its
    first use, so Eq. 1 gives the whole stack one depth; a ``UserWarning``
    (once) names such leaves. With ``per_slice=True`` each stacked slice is
    an entry of its own, named as :func:`rotation_metrics` names it with
    ``axis=infer_stacked_axes(...)`` (``"blocks/attn/query/kernel/0"``;
    ``".../0/3"`` for two stacked axes), in depth order: a scan step's
    slices after the previous step's (block 0's query, key, value, output
    and MLP, then block 1's; a ``reverse`` scan from its last slice),
    experts of one step in index order. A leaf indexed per step instead
    (``w[i]`` in a ``fori_loop`` or a Python loop) has its slices listed
    together at its first use, with a ``UserWarning``: the depth order
    across steps is known only for scans. Pass it as ``layer_order`` to
    :func:`layca` with ``axis=infer_stacked_axes(...)`` (or
    :func:`stacked_axes`): Eq. 1 then gives each slice its own depth.

    Args:
      fn: the model, called as ``fn(params, *args, **kwargs)``. Flax Linen:
        ``lambda p, x: model.apply({"params": p, "batch_stats": bs}, x)``.
        Flax NNX: ``graphdef, params, rest = nnx.split(model, nnx.Param,
        ...)`` and ``lambda p, rest, x: nnx.merge(graphdef, p, rest)(x)``
        (passing ``rest`` as an argument, rather than closing over it, lets
        BatchNorm update its statistics in training mode). Equinox:
        ``params, static = eqx.partition(model, eqx.is_array)`` and
        ``lambda p, x: eqx.combine(p, static)(x)``.
      params: the pytree whose leaves are ordered: arrays or
        :class:`jax.ShapeDtypeStruct` (e.g. from :func:`jax.eval_shape`).
      *args: the other arguments of ``fn``. Leaves that are arrays or
        ``jax.ShapeDtypeStruct`` are traced as abstract values; other leaves
        (Python bools and numbers, strings, None, ...) are passed as they
        are, so flags such as ``train=False`` stay static.
      mask: which leaves of ``params`` are layers, as in :func:`layca` (pass
        the same one to both). Default :func:`default_layer_mask`
        (kernels).
      strict: raise if a layer is never used, instead of appending it.
      per_slice: one entry per stacked slice (see above) instead of one
        per leaf.
      **kwargs: keyword arguments of ``fn``, as ``args``. ``fn``'s own
        ``mask`` or ``strict`` arguments must be bound with a ``lambda`` or
        :func:`functools.partial`.

    Returns:
      The layers' paths (as :func:`path_str` writes them), input side first.

    Raises:
      ValueError: a bad ``fn``, ``mask`` or ``strict``, or with
        ``strict=True`` a layer that ``fn`` never uses. Errors raised while
        tracing ``fn`` propagate unchanged.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> def mlp(p, x):
      ...   return jnp.tanh(x @ p["w_in"]) @ p["b_out"].T  # b_out used last
      >>> params = {"b_out": jnp.ones((2, 4)), "w_in": jnp.ones((3, 4))}
      >>> x = jax.ShapeDtypeStruct((8, 3), jnp.float32)  # shapes suffice
      >>> order = layca_optax.forward_order(mlp, params, x)
      >>> order
      ['w_in', 'b_out']
      >>> tx = layca_optax.layca(0.1, alpha=0.6, layer_order=order)

      Flax Linen, where modules are numbered as created:

      >>> import flax.linen as nn
      >>> class Net(nn.Module):
      ...   @nn.compact
      ...   def __call__(self, x):
      ...     head, hidden = nn.Dense(2), nn.Dense(4)  # Dense_0, Dense_1
      ...     return head(nn.relu(hidden(x)))
      >>> net, x = Net(), jnp.ones((1, 3))
      >>> variables = net.init(jax.random.key(0), x)
      >>> layca_optax.forward_order(
      ...     lambda p, x: net.apply({"params": p}, x), variables["params"], x)
      ['Dense_1/kernel', 'Dense_0/kernel']

      Flax NNX, whose state is sorted by attribute name:

      >>> from flax import nnx
      >>> class Mlp(nnx.Module):
      ...   def __init__(self, rngs):
      ...     self.z_in = nnx.Linear(3, 4, rngs=rngs)
      ...     self.a_out = nnx.Linear(4, 2, rngs=rngs)
      ...   def __call__(self, x):
      ...     return self.a_out(nnx.relu(self.z_in(x)))
      >>> graphdef, params, rest = nnx.split(Mlp(nnx.Rngs(0)), nnx.Param, ...)
      >>> layca_optax.forward_order(
      ...     lambda p, rest, x: nnx.merge(graphdef, p, rest)(x),
      ...     params, rest, x)
      ['z_in/kernel', 'a_out/kernel']

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Eq. 1 (the
      layerwise multipliers that need this order).
    """
    checks.check_bool(strict, "strict")
    checks.check_bool(per_slice, "per_slice")
    flags = jax.tree.leaves(resolve_mask(mask, params))
    walker = walk(fn, params, args, kwargs)
    paths = leaf_paths(params)
    used = [i for i in walker.order if flags[i]]
    unused = [i for i in range(len(flags)) if flags[i] and i not in walker.seen]
    if strict and unused:
        raise ValueError(
            f"`{checks.caller()}(strict=True)`: `fn` never uses the layers "
            f"{[paths[i] for i in unused]}."
        )
    if per_slice:
        indexed = [paths[i] for i in used if walker.uses[i].indexed]
        if indexed:
            warn_indexed(indexed)
        return slice_order(walker, used, paths) + [paths[i] for i in unused]
    stacked = [paths[i] for i in used if walker.uses[i].stacked]
    if stacked:
        warn_stacked(stacked)
    return [paths[i] for i in used + unused]


def warn_indexed(paths: list[str]) -> None:
    """Warns that the slices of ``paths`` are indexed, not scanned, so
    their depth order across steps is not known."""
    warnings.warn(
        f"`{checks.caller()}(per_slice=True)`: the layers {paths} are "
        "indexed per step (w[i] in a fori_loop or a Python loop), not "
        "sliced by a scan: their slices are listed together at the first "
        "use, in index order, not interleaved with the other layers of "
        "each step. Scan over the stacked params (lax.scan, nnx.scan, "
        "nn.scan) for the depth order, or write layer_order by hand.",
        UserWarning,
        stacklevel=3,
    )


def warn_stacked(paths: list[str]) -> None:
    """Warns that a trace shows the leaves ``paths`` are stacked (Python's
    default filter shows a message once per call site)."""
    warnings.warn(
        f"`{checks.caller()}`: the layers {paths} are stacked (sliced by a "
        "scan, indexed per step, or batched experts), and each is listed "
        "once, as one layer of one depth. With `layca(axis=None)` each "
        "would be one layer (one norm over every block). For one layer per "
        "stacked slice, pass `axis=infer_stacked_axes(fn, params, ...)` to "
        "`layca` and `rotation_metrics`, and `per_slice=True` here for "
        "per-slice depths.",
        UserWarning,
        stacklevel=3,
    )
