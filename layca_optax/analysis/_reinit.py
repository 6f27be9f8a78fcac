"""Re-initialization robustness: which layers can be reset after training."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _checks as checks
from layca_optax._masks import (
    KeyPathLike,
    leaf_paths,
    path_str,
    resolve_mask,
    shape_mismatch,
)
from layca_optax.analysis._reinit_result import ReinitResult


InitFn = Callable[[jax.Array, str, tuple[int, ...], Any], jax.Array]
"""``init_fn(key, path, shape, dtype) -> array``: one fresh draw of a layer."""

_DRAWS = "re-randomized draws per layer"


def _is_path_list(layers: Any) -> bool:
    if not isinstance(layers, list | tuple) or not layers:
        return False
    tu = jax.tree_util
    keys = (tu.DictKey, tu.SequenceKey, tu.GetAttrKey, tu.FlattenedIndexKey)
    return all(
        isinstance(x, str)
        or (isinstance(x, tuple) and all(isinstance(k, keys) for k in x))
        for x in layers
    )


def _select(layers: Any, params: Any, paths: list[str]) -> list[int]:
    """Leaf indices of the probed layers, in the order asked for."""
    if isinstance(layers, str):
        layers = [layers]
    if _is_path_list(layers):
        wanted = [path_str(p) for p in layers]
        for p in wanted:
            if p not in paths:
                close = difflib.get_close_matches(p, paths, n=3)
                raise ValueError(
                    f"{checks.arg('layers')}: no leaf {p!r} in `params` "
                    f"(closest: {close}; {len(paths)} leaves in all)."
                )
        return [paths.index(p) for p in dict.fromkeys(wanted)]
    flags = jax.tree.leaves(resolve_mask(layers, params, "layers"))
    chosen = [i for i, f in enumerate(flags) if f]
    if not chosen:
        raise ValueError(
            f"`{checks.caller()}(layers={layers!r})` selects no leaf."
        )
    return chosen


def _check_checkpoints(params: Any, checkpoints: Any) -> list:
    """The checkpoints as a list, or ``ValueError``: none, or one whose
    structure or shapes differ from the params'."""
    checkpoints = list(checkpoints)
    if not checkpoints:
        raise ValueError(
            f"{checks.arg('checkpoints')} is empty; pass at least the "
            "initial parameters."
        )
    treedef: Any
    leaves, treedef = jax.tree.flatten(params)
    names = leaf_paths(params)
    for n, ckpt in enumerate(checkpoints):
        got, got_def = jax.tree_util.tree_flatten_with_path(ckpt)
        if got_def != treedef:
            got_names = leaf_paths(ckpt)
            missing = [p for p in names if p not in got_names]
            extra = [p for p in got_names if p not in names]
            raise ValueError(
                f"{checks.arg('checkpoints')}: checkpoint {n} does not have "
                f"the structure of `params` (missing {missing}, extra "
                f"{extra}): {got_def} vs {treedef}."
            )
        bad = shape_mismatch(got, leaves)
        if bad:
            raise ValueError(
                f"{checks.arg('checkpoints')}: checkpoint {n}, leaf "
                f"{bad[0]!r} has shape {bad[1]}, `params` has {bad[2]}."
            )
    return checkpoints


def _check_args(params, checkpoints, key, num_draws, batch, tolerance, labels):
    """The checkpoints and their labels, or ``ValueError`` naming the bad
    argument of :func:`reinit_robustness`."""
    checkpoints = _check_checkpoints(params, checkpoints)
    if batch not in ("vmap", "map"):
        raise ValueError(
            f"{checks.arg('batch')} must be 'vmap' or 'map', got {batch!r}."
        )
    checks.check_count(num_draws, "num_draws", what=_DRAWS)
    checks.check_key(key)
    checks.check_scalar(tolerance, "tolerance", low=0.0)
    if labels is None:
        labels = ["init"] + [str(n) for n in range(1, len(checkpoints))]
    labels = list(labels)
    if len(labels) != len(checkpoints):
        raise ValueError(
            f"{checks.arg('checkpoint_labels')} has {len(labels)} labels "
            f"for {len(checkpoints)} checkpoints."
        )
    return checkpoints, tuple(labels)


