"""Deviceless TPU cost of one optimizer step, read from the compiled program.

Compiles ``update`` + ``apply_updates`` (params and state donated) with
libtpu's compile-only devices, no TPU needed, and reports per program:

- ``fus``: ``fusion`` ops in the ENTRY computation, ``+N`` in the other
  non-fused computations (conditional branches, loop bodies; a computation
  is fused if a ``fusion``'s ``calls=`` reaches it); ``ops``: ENTRY ops
  other than parameter, constant, tuple, get-tuple-element, bitcast;
  ``cond``: ``conditional`` ops; ``copy``: ``copy`` + ``copy-start`` ops
  (the latter are mostly prefetches to, and evictions from, VMEM).
- ``XLA MB``, ``XLA us``: the cost model's ``bytes accessed`` and
  ``optimal_seconds``. The model gives -1 s per ENTRY custom-call it cannot
  cost (``ConcatBitcast``): those are added back (raw value in the JSON).
- ``HBM MB``: estimated HBM traffic. TPU HLO tags each buffer's memory
  space in its layout (``f32[64]{0:T(128)S(1)}``): none is HBM, ``S(1)``
  VMEM, others on-chip too. Each top-level op counts the tiled (padded)
  bytes of its HBM operands and HBM results; async ``*-start`` ops count
  their HBM source (``slice-start``: the slice), ``*-done`` their result.
  ``bytes accessed`` instead counts a small leaf prefetched into VMEM as
  HBM read, VMEM write and VMEM read, hence its excess on trees of small
  leaves. Operands count whole (upper bound for slicing ops). ``cond MB``:
  per conditional its largest branch, summed (only if all branches fire);
  not in ``HBM MB``. ``HBM/P``: ``HBM MB`` over the params' logical bytes,
  i.e. param-sized arrays moved (tile padding adds a little): on the
  ``(50257, 768)`` layer sgd+momentum moves 5 (reads g, m, w; writes m, w),
  adam 7, sgd 3.
- ratios ``x sgd_momentum / x adam`` of each figure; compile seconds.

``--sharded``: GPT-2 small on ``v5e:4x4``, a ``("data", "model")`` 4x4 mesh,
``param_shardings`` / ``state_shardings`` per recipe (figures per device),
plus the collectives: count (``br``: in conditional branches), payload bytes
(logical), largest leaf (elements). Flagged: any all-gather, reduce-scatter,
all-to-all or collective-permute of a non-scalar, or any collective leaf
over 64 elements. Layca's target: scalar or tiny all-reduces only.

Usage::

    python benchmarks/tpu_cost.py [--workloads ...] [--only layca ...]
        [--sharded] [--topology v5e:2x2] [--out cost.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections import Counter

import jax
import numpy as np
import optax
from jax.experimental import topologies
from jax.sharding import Mesh, Sharding, SingleDeviceSharding

import layca_optax
from layca_optax._io import atomic_write_text


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import LR, _step_fn, optimizers  # noqa: E402
from trees import TREES  # noqa: E402


REFS = ("sgd_momentum", "adam")
LAYERS = {"layer_50257x768": (50257, 768), "layer_4096x4096": (4096, 4096)}
RECIPES = {
    "fsdp": {"fsdp": ("data", "model")},
    "tensor": {"tensor": "model"},
    "fsdp+tensor": {"fsdp": "data", "tensor": "model"},
}
COLLECTIVES = "all-reduce all-gather reduce-scatter all-to-all".split()
COLLECTIVES.append("collective-permute")
_NO_WORK = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
_INST = re.compile(r"^\s+(?:ROOT )?%(\S+) = (.*)$")
_LEAF = re.compile(r"(\w+)\[([\d,]*)\](?:\{([^}]*)\})?")
_CALL = re.compile(r"\b(?:calls|body|condition|to_apply)=%([\w.-]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_NAME = re.compile(r"%([\w.-]+)")


def topology(name: str):
    """Compile-only TPU devices for ``name``; says how to get libtpu."""
    try:
        if importlib.util.find_spec("libtpu") is None:
            raise ImportError("libtpu is not installed")
        return topologies.get_topology_desc(name, "tpu")
    except Exception as err:
        raise ImportError(
            f"No TPU topology {name!r} ({type(err).__name__}: {err}). This "
            "benchmark compiles for TPU without one and needs libtpu: "
            f'pip install "jax[tpu]=={jax.__version__}"'
        ) from err


topology("v5e:2x2")  # fail at import time without libtpu


def _closing(text: str, start: int) -> int:
    """The index after the parenthesis that closes ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def parse_hlo(text: str) -> tuple[dict[str, list[dict]], str]:
    """Computations of HLO text (name -> instructions) and the ENTRY's name.

    An instruction is a dict: ``name``, ``shape`` (text), ``op``,
    ``operands`` and ``calls`` (names of the computations it calls).
    """
    comps: dict[str, list[dict]] = {}
    entry = current = ""
    for line in text.splitlines():
        if line.startswith(("%", "ENTRY %")) and line.endswith("{"):
            current = line.split("%", 1)[1].split(" ", 1)[0]
            entry = current if line.startswith("ENTRY") else entry
            comps[current] = []
        elif current and (m := _INST.match(line)):
            body = m.group(2)
            end = _closing(body, 0) if body[0] == "(" else body.find(" ")
            if not (op := re.match(r"\s*([\w-]+)\(", body[end:])):
                continue
            args = end + op.end() - 1
            branches = "".join(_BRANCHES.findall(body))
            comps[current].append({
                "name": m.group(1),
                "shape": body[:end],
                "op": op.group(1),
                "operands": _NAME.findall(body[args : _closing(body, args)]),
                "calls": _CALL.findall(body) + _NAME.findall(branches),
            })
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
        op, operands = inst["op"], inst["operands"]
        if op in ("conditional", "while", "call"):
            called = [_traffic(comps, c, shapes) for c in inst["calls"]]
            if op == "conditional":
                branch += max(sum(c) for c in called)
            else:  # a loop body counts once
                main += sum(c[0] for c in called)
                branch += sum(c[1] for c in called)
        elif op.endswith("-done"):
            main += _hbm(inst["shape"])
        elif op == "slice-start":
            if _hbm(shapes[operands[0]]):
                main += _leaves(inst["shape"])[-2][2]
        elif op not in _NO_WORK:
            main += sum(_hbm(shapes[o]) for o in set(operands))
            main += 0 if op.endswith("-start") else _hbm(inst["shape"])
    return main, branch


