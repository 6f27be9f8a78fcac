"""Which axes a layer's norm reduces over: the ``Axis`` rules, per leaf."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import numpy as np

from layca_optax import _checks as checks
from layca_optax._masks import path_str


Axis: TypeAlias = None | int | Sequence[int] | Callable[..., Any] | Any
"""Axes a layer's norm reduces over, for every leaf or per leaf.

``None`` reduces over the whole leaf (one norm per leaf, as in the paper). An
int or a tuple of ints reduces over those axes only, so that each slice along
the remaining axes is a layer of its own: ``axis=0`` on a ``(fan_in, fan_out)``
Dense kernel gives one norm per output unit (as Nero does); ``axis=(-2, -1)``
on a stacked ``(num_layers, fan_in, fan_out)`` kernel (a scanned model) or an
``(num_layers, experts, fan_in, fan_out)`` expert tensor gives one norm per
stacked layer (and expert). The same value applies to every leaf, so its axes
must exist in each. Counting from the end fits 3-D stacks only: on a stacked
attention kernel ``(L, d, H, hd)`` it gives one norm per (layer, input row).
For transformers, :func:`stacked_axes` (one layer per leading slice,
whatever the rank) or :func:`infer_stacked_axes` (read from the model).

Per leaf:

- a callable of one argument receives each leaf and returns one of the above,
  e.g. :func:`layca_optax.fan_in_axes`;
- a callable of two arguments receives each leaf's path (``"h/mlp/kernel"``,
  as :func:`layca_optax.path_str` writes it) and the leaf, so that a 4-D expert
  tensor and a 4-D conv kernel can be told apart;
- a pytree that is a prefix of the params (e.g. a dict for Flax Linen
  params) whose leaves are any of the above (``None`` included); where
  its structure differs from the params' (a dict against a Flax NNX
  ``State``), each leaf takes the entry whose path is the longest prefix
  of its own.
"""


def _is_axes(value: Any) -> bool:
    """An int or a tuple/list of ints (bools excluded)."""
    items = (value,) if isinstance(value, int) else value
    if not isinstance(items, tuple | list):
        return False
    return all(isinstance(a, int) and not isinstance(a, bool) for a in items)


def _is_spec(value: Any) -> bool:
    """One leaf's axis rule: None, an int, a tuple of ints or a callable."""
    return value is None or callable(value) or _is_axes(value)