def _draws(key, index, path, init, init_fn, num_draws) -> jax.Array:
    """``[num_draws, *shape]`` fresh values for leaf number ``index``."""
    key = jax.random.fold_in(key, index)
    init = jnp.asarray(init)
    if init_fn is None:
        # One flat draw: much faster to compile than a rank-3 one.
        x = jnp.asarray(init, jnp.promote_types(init.dtype, jnp.float32))
        z = jax.random.normal(key, (num_draws * x.size,), x.dtype)
        out = jnp.mean(x) + jnp.std(x) * z.reshape((num_draws, *x.shape))
    else:
        draw = lambda k: init_fn(k, path, init.shape, init.dtype)
        out = jax.vmap(draw)(jax.random.split(key, num_draws))
    if out.shape[1:] != init.shape:
        raise ValueError(
            f"{checks.arg('init_fn')} returned shape {out.shape[1:]} for "
            f"leaf {path!r} of shape {init.shape}."
        )
    return out.astype(init.dtype)


@checks.public
def rerandom_draws(
    init_params: optax.Params,
    *,
    key: jax.Array,
    init_fn: InitFn | None = None,
    layers: optax.MaskOrFn | Sequence[KeyPathLike] = None,
    num_draws: int = 1,
) -> dict[str, jax.Array]:
    """The fresh layer values that :func:`reinit_robustness` evaluates.

    With the same ``key``, ``init_fn`` and ``num_draws`` and ``init_params``
    equal to its first checkpoint, these are the draws behind its
    ``rerandom`` column. A layer's draws depend only on ``key`` and the
    layer's leaf index, not on which other layers are probed.

    Args:
      init_params: the parameters at initialization.
      key: a JAX PRNG key.
      init_fn: ``init_fn(key, path, shape, dtype) -> array``; default: a
        Gaussian with the mean and standard deviation of the layer's initial
        value (see :func:`reinit_robustness`).
      layers: which leaves (see :func:`reinit_robustness`).
      num_draws: draws per layer.

    Returns:
      ``{path: array of shape [num_draws, *layer_shape]}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import layca_optax
      >>> init = {"w": jax.random.normal(jax.random.key(0), (64, 64))}
      >>> d = layca_optax.analysis.rerandom_draws(init, key=jax.random.key(1))
      >>> d["w"].shape, round(float(jnp.std(d["w"])), 1)
      ((1, 64, 64), 1.0)

    References:
      Zhang, Bengio & Singer, `Are All Layers Created Equal?
      <https://arxiv.org/abs/1902.01996>`_, JMLR 2022 (re-randomization).
    """
    checks.check_key(key)
    checks.check_count(num_draws, "num_draws", what=_DRAWS)
    leaves, paths = jax.tree.leaves(init_params), leaf_paths(init_params)
    chosen = _select(layers, init_params, paths)
    return {
        paths[i]: _draws(key, i, paths[i], leaves[i], init_fn, num_draws)
        for i in chosen
    }


