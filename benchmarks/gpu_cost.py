"""Deviceless NVIDIA GPU cost of one optimizer step, read from its program.

Compiles ``update`` + ``apply_updates`` (params, state donated) with XLA's
real GPU pipeline (ptxas included) for compile-only H100s: the CUDA plugin
of the installed jax, ``JAX_PLATFORMS=cpu`` (no driver is looked for) and
XLA's H100 SXM target description (``h100_sxm.txtpb`` beside this file).
No GPU is needed. ``cost_analysis()`` is None for such a program, so the
figures are counted from its optimized ENTRY computation (``_gpu_hlo.py``
says exactly what counts):

- ``kernels``: launches per step (fusions, copies, custom calls,
  collectives, other unfused ops); ``k/leaf``: over the number of leaves
  (on the 48-layer stack: kernels per layer).
- ``moved``: bytes of every kernel's operands and results over the
  params' bytes: parameter-sized arrays moved per step. Validated on one
  ``(50257, 768)`` layer: ``optax.sgd(momentum=0.9)`` 5 (reads g, m, w;
  writes m, w), ``optax.adam`` 7 (an assertion).
- ``x sgd_m``: ``moved`` over sgd-momentum's; ``comp s``: lowering +
  compiling seconds on this machine's CPU.
- ``fsdp``, ``tensor``, ``fsdp+tensor``: GPT-2 small on 8 H100s as a
  ``("data", "model")`` 2x4 mesh, per ``param_shardings`` recipe (figures
  per device), and the collectives: count per kind, payload bytes of
  them all.

Usage::

    python benchmarks/gpu_cost.py [--workloads ...] [--only NAME ...]
        [--kernels] [--target-config h100_sxm.txtpb] [--out gpu_cost.json]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import jax
import numpy as np
import optax
from jax.experimental import topologies
from jax.sharding import Mesh, SingleDeviceSharding

import layca_optax


jax.config.update("jax_platforms", "cpu")  # the plugin must find no driver
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gpu_hlo import analyse, kernel_list  # noqa: E402
from _programs import (  # noqa: E402
    RECIPES,
    compile_program,
    finish,
    float32_params,
)
from step_time import optimizers, rotation_family  # noqa: E402
from tpu_hlo import COLLECTIVES  # noqa: E402
from trees import TREES  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
REF = "sgd_momentum"
VALIDATION = {"sgd_momentum": 5.0, "adam": 7.0}  # arrays moved, one layer
LAYERS: dict[str, dict[str, tuple[int, ...]]] = {
    "layer_50257x768": {"kernel": (50257, 768)},
    "layer_1024x1024": {"kernel": (1024, 1024)},
    "stack_48x1024x1024": {f"layer{i:02d}": (1024, 1024) for i in range(48)},
}
DEFAULT = ["layer_50257x768", "stack_48x1024x1024", *TREES, *RECIPES]
DEFAULT.remove("1000_small_leaves")


def topology(target_config: str):
    """Eight compile-only GPUs of ``target_config``; says what is missing."""
    try:
        with open(target_config) as f:
            config = f.read()
        return topologies.get_topology_desc(
            platform="cuda", topology="1x1x8", target_config=config
        )
    except Exception as err:
        raise SystemExit(
            f"Cannot get a CUDA topology ({type(err).__name__}: {err}). "
            "This benchmark compiles for a GPU without one: it needs the "
            "CUDA plugin of this jax and ptxas, `pip install --no-deps "
            f'"jax-cuda12-plugin=={jax.__version__}" '
            f'"jax-cuda12-pjrt=={jax.__version__}" nvidia-cuda-nvcc-cu12` '
            "(`make bench-gpu` does it in build/venv-gpu)."
        ) from err


def candidates(only: list[str] | None) -> dict:
    """Transformations to compile (None: ``rotation_metrics``;
    ``track_rotation``: its step alone, the gradient as the update)."""
    base = optimizers()
    txs = {k: base[k] for k in ("sgd_momentum", "adam")}
    txs["adamw"] = optax.adamw(1e-3)
    txs |= {k: base[k] for k in ("layca", "layca_momentum", "layca_adam")}
    txs |= rotation_family()
    txs["rotation_metrics"] = None
    txs["track_rotation"] = layca_optax.track_rotation()
    return {k: v for k, v in txs.items() if not only or k in only or k == REF}


def bench(txs: dict, shapes: dict, shardings, kernels: bool) -> dict:
    """Compiles and analyses each program; adds the ratio to sgd-momentum.

    Args:
      txs: name -> transformation (None: ``rotation_metrics``).
      shapes: a flat dict of the params' shapes (float32).
      shardings: one device's sharding, or a ``NamedSharding`` per param.
      kernels: print each program's ENTRY kernels.
    """
    params, param_bytes = float32_params(shapes, shardings)
    results = {}
    for name, tx in txs.items():
        compiled, seconds = compile_program(tx, params, shardings)
        entry = analyse(compiled, param_bytes, len(shapes))
        results[name] = entry | {"compile_s": seconds}
        if kernels:
            print(f"\n{name}:\n  " + "\n  ".join(kernel_list(compiled)))
    for entry in results.values():
        base = results.get(REF, {}).get("arrays_moved")
        entry["moved_x_sgd_momentum"] = entry["arrays_moved"] / base
    return results


def validate(results: dict) -> None:
    """Asserts the traffic counter on sgd-momentum (5) and Adam (7)."""
    for name, expected in VALIDATION.items():
        if name in results:
            moved = results[name]["arrays_moved"]
            assert abs(moved - expected) < 0.01, (name, moved, expected)


def run_workload(workload: str, topo, args) -> dict:
    """One workload's results: a layer or tree on one GPU, or a recipe's
    GPT-2 small on the eight as a ("data", "model") 2x4 mesh."""
    txs = candidates(args.only)
    if workload in RECIPES:
        mesh = Mesh(np.array(topo.devices).reshape(2, 4), ("data", "model"))
        shapes = TREES["gpt2_small"]()
        bare = {
            k: jax.ShapeDtypeStruct(v, np.float32) for k, v in shapes.items()
        }
        kwargs = RECIPES[workload]
        shardings = layca_optax.sharding.param_shardings(bare, mesh, **kwargs)
        title = f"gpt2_small, {workload} {kwargs}, 8 GPUs, per device"
    else:
        shapes = LAYERS.get(workload) or TREES[workload]()
        shardings = SingleDeviceSharding(topo.devices[0])
        n = sum(map(math.prod, shapes.values()))
        title = f"{workload}: {n / 1e6:.1f}M params, {len(shapes)} leaves"
    results = bench(txs, shapes, shardings, args.kernels)
    print_table(title, results, sharded=workload in RECIPES)
    if workload == "layer_50257x768":
        validate(results)
    return results


def _collectives(e: dict) -> str:
    """``kind count (bytes, all together)`` per kind, or ``-``."""
    stats = e["collectives"]
    cells = [
        f"{kind} {stats[kind]['count']} ({stats[kind]['bytes']} B)"
        for kind in COLLECTIVES
        if kind in stats
    ]
    return ", ".join(cells) or "-"


def print_table(title: str, results: dict, sharded: bool) -> None:
    """One line per program: kernels, arrays moved, compile seconds."""
    w = max(map(len, results)) + 1
    print(
        f"\n{title}\n{'program':<{w}}{'kernels':>8}{'k/leaf':>8}"
        f"{'fusion':>7}{'copy':>5}{'other':>6}{'moved':>7}{'x sgd_m':>8}"
        f"{'comp s':>7}" + ("  collectives" if sharded else "")
    )
    for name, e in results.items():
        ops = e["kernels_by_op"]
        fusion, copy = ops.get("fusion", 0), ops.get("copy", 0)
        print(
            f"{name:<{w}}{e['kernels']:>8}{e['kernels_per_leaf']:>8.2f}"
            f"{fusion:>7}{copy:>5}{e['kernels'] - fusion - copy:>6}"
            f"{e['arrays_moved']:>7.2f}{e['moved_x_sgd_momentum']:>8.2f}"
            f"{e['compile_s']:>7.1f}"
            + (f"  {_collectives(e)}" if sharded else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=[*LAYERS, *TREES, *RECIPES],
        default=DEFAULT,
        help="default: " + " ".join(DEFAULT),
    )
    parser.add_argument("--only", nargs="+", choices=list(candidates(None)))
    parser.add_argument(
        "--kernels", action="store_true", help="print each program's kernels"
    )
    parser.add_argument(
        "--target-config", default=os.path.join(HERE, "h100_sxm.txtpb")
    )
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    # layca's init lists the leaves it leaves frozen (by design here).
    warnings.filterwarnings("ignore", r".*leaves are layers \(rotated\)")
    topo, start = topology(args.target_config), time.perf_counter()
    kind = topo.devices[0].device_kind
    print(
        f"{kind} x {len(topo.devices)} (compile only), jax {jax.__version__}, "
        f"optax {optax.__version__}, layca_optax {layca_optax.__version__}"
    )
    report: dict = {"device": kind, "jax": jax.__version__, "results": {}}
    for workload in args.workloads:
        report["results"][workload] = run_workload(workload, topo, args)
    return finish(report, start, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