def _takes_path(fn: Callable[..., Any]) -> bool:
    """Whether the axis callable ``fn`` takes ``(path, leaf)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )
    required = [
        p for p in params if p.kind in positional and p.default is p.empty
    ]
    return len(required) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


@checks.public
def fan_in_axes(leaf: Any) -> tuple[int, ...]:
    """Axis rule giving one norm per output unit: reduce all but the last axis.

    Flax kernels store the output features last (``(fan_in, fan_out)`` for
    ``Dense``, ``(*window, in_features, out_features)`` for ``Conv``), so this
    treats each output unit (neuron, filter) as a layer of its own.

    The rule reads only the leaf's rank. It is right where the contraction
    is over every axis but the last (``Dense``, ``Conv``, an attention
    output kernel ``(H, hd, d)``), and wrong where a kernel has several
    output axes or stacked ones: on an attention query kernel
    ``(d, H, hd)`` (``DenseGeneral`` with ``features=(H, hd)``) it reduces
    over ``(d, H)`` and so mixes the heads; on a scanned stack
    ``(L, d, f)`` it mixes the blocks. For those, use
    :func:`infer_fan_in_axes`, which reads the contracted axes from the
    model.

    Args:
      leaf: an array (only its ``ndim`` is used).

    Returns:
      The tuple ``(0, ..., ndim - 2)``; ``()`` for scalars and vectors, so
      each entry of a vector is its own slice.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> layca_optax.fan_in_axes(jnp.zeros((3, 3, 8, 16)))
      (0, 1, 2)
      >>> tx = layca_optax.layca(0.1, axis=layca_optax.fan_in_axes)

    References:
      Liu et al., `Learning by turning: neural architecture aware
      optimisation <https://arxiv.org/abs/2102.07227>`_, 2021 (per-neuron
      norms, as ``axis=fan_in_axes`` gives); Carbonnelle & De
      Vleeschouwer, `Layer rotation: a surprisingly powerful indicator of
      generalization in deep networks? <https://arxiv.org/abs/1806.01603>`_,
      2019 (per-layer norms, the default).
    """
    return tuple(range(max(np.ndim(leaf) - 1, 0)))


class _StackedAxes:
    """The rule :func:`stacked_axes` returns: a callable of (path, leaf)."""

    def __init__(self, num_stacked: int):
        self.num_stacked = num_stacked

    def __repr__(self) -> str:
        return f"stacked_axes({self.num_stacked})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _StackedAxes)
            and other.num_stacked == self.num_stacked
        )

    def __hash__(self) -> int:
        return hash(("stacked_axes", self.num_stacked))

    def __call__(self, path: str, leaf: Any) -> tuple[int, ...]:
        ndim = np.ndim(leaf)
        if ndim <= self.num_stacked:
            raise ValueError(
                f"`stacked_axes(num_stacked={self.num_stacked})` got the "
                f"leaf {path!r} of shape {np.shape(leaf)}: it has no axes "
                "left to reduce over after the stacked ones. Apply it to "
                "the stacked subtree only (a prefix tree such as "
                '{"blocks": stacked_axes(1), "head": None}) or use '
                "infer_stacked_axes(fn, params, *args)."
            )
        return tuple(range(self.num_stacked, ndim))


@checks.public
def stacked_axes(num_stacked: int = 1) -> Callable[[str, Any], Any]:
    """Axis rule for stacked layers: one layer per slice of the leading axes.

    Reduces over every axis but the leading ``num_stacked`` ones, whatever
    the kernel's rank: on an ``nnx.scan`` / ``nn.scan`` stack, the query
    kernel ``(L, d, H, hd)``, the output kernel ``(L, H, hd, d)`` and the
    MLP kernel ``(L, d, 4d)`` each give ``L`` layers (one per block), and
    ``num_stacked=2`` on stacked experts ``(L, E, d, f)`` gives ``L * E``
    layers. (``axis=(-2, -1)`` is right only for 3-D stacks: on a 4-D
    attention kernel it gives one norm per (block, input row).)

    The rule applies to every leaf it is given, so a leaf that is not
    stacked (the embedding, the head) must get another rule: a prefix
    tree ``{"blocks": stacked_axes(1), "head": None}``, or the rule that
    :func:`infer_stacked_axes` reads from the model, which needs no names.
    A leaf with ``num_stacked`` axes or fewer raises ``ValueError``.

    Args:
      num_stacked: how many leading axes index stacked layers, at least 1.

    Returns:
      An :data:`Axis` rule, a callable of a leaf's path and the leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> from layca_optax._axes import axes_per_leaf
      >>> params = {"blocks": {"query": jnp.zeros((3, 32, 4, 8)),
      ...                      "experts": jnp.zeros((3, 2, 32, 64))},
      ...           "head": jnp.zeros((32, 10))}
      >>> axis = {"blocks": layca_optax.stacked_axes(1), "head": None}
      >>> axes_per_leaf(params, axis)
      [(1, 2, 3), (1, 2, 3), (0, 1)]
      >>> tx = layca_optax.layca(0.1, axis=axis)
    """
    checks.check_count(num_stacked, "num_stacked")
    return _StackedAxes(num_stacked)


def resolve_axes(x: jax.Array, axis: Axis, path: Any = ()) -> tuple[int, ...]:
    """The non-negative axes of ``x`` (at ``path``) that ``axis`` reduces
    over; ``axis`` is one leaf's rule (see :func:`axes_per_leaf` for trees).
    """
    if callable(axis):
        if _takes_path(axis):
            axis = axis(path_str(path), x)
        else:
            axis = axis(x)
        if not _is_spec(axis) or callable(axis):
            raise ValueError(
                f"{checks.arg('axis')}: the axis callable returned {axis!r} "
                f"for the leaf {_where(path)}of shape {np.shape(x)}; it must "
                "return None, an int or a tuple of ints."
            )
    ndim = np.ndim(x)  # also for jax.ShapeDtypeStruct, on any jax version
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{checks.arg('axis')} got axis {a} for the leaf "
                f"{_where(path)}of shape {np.shape(x)}; it must lie in "
                f"[-{ndim}, {ndim}). A per-leaf rule (a callable of path and "
                "leaf, or a prefix tree) fits leaves of different ranks."
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(
            f"{checks.arg('axis')} names an axis twice, {axes!r}, for the "
            f"leaf {_where(path)}of shape {np.shape(x)}; each axis once."
        )
    return tuple(sorted(out))


def _where(path: Any) -> str:
    if not path:
        return ""
    return f"{path_str(path)!r} "


class _Rule:
    """One leaf's axis rule, wrapped so that a pytree map keeps it whole."""

    def __init__(self, spec: Any):
        self.spec = spec