@checks.public
def reinit_robustness(
    eval_fn: Callable[[Any], jax.typing.ArrayLike],
    params: optax.Params,
    checkpoints: Sequence[optax.Params],
    *,
    key: jax.Array,
    init_fn: InitFn | None = None,
    layers: optax.MaskOrFn | Sequence[KeyPathLike] = None,
    num_draws: int = 1,
    batch: Literal["vmap", "map"] = "vmap",
    tolerance: float = 0.01,
    higher_is_better: bool = True,
    checkpoint_labels: Sequence[str] | None = None,
) -> ReinitResult:
    """Each layer's re-initialization and re-randomization robustness.

    For every probed layer, and with every other leaf left at its trained
    value: ``eval_fn`` with that layer *reset* to its value at each
    checkpoint (re-initialization), and with it replaced by fresh draws
    from its initializer's distribution (re-randomization).

    Default re-randomization (``init_fn=None``): i.i.d. Gaussian entries
    with the mean and standard deviation of the layer's value at the first
    checkpoint. The usual initializers (Glorot, He, LeCun; normal,
    truncated or uniform) are zero-mean i.i.d. with a variance fixed by the
    fan, and the empirical standard deviation of ``n`` entries estimates it
    within about ``1 / sqrt(2 n)`` (1% for a 64 x 64 kernel); the shape of
    the distribution (uniform vs. normal) is not recovered. For an exact
    match pass ``init_fn``, e.g.
    ``lambda k, path, shape, dtype: he_normal()(k, shape, dtype)``.

    Batching: one jit; per layer, one ``jax.vmap`` over the checkpoints and
    one over the draws (``batch="vmap"``: fastest, but ``eval_fn``'s
    activations are held for all checkpoints at once), or ``jax.lax.map``
    (``batch="map"``: one evaluation at a time, the memory of a single
    ``eval_fn`` call). Only the probed layer is stacked, never the whole
    tree. A checkpoint whose layer equals the trained one bit for bit gets
    ``baseline`` itself: the parameters are then unmodified, and batching
    may otherwise change the metric's last bits.

    Args:
      eval_fn: ``eval_fn(params) -> scalar`` (test accuracy, loss...);
        jit-able and deterministic.
      params: the trained parameters.
      checkpoints: parameter trees with the structure of ``params``, the
        initialization first, then intermediate ones (the final one may be
        included: its column then equals ``baseline``).
      key: a JAX PRNG key for the re-randomization.
      init_fn: ``init_fn(key, path, shape, dtype) -> array``, one fresh draw
        of the layer at ``path``; default: see above.
      layers: which leaves to probe: an ``optax.MaskOrFn`` (default
        :func:`default_layer_mask`: kernels) or a list of paths
        (``"Dense_0/kernel"`` or key paths); rows follow this list's order,
        so pass it input side first (a mask gives pytree leaf order).
      num_draws: re-randomized draws per layer, at least 1.
      batch: ``"vmap"`` or ``"map"``, see above.
      tolerance: the largest drop of the metric at which a layer still
        counts as robust (see :meth:`ReinitResult.classify`).
      higher_is_better: True for accuracies, False for losses and errors.
      checkpoint_labels: a label per checkpoint (e.g. epochs); default
        ``"init", "1", "2", ...``.

    Returns:
      A :class:`ReinitResult`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import layca_optax
      >>> x = jax.random.normal(jax.random.key(0), (32, 4))
      >>> y = x @ jnp.ones((4, 2))
      >>> init = {"w": jax.random.normal(jax.random.key(1), (4, 2))}
      >>> params = {"w": jnp.ones((4, 2))}
      >>> loss = lambda p: jnp.mean((x @ p["w"] - y) ** 2)
      >>> r = layca_optax.analysis.reinit_robustness(
      ...     loss, params, [init, params], key=jax.random.key(2),
      ...     num_draws=4, higher_is_better=False)
      >>> r.reinit.shape, r.rerandom.shape, r.baseline, float(r.reinit[0, 1])
      ((1, 2), (1, 4), 0.0, 0.0)
      >>> r.classify()
      {'w': 'critical'}

    References:
      Zhang, Bengio & Singer, `Are All Layers Created Equal?
      <https://arxiv.org/abs/1902.01996>`_, JMLR 2022, Sections 2-3.
    """
    checkpoints, labels = _check_args(
        params, checkpoints, key, num_draws, batch, tolerance, checkpoint_labels
    )
    paths = leaf_paths(params)
    chosen = _select(layers, params, paths)
    out = jax.eval_shape(eval_fn, params)
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"{checks.arg('eval_fn')} must return a scalar, got {out!r}."
        )
    leaves, treedef = jax.tree.flatten(params)
    ckpts = [jax.tree.leaves(c) for c in checkpoints]
    stacks = [
        jnp.stack(
            [jnp.asarray(c[i], jnp.result_type(leaves[i])) for c in ckpts]
        )
        for i in chosen
    ]
    draw = functools.partial(_draws, init_fn=init_fn, num_draws=num_draws)
    run = functools.partial(
        _evaluate, eval_fn, treedef, chosen, paths, draw, batch
    )
    base, reinit, rerandom = jax.jit(run)(leaves, stacks, key)
    return ReinitResult(
        paths=tuple(paths[i] for i in chosen),
        checkpoint_labels=labels,
        baseline=float(base),
        reinit=np.asarray(reinit),
        rerandom=np.asarray(rerandom),
        tolerance=float(tolerance),
        higher_is_better=higher_is_better,
    )


def _evaluate(
    eval_fn, treedef, chosen, paths, draw, batch, leaves, stacks, key
):
    """The baseline, and per chosen layer the metric with it reset to each
    checkpoint (``stacks``) and replaced by each of its fresh values
    (``draw(key, index, path, init)``), traced under one ``jit``."""

    def metric(index: int, value: jax.Array) -> jax.Array:
        new = leaves[:index] + [value] + leaves[index + 1 :]
        return jnp.asarray(eval_fn(jax.tree.unflatten(treedef, new)))

    def over(f: Callable, xs: jax.Array) -> jax.Array:
        return jax.vmap(f)(xs) if batch == "vmap" else jax.lax.map(f, xs)

    base = jnp.asarray(eval_fn(jax.tree.unflatten(treedef, leaves)))
    reinit, rerandom = [], []
    for i, stack in zip(chosen, stacks, strict=True):
        f = functools.partial(metric, i)
        # Bit-identical to the trained layer: the params are unmodified.
        same = stack == jnp.asarray(leaves[i])[None]
        same = jnp.all(same, axis=tuple(range(1, stack.ndim)))
        reinit.append(jnp.where(same, base, over(f, stack)))
        rerandom.append(over(f, draw(key, i, paths[i], stack[0])))
    return base, jnp.stack(reinit), jnp.stack(rerandom)
