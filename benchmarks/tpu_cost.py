"""Deviceless TPU cost of one optimizer step, read from the compiled program.

Compiles ``update`` + ``apply_updates`` (params, state donated) for libtpu's
compile-only devices (no TPU needed) and reports, per program:

- ``fus``: ``fusion`` ops in the ENTRY computation, ``+N`` in other non-fused
  computations (conditional branches, loop bodies; fused: reached from a
  fusion's ``calls=``). ``ops``: ENTRY ops but parameter, constant, tuple,
  get-tuple-element, bitcast. ``cond``: conditionals. ``copy``: ``copy``
  ops, counted as ``fus``. ``cp-st``: ``copy-start`` ops, all computations
  but fused ones (mostly prefetches into VMEM and evictions from it).
- ``XLA MB``, ``XLA us``: the cost model's ``bytes accessed`` and
  ``optimal_seconds``; the latter counts -1 s per ENTRY custom-call (e.g.
  TPU's ``ConcatBitcast``), added back when negative (raw in the JSON).
- ``HBM MB``: HBM traffic. A layout's ``S(n)`` is its memory space (none:
  HBM, ``S(1)``: VMEM, others on-chip). Each top-level op counts the tiled
  bytes of its HBM operands and results; async ``*-start`` ops their HBM
  source (``slice-start``: the slice), ``*-done`` their result. XLA's
  ``bytes accessed`` counts a leaf prefetched into VMEM three times (HBM
  read, VMEM write, VMEM read): read it as an upper bound on trees of small
  leaves. Operands count whole (an upper bound for slicing ops).
  ``cond MB``: each conditional's largest branch, summed (not in ``HBM MB``:
  paid when it fires; a branch operand prefetched into VMEM every step is
  in ``HBM MB``). ``HBM/P``: ``HBM MB`` over the params' logical bytes =
  param-sized arrays moved, plus tile padding (8x on 16x16 leaves). On the
  ``(50257, 768)`` layer (validation): sgd 3.00, sgd+momentum 5.00 (reads
  g, m, w; writes m, w), adam 7.00.
- ratios ``x sgd_momentum / x adam`` of each, and compile seconds (CPU).

``--sharded``: GPT-2 small on ``v5e:4x4`` as a ``("data", "model")`` 4x4
mesh, per ``param_shardings`` recipe (``RECIPES``; figures per device),
and the collectives: count (``br``: inside conditional branches), logical
payload bytes, largest leaf in elements. ``FLAG``: an all-gather,
reduce-scatter, all-to-all or collective-permute of a non-scalar, or a leaf
over 64 elements. Layca's target: scalar (or tiny) all-reduces only.

Usage::

    python benchmarks/tpu_cost.py [--workloads ...] [--only NAME ...]
        [--sharded] [--topology v5e:2x2] [--out cost.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import os
import sys
import time

import jax
import numpy as np
import optax
from jax.experimental import topologies
from jax.sharding import Mesh, SingleDeviceSharding

import layca_optax


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _programs import (  # noqa: E402
    RECIPES,
    compile_program,
    finish,
    float32_params,
)
from step_time import LR, optimizers, rotation_family  # noqa: E402
from tpu_hlo import COLLECTIVES, analyse  # noqa: E402
from trees import TREES  # noqa: E402


REFS = ("sgd_momentum", "adam")
LAYERS = {"layer_50257x768": (50257, 768), "layer_4096x4096": (4096, 4096)}


def topology(name: str):
    """Compile-only TPU devices for ``name``; says how to get libtpu."""
    try:
        if importlib.util.find_spec("libtpu") is None:
            raise ImportError("libtpu is not installed")
        return topologies.get_topology_desc(name, "tpu")
    except Exception as err:
        raise ImportError(
            f"Cannot get TPU topology {name!r} ({type(err).__name__}: {err})."
            " This benchmark compiles for TPU without one: it needs libtpu, "
            f'`pip install "jax[tpu]=={jax.__version__}"`, and a topology '
            'name such as "v5e:2x2".'
        ) from err


# Compiling only, this process needs no lock on the (absent) chips.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
topology("v5e:2x2")  # fail at import time without libtpu


def candidates(only: list[str] | None) -> dict:
    """Transformations to compile (None: ``rotation_metrics``)."""
    txs = (
        optimizers()
        | {
            "sgd_momentum+track_rotation": optax.chain(
                optax.sgd(LR, momentum=0.9), layca_optax.track_rotation()
            ),
            "rotation_metrics": None,
        }
        | rotation_family()
    )
    return {k: v for k, v in txs.items() if not only or k in only or k in REFS}


def bench(txs: dict, shapes: dict, shardings) -> dict:
    """Compiles and analyses each program; adds ratios to the references.

    Args:
      txs: name -> transformation (None: ``rotation_metrics``).
      shapes: a flat dict of the params' shapes (float32).
      shardings: one device's sharding, or a ``NamedSharding`` per param.
    """
    params, param_bytes = float32_params(shapes, shardings)
    results = {}
    for name, tx in txs.items():
        compiled, seconds = compile_program(tx, params, shardings)
        results[name] = analyse(compiled, param_bytes) | {"compile_s": seconds}
    for ref, entry in itertools.product(REFS, results.values()):
        for key in ("xla_bytes", "optimal_seconds", "hbm_bytes"):
            base = results.get(ref, {}).get(key)
            entry[f"{key}_x_{ref}"] = entry[key] / base if base else None
    return results


def bench_sharded(topo, only: list[str] | None) -> dict:
    """GPT-2 small on a ("data", "model") mesh, per sharding recipe."""
    mesh = Mesh(np.array(topo.devices).reshape(4, -1), ("data", "model"))
    shapes = TREES["gpt2_small"]()
    bare = {k: jax.ShapeDtypeStruct(v, np.float32) for k, v in shapes.items()}
    return {
        recipe: bench(
            candidates(only or ["layca"]),
            shapes,
            layca_optax.sharding.param_shardings(bare, mesh, **kwargs),
        )
        for recipe, kwargs in RECIPES.items()
    }


def _ratios(e: dict, key: str) -> str:
    r = [e.get(f"{key}_x_{ref}") for ref in REFS]
    return "/".join("-" if x is None else f"{x:.2f}" for x in r)


def _split(e: dict, key: str) -> str:
    other = e[f"{key}_other"]
    return f"{e[f'{key}_entry']}" + (f"+{other}" if other else "")


def print_table(title: str, results: dict) -> None:
    """One line per program: HLO counts, XLA's figures, HBM estimate."""
    w = max(map(len, results)) + 1
    print(
        f"\n{title}   (ratios: x sgd_momentum / x adam)\n{'program':<{w}}"
        f"{'fus':>7}{'ops':>6}{'cond':>5}{'copy':>7}{'cp-st':>7}{'XLA MB':>9}"
        f"{'ratios':>11}{'XLA us':>8}{'ratios':>11}{'HBM MB':>9}"
        f"{'ratios':>11}{'HBM/P':>7}{'cond MB':>8}{'comp s':>7}"
    )
    for name, e in results.items():
        fus, copy = _split(e, "fusions"), _split(e, "copies")
        print(
            f"{name:<{w}}{fus:>7}{e['entry_ops']:>6}{e['conditionals']:>5}"
            f"{copy:>7}{e['copy_starts']:>7}"
            f"{e['xla_bytes'] / 1e6:>9.1f}{_ratios(e, 'xla_bytes'):>11}"
            f"{1e6 * e['optimal_seconds']:>8.0f}"
            f"{_ratios(e, 'optimal_seconds'):>11}"
            f"{e['hbm_bytes'] / 1e6:>9.1f}{_ratios(e, 'hbm_bytes'):>11}"
            f"{e['hbm_per_param']:>7.2f}{e['cond_hbm_bytes'] / 1e6:>8.1f}"
            f"{e['compile_s']:>7.1f}"
        )