def axis_rules(tree: Any, axis: Axis) -> list[Any]:
    """The axis rule of each leaf of ``tree``, in leaf order: ``axis`` for
    every leaf, or its entries broadcast when it is a prefix tree (matched
    by structure, else by path, so that a dict prefix fits a Flax NNX
    ``State`` and the pure dict of one)."""
    if _is_spec(axis):
        return [axis] * len(jax.tree.leaves(tree))
    try:
        rules = jax.tree.map(
            lambda spec, sub: jax.tree.map(lambda _: _Rule(spec), sub),
            axis,
            tree,
            is_leaf=_is_spec,
        )
    except ValueError as err:
        by_path = _rules_by_path(tree, axis)
        if by_path is not None:
            return by_path
        raise ValueError(
            f"{checks.arg('axis')}: a tree of axes must have the structure "
            f"of the params or a prefix of it (or name each leaf by a "
            f"prefix of its path), got {axis!r}: {err}"
        ) from None
    return [r.spec for r in jax.tree.leaves(rules)]


def _rules_by_path(tree: Any, axis: Any) -> list[Any] | None:
    """Each leaf's rule from the entry of ``axis`` whose path (as
    :func:`path_str` writes it) is the longest prefix of the leaf's path;
    None if some leaf has none."""
    specs = jax.tree_util.tree_flatten_with_path(axis, is_leaf=_is_spec)[0]
    table = {path_str(p): spec for p, spec in specs}
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = path_str(path)
        while name not in table:
            if not name:
                return None
            name = name.rsplit("/", 1)[0] if "/" in name else ""
        out.append(table[name])
    return out


def axes_per_leaf(tree: Any, axis: Axis) -> list[tuple[int, ...]]:
    """The reduction axes of each leaf of ``tree`` (leaf order) for
    ``axis``: one rule for every leaf, a callable of the leaf or of its path
    and the leaf, or a prefix tree of those (see :data:`Axis`)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    rules = axis_rules(tree, axis)
    return [
        resolve_axes(x, rule, path)
        for (path, x), rule in zip(flat, rules, strict=True)
    ]


def check_axis(axis: Axis) -> None:
    """Raises ``ValueError`` unless ``axis`` is a valid :data:`Axis`."""
    if isinstance(axis, jax.Array | np.ndarray | np.generic):
        raise ValueError(
            f"{checks.arg('axis')} must be None, an int, a tuple of ints, a "
            f"callable or a prefix tree of these, got the array {axis!r}. "
            "Under optax.inject_hyperparams, pass it as static: "
            f"optax.inject_hyperparams({checks.caller()}, "
            "static_args=('axis',))."
        )
    if _is_spec(axis):
        return
    bad = [
        spec
        for spec in jax.tree.leaves(axis, is_leaf=_is_spec)
        if not _is_spec(spec)
    ]
    if bad or isinstance(axis, str | bytes | float | bool):
        raise ValueError(
            f"{checks.arg('axis')} must be None, an int, a tuple of ints, a "
            "callable of the leaf (or of its path and the leaf), or a prefix "
            f"tree of the params with these at its leaves, got {axis!r}."
        )
