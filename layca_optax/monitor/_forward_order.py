"""The layers' forward order, found by tracing the model to a jaxpr (read
by :mod:`._jaxpr_walk`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from layca_optax import _checks as checks
from layca_optax._masks import leaf_paths, resolve_mask
from layca_optax.monitor._jaxpr_walk import NONE, Walk


# Arguments of `fn` traced as abstract values; other leaves stay static.
_ARRAYS = (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)


@checks.public
def forward_order(
    fn: Callable[..., Any],
    params: Any,
    *args: Any,
    mask: optax.MaskOrFn = None,
    strict: bool = False,
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

    **Stacked layers.** A leaf with a stacked layer axis (``(L, d, d)``
    consumed by ``lax.scan``, or indexed in a loop) is one leaf, hence one
    entry, placed at its first use: Eq. 1 gives the whole stack one depth.
    Per-slice depths would need ``layca(axis=...)`` (one norm per stacked
    layer) and per-slice multipliers; ``forward_order`` does not produce
    them. Stacked biases ``(L, d)`` have ``ndim == 2``: under the default
    mask they are layers, so pass a ``mask`` (to both functions).

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
    if not callable(fn):
        raise ValueError(f"{checks.arg('fn')} must be callable, got {fn!r}.")
    checks.check_bool(strict, "strict")
    flags = jax.tree.leaves(resolve_mask(mask, params))
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dynamic = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _ARRAYS)]

    def call(p, traced):
        full = list(leaves)
        for i, leaf in zip(dynamic, traced, strict=True):
            full[i] = leaf
        a, k = jax.tree.unflatten(treedef, full)
        return fn(p, *a, **k)

    closed = jax.make_jaxpr(call)(params, [leaves[i] for i in dynamic])
    n = len(flags)
    walk = Walk()
    prov = [frozenset({i}) for i in range(n)]
    walk.jaxpr(closed, prov + [NONE] * (len(closed.jaxpr.invars) - n))
    paths = leaf_paths(params)
    used = [i for i in walk.order if flags[i]]
    unused = [i for i in range(n) if flags[i] and i not in walk.seen]
    if strict and unused:
        raise ValueError(
            f"`{checks.caller()}(strict=True)`: `fn` never uses the layers "
            f"{[paths[i] for i in unused]}."
        )
    return [paths[i] for i in used + unused]
