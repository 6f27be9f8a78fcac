"""Trace and compile time of one optimizer step: layca against optax.

For trees of ``L`` layers (a 64x64 kernel and a 64 bias each), every
optimizer's step (``update`` + ``optax.apply_updates``, jitted) is traced
(``jit(step).lower``) and compiled (``.compile()``) in a fresh process, so
that no cache of an earlier run is hit. Runs are interleaved (A B C ... A B
C ...) and the minimum over ``--reps`` is reported (the least disturbed by
other load), with ratios to ``optax.adam`` of the same tree, and the number
of jaxpr equations and compiled HLO instructions per layer.

``rotation_metrics`` is ``jit(rotation_metrics)(params, init_params)``;
``track_rotation`` is the step of ``track_rotation()`` alone (it returns the
updates and records the rotation).

Usage::

    python benchmarks/compile_time.py [--layers 100 1000] [--reps 3]
                                      [--only layca adam] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import optax

import layca_optax
from layca_optax._io import atomic_write_text


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import LR, optimizers  # noqa: E402


REFERENCE = "adam"
EXTRA = ["layca_chain", "rotation_metrics", "track_rotation"]


def _tree(layers: int) -> dict:
    return {
        f"layer_{i:04d}": {"kernel": jnp.ones((64, 64)), "bias": jnp.ones(64)}
        for i in range(layers)
    }


def _jitted(name: str, params: dict):
    """The jitted function of ``name`` and its arguments."""
    if name == "rotation_metrics":
        return jax.jit(layca_optax.rotation_metrics), (params, params)
    if name == "track_rotation":
        tx = layca_optax.track_rotation()
    elif name == "layca_chain":
        tx = layca_optax.layca(LR, fused=False)
    else:
        tx = optimizers()[name]

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    return jax.jit(step), (params, tx.init(params), params)


def measure(name: str, layers: int) -> dict:
    """Trace and compile ``name``'s step once, in this process."""
    fn, args = _jitted(name, _tree(layers))
    start = time.perf_counter()
    traced = fn.trace(*args)
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    eqns = len(traced.jaxpr.jaxpr.eqns)
    hlo = compiled.as_text()
    return {
        "trace_s": lowered_at - start,
        "compile_s": done - lowered_at,
        "total_s": done - start,
        "eqns_per_layer": eqns / layers,
        "hlo_lines_per_layer": hlo.count("\n") / layers,
        "conditionals": hlo.count(" conditional("),
    }


def _run_worker(name: str, layers: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, str(layers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(layers: int, names: list[str], reps: int) -> dict:
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(reps):
        for name in names:
            runs[name].append(_run_worker(name, layers))
    best = {n: min(r, key=lambda x: x["total_s"]) for n, r in runs.items()}
    ref = best.get(REFERENCE, {}).get("total_s")
    for entry in best.values():
        entry["x_adam"] = entry["total_s"] / ref if ref else None
    return best


def print_table(layers: int, best: dict) -> None:
    print(f"\n{layers} layers ({2 * layers} leaves), min over reps")
    print(
        f"{'step':<20}{'trace s':>9}{'compile s':>11}{'total s':>9}"
        f"{'x adam':>8}{'eqns/L':>8}{'HLO/L':>7}{'conds':>6}"
    )
    for name, e in best.items():
        ratio = f"{e['x_adam']:.2f}" if e["x_adam"] else "?"
        print(
            f"{name:<20}{e['trace_s']:>9.2f}{e['compile_s']:>11.2f}"
            f"{e['total_s']:>9.2f}{ratio:>8}{e['eqns_per_layer']:>8.1f}"
            f"{e['hlo_lines_per_layer']:>7.0f}{e['conditionals']:>6}"
        )


def main(argv: list[str] | None = None) -> int:
    choices = [*optimizers(), *EXTRA]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=choices)
    parser.add_argument("--out", help="write the results to this JSON file")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]))))
        return 0
    names = choices if args.only is None else args.only
    if REFERENCE not in names:
        names = [REFERENCE, *names]
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, "
        f"{jax.devices()[0].platform}; fresh process per measurement"
    )
    report: dict = {"jax": jax.__version__, "reps": args.reps, "layers": {}}
    for layers in args.layers:
        best = bench(layers, names, args.reps)
        print_table(layers, best)
        report["layers"][str(layers)] = best
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
