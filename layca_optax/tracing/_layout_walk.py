"""Which axes of each param leaf are stacked, and which ones its first use
contracts: the walk of :mod:`._jaxpr_walk`, with each value's axes mapped
back to the leaf's.

A value that *moves* one leaf (see :func:`layca_optax.forward_order`) also
carries a :class:`View`: for each of its axes, the leaf axes it spans, and
the leaf axes already indexed away. ``transpose``, ``reshape``, ``squeeze``,
``broadcast_in_dim``, casts, slices and sharding constraints map the axes;
``gather``, ``concatenate`` and ``select_n`` lose them (the leaf is still
tracked, its layout is then unknown). A ``scan`` over a moved leaf slices
its leading axis: that leaf axis is *stacked* (one layer per step), and the
scan is recorded as a :class:`Group` for the per-slice depth order. An axis
of size 1 dropped by ``squeeze`` or ``reshape`` after a slice (``w[i]``)
is stacked too. At a leaf's first use, a ``dot_general`` gives its
contracting axes (the fan-in) and its batch axes (stacked: experts under
``vmap`` or an ``einsum`` over experts); a ``conv_general_dilated`` kernel
contracts its input-feature and spatial axes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from layca_optax.tracing._jaxpr_walk import NONE, Walk


Axes = frozenset[int]


@dataclasses.dataclass(frozen=True)
class View:
    """A value's axes as axes of one param leaf."""

    leaf: int
    axes: tuple[Axes, ...]  # per value axis: the leaf axes it spans
    sliced: Axes = frozenset()  # leaf axes indexed away (scan, w[i])


class Prov(frozenset):
    """A provenance (the leaves a value moves) that may carry a view.

    Set operations return plain frozensets: a value combined from several
    values has no view.
    """

    view: View | None = None

    @classmethod
    def of(cls, leaves: frozenset[int], view: View | None) -> frozenset[int]:
        out = cls(leaves)
        out.view = view
        return out


