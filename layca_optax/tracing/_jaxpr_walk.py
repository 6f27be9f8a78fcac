"""A jaxpr's walk in program order, recording each param leaf's first use.

:func:`forward_order` traces the model to a jaxpr and reads the layers'
order from this walk; its docstring says what counts as a use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax.extend.core as jcore


NONE: frozenset[int] = frozenset()  # the provenance of computed values

# Primitives whose outputs are the input values moved, copied, selected or
# cast, never combined: a param leaf flowing through them is not yet used.
_MOVES = frozenset({
    "bitcast_convert_type", "broadcast_in_dim", "broadcast_to", "concatenate",
    "convert_element_type", "copy", "device_put", "dynamic_slice",
    "dynamic_update_slice", "gather", "layout_constraint", "mesh_cast",
    "optimization_barrier", "pad", "pvary", "reduce_precision", "reshape",
    "reshard", "rev", "select_n", "sharding_constraint", "slice", "split",
    "squeeze", "stop_gradient", "transpose",
})  # fmt: skip
# Multi-operand moves whose i-th output is the i-th operand.
_ONE_TO_ONE = frozenset({"device_put", "optimization_barrier"})
# Printing a value is not using it.
_IGNORED = frozenset({"debug_callback", "debug_print"})


class Walk:
    """Walks a jaxpr in order, recording each param leaf's first use.

    Each value's provenance is the set of param leaf indices it moves (is a
    moved copy of); values computed by a use have none.
    """

    def __init__(self) -> None:
        self.order: list[int] = []
        self.seen: set[int] = set()
        self.touched: dict[int, int] = {}  # leaf -> rank of its first read

    def touch(self, leaves: frozenset[int]) -> None:
        for i in sorted(leaves):
            self.touched.setdefault(i, len(self.touched))

    def use(self, leaves: frozenset[int]) -> None:
        self.touch(leaves)
        new = sorted(leaves - self.seen, key=lambda i: (self.touched[i], i))
        self.order.extend(new)
        self.seen.update(new)

    def jaxpr(self, jaxpr: Any, prov: Sequence[frozenset[int]]) -> list:
        """Walks an open or closed jaxpr; returns its outputs' provenance."""
        jaxpr = _open(jaxpr)
        env = dict(zip(jaxpr.invars, prov, strict=True))

        def read(v: Any) -> frozenset[int]:
            return NONE if isinstance(v, jcore.Literal) else env.get(v, NONE)

        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, [read(v) for v in eqn.invars])
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn: Any, ins: list[frozenset[int]]) -> list:
        name, n_out = eqn.primitive.name, len(eqn.outvars)
        if not any(ins) or name in _IGNORED:
            return [NONE] * n_out
        if name in _MOVES:
            self.touch(frozenset().union(*ins))
            if name in _ONE_TO_ONE and len(ins) == n_out:
                return ins
            return [frozenset().union(*ins)] * n_out
        if name == "cond":
            return self.cond(eqn, ins)
        if name == "while":
            return self.while_(eqn, ins)
        if name == "scan":
            return self.scan(eqn, ins)
        subs = list(_subjaxprs(eqn.params))
        if len(subs) == 1 and len(_open(subs[0]).invars) == len(ins):
            outs = self.jaxpr(subs[0], ins)  # jit, remat, custom_jvp/vjp, ...
            if len(outs) == n_out:
                return outs
            return [frozenset().union(*outs)] * n_out
        self.use(frozenset().union(*ins))
        return [NONE] * n_out

    def cond(self, eqn: Any, ins: list) -> list:
        self.use(ins[0])  # the branch index
        outs = [NONE] * len(eqn.outvars)
        for branch in eqn.params["branches"]:
            got = self.jaxpr(branch, ins[1:])
            outs = [a | b for a, b in zip(outs, got, strict=True)]
        return outs

    def while_(self, eqn: Any, ins: list) -> list:
        p = eqn.params
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        cconsts, bconsts, carry = ins[:nc], ins[nc : nc + nb], ins[nc + nb :]
        while True:  # until the carry's provenance is a fixed point
            pred = self.jaxpr(p["cond_jaxpr"], cconsts + carry)
            self.use(frozenset().union(*pred))
            out = self.jaxpr(p["body_jaxpr"], bconsts + carry)
            new = [a | b for a, b in zip(carry, out, strict=True)]
            if new == carry:
                return carry
            carry = new

    def scan(self, eqn: Any, ins: list) -> list:
        p = eqn.params
        nc, nk = p["num_consts"], p["num_carry"]
        consts, carry, xs = ins[:nc], ins[nc : nc + nk], ins[nc + nk :]
        while True:  # xs slices keep the provenance of the stacked xs
            out = self.jaxpr(p["jaxpr"], consts + carry + xs)
            new = [a | b for a, b in zip(carry, out[:nk], strict=True)]
            if new == carry:
                return carry + out[nk:]
            carry = new


def _open(jaxpr: Any) -> Any:
    return getattr(jaxpr, "jaxpr", jaxpr)


def _subjaxprs(params: dict[str, Any]) -> Iterator[Any]:
    """The Jaxpr and ClosedJaxpr values of an equation's params."""
    for value in params.values():
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, jcore.Jaxpr | jcore.ClosedJaxpr):
                yield v