def _reached(comps: dict, ops: tuple[str, ...]) -> set[str]:
    """Computations called, directly or not, by the ops named ``ops``."""
    all_insts = [i for insts in comps.values() for i in insts]
    todo = [c for i in all_insts if i["op"] in ops for c in i["calls"]]
    seen: set[str] = set()
    while todo:
        if (c := todo.pop()) not in seen:
            seen.add(c)
            todo += [x for i in comps.get(c, []) for x in i["calls"]]
    return seen


def program_counts(comps: dict, entry: str) -> dict:
    """Op counts of the ENTRY and of the other non-fused computations."""
    fused = _reached(comps, ("fusion",))
    ops = Counter(i["op"] for i in comps[entry])
    other = Counter(
        i["op"]
        for name, insts in comps.items()
        if name != entry and name not in fused
        for i in insts
    )
    return {
        "fusions_entry": ops["fusion"],
        "fusions_other": other["fusion"],
        "entry_ops": sum(n for op, n in ops.items() if op not in _NO_WORK),
        "conditionals": ops["conditional"] + other["conditional"],
        "copies": ops["copy"] + other["copy"],
        "copy_starts": ops["copy-start"] + other["copy-start"],
        "entry_custom_calls": ops["custom-call"],
    }


def collectives(comps: dict) -> dict:
    """Count, payload bytes, largest leaf of each kind of collective."""
    branches = _reached(comps, ("conditional",))
    done = {i["operands"][0]: i for v in comps.values() for i in v}
    stats: dict = {"flagged": 0}
    for name, insts in comps.items():
        for inst in insts:
            kind = inst["op"].removesuffix("-start")
            if kind not in COLLECTIVES:
                continue
            shape = done.get(inst["name"], inst)["shape"]  # -start: -done's
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
    """HLO counts, XLA's cost model and the HBM estimate of a program."""
    comps, entry = parse_hlo(compiled.as_text())
    shapes = {i["name"]: i["shape"] for v in comps.values() for i in v}
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) else cost) or {}
    counts = program_counts(comps, entry)
    hbm, cond = _traffic(comps, entry, shapes)
    raw = float(cost.get("optimal_seconds", math.nan))
    return {
        **counts,
        "xla_bytes": float(cost.get("bytes accessed", math.nan)),
        "optimal_seconds_raw": raw,
        "optimal_seconds": raw + counts["entry_custom_calls"],
        "hbm_bytes": hbm,
        "cond_hbm_bytes": cond,
        "hbm_per_param": hbm / param_bytes,
        "collectives": collectives(comps),
    }
