"""Reading a compiled TPU program: HBM traffic, fusions, collectives.

Used by ``tpu_cost.py``; see its docstring for how to read each figure.
"""

from __future__ import annotations

import math
import re
from collections import Counter, namedtuple


COLLECTIVES = "all-reduce all-gather reduce-scatter all-to-all".split()
COLLECTIVES.append("collective-permute")
_NO_WORK = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
# name = shape op(operands), attributes; shapes hold no " word(".
_INST = re.compile(
    r"^\s+(?:ROOT )?%(\S+) = (.*?) ([a-z][\w-]*)\((.*?)\)(?:,|$)"
)
Inst = namedtuple("Inst", "name shape op operands calls")
_LEAF = re.compile(r"(\w+)\[([\d,]*)\](?:\{([^}]*)\})?")
_NAME = re.compile(r"%([\w.-]+)")


def parse_hlo(text: str) -> tuple[dict[str, list[Inst]], str]:
    """The computations of HLO text (name -> instructions), ENTRY's name."""
    comps: dict[str, list[Inst]] = {}
    entry = current = ""
    for line in text.splitlines():
        if line.startswith(("%", "ENTRY %")) and line.endswith("{"):
            current = line.split("%", 1)[1].split(" ", 1)[0]
            entry = current if line.startswith("ENTRY") else entry
            comps[current] = []
        elif current and (m := _INST.match(line)):
            # calls=, to_apply=, branch_computations={...}: defined above.
            calls = [c for c in _NAME.findall(line[m.end() :]) if c in comps]
            comps[current].append(
                Inst(m[1], m[2], m[3], _NAME.findall(m[4]), calls)
            )
    return comps, entry


def _leaves(shape: str) -> list[tuple[int, int, int, int]]:
    """(elements, bytes, tiled bytes, memory space) of each array."""
    out = []
    for dtype, dims_text, layout in _LEAF.findall(shape):
        dims = [int(d) for d in dims_text.split(",") if d]
        bits = re.search(r"\d+", dtype)
        size = 1 if dtype == "pred" else int(bits.group()) // 8 if bits else 0
        minor, _, tiling = layout.partition(":")
        order = [int(i) for i in minor.split(",") if i] or range(len(dims))
        phys = [dims[i] for i in reversed(list(order))]  # major to minor
        if tile := re.search(r"T\(([\d,]+)\)", tiling):
            t = [int(x) for x in tile.group(1).split(",")]
            phys = [1] * (len(t) - len(phys)) + phys
            for k, n in enumerate(t, len(phys) - len(t)):
                phys[k] = -(-phys[k] // n) * n
        space = re.search(r"S\((\d+)\)", tiling)
        n = math.prod(dims)
        space_n = int(space.group(1)) if space else 0
        out.append((n, n * size, math.prod(phys) * size, space_n))
    return out


def _hbm(shape: str) -> int:
    """Tiled bytes of the arrays of ``shape`` that live in HBM (space 0)."""
    return sum(tiled for _, _, tiled, space in _leaves(shape) if space == 0)


def _traffic(comps: dict, name: str, shapes: dict) -> tuple[int, int]:
    """HBM bytes of a computation's top-level ops, and of its branches."""
    main = branch = 0
    for inst in comps[name]:
        op, operands = inst.op, inst.operands
        if op in ("conditional", "while", "call"):
            called = [_traffic(comps, c, shapes) for c in inst.calls]
            if op == "conditional":
                branch += max(sum(c) for c in called)
            else:  # a loop body counts once
                main += sum(c[0] for c in called)
                branch += sum(c[1] for c in called)
        elif op.endswith("-done"):
            main += _hbm(inst.shape)
        elif op == "slice-start":
            if _hbm(shapes[operands[0]]):
                main += _leaves(inst.shape)[-2][2]
        elif op not in _NO_WORK:
            main += sum(_hbm(shapes[o]) for o in set(operands))
            main += 0 if op.endswith("-start") else _hbm(inst.shape)
    return main, branch


def _reached(comps: dict, ops: tuple[str, ...]) -> set[str]:
    """Computations called, directly or not, by the ops named ``ops``."""
    todo = [
        c for v in comps.values() for i in v if i.op in ops for c in i.calls
    ]
    seen: set[str] = set()
    while todo:
        if (c := todo.pop()) not in seen:
            seen.add(c)
            todo += [x for i in comps.get(c, []) for x in i.calls]
    return seen


def collectives(comps: dict, insts: list[Inst]) -> dict:
    """Count, payload bytes, largest leaf of each kind of collective."""
    branches = _reached(comps, ("conditional",))
    done = {i.operands[0]: i for i in insts if i.op.endswith("-done")}
    stats: dict = {"flagged": 0}
    for name, comp in comps.items():
        for inst in comp:
            kind = inst.op.removesuffix("-start")
            if kind not in COLLECTIVES:
                continue
            shape = done.get(inst.name, inst).shape  # -start: -done's
            leaves = _leaves(shape)
            largest = max((n for n, *_ in leaves), default=0)
            s = stats.setdefault(kind, Counter(max_leaf=0))
            s["count"] += 1
            s["bytes"] += sum(b for _, b, _, _ in leaves)
            s["max_leaf"] = max(s["max_leaf"], largest)
            s["in_branches"] += name in branches
            gather = kind != "all-reduce" and largest > 1
            stats["flagged"] += gather or largest > 64
    return stats


def analyse(compiled, param_bytes: int) -> dict:
    """HLO counts, XLA's cost model and the HBM estimate of a program.

    Op counts are of the ENTRY (``entry``), or of it and the other non-fused
    computations (``both``).
    """
    comps, entry = parse_hlo(compiled.as_text())
    insts = [i for v in comps.values() for i in v]
    fused = _reached(comps, ("fusion",))
    ops = Counter(i.op for i in comps[entry])
    both = Counter(i.op for k, v in comps.items() if k not in fused for i in v)
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) else cost) or {}
    hbm, cond = _traffic(comps, entry, {i.name: i.shape for i in insts})
    raw = float(cost.get("optimal_seconds", math.nan))
    return {
        "fusions_entry": ops["fusion"],
        "fusions_other": both["fusion"] - ops["fusion"],
        "entry_ops": sum(n for op, n in ops.items() if op not in _NO_WORK),
        "conditionals": both["conditional"],
        "copies_entry": ops["copy"],
        "copies_other": both["copy"] - ops["copy"],
        "copy_starts": both["copy-start"],
        "xla_bytes": float(cost.get("bytes accessed", math.nan)),
        "optimal_seconds_raw": raw,
        "optimal_seconds": raw + ops["custom-call"] if raw < 0 else raw,
        "hbm_bytes": hbm,
        "cond_hbm_bytes": cond,
        "hbm_per_param": hbm / param_bytes,
        "collectives": collectives(comps, insts),
    }