@dataclasses.dataclass(eq=False)
class Group:
    """A ``scan`` that slices stacked leaves: one step per slice."""

    length: int
    reverse: bool
    axis_of: dict[int, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Use:
    """A leaf's first use: the leaf axes it stacks and contracts."""

    stacked: Axes  # scanned, indexed or batch axes
    contracting: Axes | None  # None: not a contraction, or layout lost
    groups: tuple[Group, ...]  # the scans around the use, outermost first
    indexed: Axes = frozenset()  # stacked by an index, not by a scan


_SAME_AXES = frozenset({
    "convert_element_type", "copy", "copy_p", "reduce_precision",
    "sharding_constraint", "pvary", "stop_gradient", "layout_constraint",
    "mesh_cast", "reshard", "slice", "dynamic_slice", "rev", "pad", "split",
})  # fmt: skip
_ONE_TO_ONE = frozenset({"device_put", "optimization_barrier"})
# Every move whose output keeps a view (its axes mapped to the leaf's).
_MAPPED = _SAME_AXES | _ONE_TO_ONE | {
    "transpose", "squeeze", "reshape", "broadcast_in_dim"
}  # fmt: skip


def _view(value: Any) -> View | None:
    return getattr(value, "view", None)


def reshape_axes(
    in_shape: Sequence[int], out_shape: Sequence[int], axes: Sequence[Axes]
) -> tuple[tuple[Axes, ...], list[int]]:
    """The leaf axes of each output axis of a reshape (merged axes span the
    union of theirs, split axes each span all of them), and the input
    axes of size 1 that it drops."""
    ins = [(k, n) for k, n in enumerate(in_shape) if n != 1]
    outs = [(k, n) for k, n in enumerate(out_shape) if n != 1]
    result: list[Axes] = [frozenset()] * len(out_shape)
    a = b = 0
    while a < len(ins) and b < len(outs):
        group_in, group_out = [ins[a][0]], [outs[b][0]]
        size_in, size_out = ins[a][1], outs[b][1]
        a, b = a + 1, b + 1
        while size_in != size_out and a <= len(ins) and b <= len(outs):
            if size_in < size_out and a < len(ins):
                group_in.append(ins[a][0])
                size_in, a = size_in * ins[a][1], a + 1
            elif b < len(outs):
                group_out.append(outs[b][0])
                size_out, b = size_out * outs[b][1], b + 1
            else:
                break
        union = frozenset().union(*(axes[k] for k in group_in))
        for k in group_out:
            result[k] = union
    dropped = [k for k, n in enumerate(in_shape) if n == 1]
    return tuple(result), dropped


class LayoutWalk(Walk):
    """:class:`Walk` that also records each leaf's :class:`Use`."""

    def __init__(self, shapes: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes = list(shapes)
        self.uses: dict[int, Use] = {}
        self.stack: list[Group] = []

    def initial(self) -> list[frozenset[int]]:
        """The provenance of each leaf, with its identity view."""
        return [
            Prov.of(frozenset({i}), View(i, identity_axes(shape)))
            for i, shape in enumerate(self.shapes)
        ]

    def _dropping(self, view: View, dropped: Sequence[int]) -> Axes:
        """Leaf axes of size > 1 that the dropped size-1 axes had sliced."""
        shape = self.shapes[view.leaf]
        lost = frozenset().union(*(view.axes[k] for k in dropped))
        return view.sliced | {a for a in lost if shape[a] > 1}

    def _moved(self, eqn: Any, ins: list, outs: list) -> list:
        name, p = eqn.primitive.name, eqn.params
        if name in _ONE_TO_ONE and len(ins) == len(outs):
            return [
                Prov.of(o, _view(i)) for i, o in zip(ins, outs, strict=True)
            ]
        view = _view(ins[0]) if ins else None
        if view is None or any(_view(v) for v in ins[1:]):
            return outs
        shape_in = eqn.invars[0].aval.shape
        new: View | None = None
        if name in _SAME_AXES:
            new = view
        elif name == "transpose":
            axes = tuple(view.axes[k] for k in p["permutation"])
            new = View(view.leaf, axes, view.sliced)
        elif name == "squeeze":
            dims = [d % len(shape_in) for d in p["dimensions"]]
            axes = tuple(a for k, a in enumerate(view.axes) if k not in dims)
            new = View(view.leaf, axes, self._dropping(view, dims))
        elif name == "reshape" and p.get("dimensions") is None:
            shape_out = eqn.outvars[0].aval.shape
            axes, dropped = reshape_axes(shape_in, shape_out, view.axes)
            new = View(view.leaf, axes, self._dropping(view, dropped))
        elif name == "broadcast_in_dim":
            axes_out: list[Axes] = [frozenset()] * len(p["shape"])
            for k, d in enumerate(p["broadcast_dimensions"]):
                axes_out[d] = view.axes[k]
            new = View(view.leaf, tuple(axes_out), view.sliced)
        return [Prov.of(o, new) for o in outs]

    def _use(self, eqn: Any, ins: list, leaf: int) -> Use:
        """The first use of ``leaf`` by ``eqn``."""
        groups = tuple(self.stack)
        k, view = next(
            ((k, _view(v)) for k, v in enumerate(ins) if leaf in v),
            (0, None),
        )
        if view is None or view.leaf != leaf:
            return Use(frozenset(), None, groups)
        name, p = eqn.primitive.name, eqn.params
        contract: Sequence[int] | None = None
        batch: Sequence[int] = ()
        if name == "dot_general" and k < 2:
            (lc, rc), (lb, rb) = p["dimension_numbers"]
            contract, batch = (lc, lb) if k == 0 else (rc, rb)
        elif name == "conv_general_dilated" and k == 1:
            contract = tuple(p["dimension_numbers"].rhs_spec[1:])
        stacked = view.sliced.union(*(view.axes[a] for a in batch))
        scanned = {g.axis_of[leaf] for g in groups if leaf in g.axis_of}
        indexed = view.sliced - scanned
        if contract is None:
            return Use(stacked, None, groups, indexed)
        spans = frozenset().union(*(view.axes[a] for a in contract))
        return Use(stacked, spans - stacked, groups, indexed)

    def eqn(self, eqn: Any, ins: list[frozenset[int]]) -> list:
        before = set(self.seen)
        outs = super().eqn(eqn, ins)
        if eqn.primitive.name in _MAPPED:
            outs = self._moved(eqn, ins, outs)
        for leaf in sorted(self.seen - before):
            if leaf not in self.uses:
                self.uses[leaf] = self._use(eqn, ins, leaf)
        return outs

    def scan(self, eqn: Any, ins: list) -> list:
        p = eqn.params
        start = p["num_consts"] + p["num_carry"]
        group = Group(int(p["length"]), bool(p["reverse"]))
        xs = []
        for value in ins[start:]:
            view = _view(value)
            if view is None or not view.axes:
                xs.append(value)
                continue
            if len(view.axes[0]) == 1:
                group.axis_of.setdefault(view.leaf, next(iter(view.axes[0])))
            inner = View(view.leaf, view.axes[1:], view.sliced | view.axes[0])
            xs.append(Prov.of(value, inner))
        self.stack.append(group)
        try:
            return super().scan(eqn, ins[:start] + xs)
        finally:
            self.stack.pop()


def identity_axes(shape: Sequence[int]) -> tuple[Axes, ...]:
    """Each axis of a leaf spans itself."""
    return tuple(frozenset({a}) for a in range(len(shape)))


__all__ = ["NONE", "Group", "LayoutWalk", "Use", "View"]