def print_collectives(results: dict) -> None:
    """Per program and kind: count (in branches), bytes, largest leaf."""
    w = max(map(len, results)) + 1
    print(f"{'collectives':<{w}}" + "".join(f"{k:>25}" for k in COLLECTIVES))
    for name, e in results.items():
        line = f"{name:<{w}}"
        for s in map(e["collectives"].get, COLLECTIVES):
            br = f" ({s['in_branches']} br)" if s and s["in_branches"] else ""
            cell = s and f"{s['count']}{br} {s['bytes']}B <={s['max_leaf']}"
            line += f"{cell or '-':>25}"
        flagged = e["collectives"]["flagged"]
        print(line + (f"  FLAG: {flagged}" if flagged else "  ok"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=[*LAYERS, *TREES],
        default=[*LAYERS, "gpt2_small"],
        help="default: the two layers, gpt2_small (resnet50: +3-4 min)",
    )
    parser.add_argument("--only", nargs="+", choices=list(candidates(None)))
    parser.add_argument("--sharded", action="store_true")
    parser.add_argument("--topology", help="v5e:2x2, or v5e:4x4 if sharded")
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    name = args.topology or ("v5e:4x4" if args.sharded else "v5e:2x2")
    topo, start = topology(name), time.perf_counter()
    print(
        f"{name} ({topo.devices[0].device_kind}, compile only), jax "
        f"{jax.__version__}, optax {optax.__version__}; MB: 1e6 bytes"
    )
    report: dict = {"topology": name, "jax": jax.__version__, "results": {}}
    if args.sharded:
        for recipe, results in bench_sharded(topo, args.only).items():
            title = f"gpt2_small, {recipe} {RECIPES[recipe]}, per device"
            print_table(title, results)
            print_collectives(results)
            report["results"][recipe] = results
    for workload in [] if args.sharded else args.workloads:
        shapes = {"kernel": LAYERS[workload]} if workload in LAYERS else None
        shapes = shapes or TREES[workload]()
        device = SingleDeviceSharding(topo.devices[0])
        results = bench(candidates(args.only), shapes, device)
        n = sum(map(math.prod, shapes.values()))
        title = f"{workload}: {n / 1e6:.1f}M params, {len(shapes)} leaves"
        print_table(title, results)
        report["results"][workload] = results
    return finish(report, start, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
