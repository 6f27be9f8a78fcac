"""Optimizer step time: layca against optax's optimizers, in the same run.

One jitted ``update`` + ``apply_updates`` (params and state donated) per
optimizer, on parameter trees shaped like ResNet-50 (25.6M params, 161
leaves) and GPT-2 small (124M params, 148 leaves), and on 1,000 small
leaves. Runs are interleaved (A B C ... A B C ...) and the median of
``--reps`` runs is reported as a ratio to ``optax.sgd(lr, momentum=0.9)``
timed in the same run, with compile time and XLA's temp-buffer bytes.

Usage::

    python benchmarks/step_time.py [--trees resnet50 gpt2_small] [--reps 15]
                                   [--out results.json]

The same script runs unchanged on CPU, GPU and TPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import optax

import layca_optax
from layca_optax._io import atomic_write_text


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trees import TREES, make_tree  # noqa: E402


LR = 0.1
REFERENCE = "sgd_momentum"


def optimizers() -> dict[str, optax.GradientTransformation]:
    return {
        "sgd": optax.sgd(LR),
        "sgd_momentum": optax.sgd(LR, momentum=0.9),
        "adam": optax.adam(1e-3),
        "lars": optax.lars(LR),
        "layca": layca_optax.layca(LR),
        "layca_momentum": layca_optax.layca(LR, optax.trace(0.9)),
        "layca_adam": layca_optax.layca(LR, optax.scale_by_adam()),
    }


def rotation_family() -> dict[str, optax.GradientTransformation]:
    """The chain of primitives and the rotation-controlled family (issue
    26), for the deviceless GPU and TPU cost benchmarks."""
    return {
        "layca_chain": layca_optax.layca(LR, fused=False),
        "hyperball_adam": layca_optax.hyperball(LR, optax.scale_by_adam()),
        "tangent_trace": optax.chain(
            layca_optax.tangent_trace(0.9), optax.scale(-LR)
        ),
        "tangent_adam": optax.chain(
            layca_optax.scale_by_tangent_adam(), optax.scale(-1e-3)
        ),
        "adamw_brake": optax.chain(
            optax.adamw(1e-3), layca_optax.radial_brake()
        ),
    }


def _step_fn(tx: optax.GradientTransformation) -> Callable:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _timed(fn: Callable, *args) -> tuple[float, tuple]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def bench_tree(name: str, reps: int, only: list[str] | None = None) -> dict:
    shapes = TREES[name]()
    grads = make_tree(shapes, seed=1)
    entries: dict[str, dict] = {}
    runners: dict[str, Callable[[], float]] = {}
    chosen = {
        k: tx
        for k, tx in optimizers().items()
        if only is None or k in only or k == REFERENCE
    }
    for opt_name, tx in chosen.items():
        params = make_tree(shapes, seed=0)
        state = tx.init(params)
        jitted = jax.jit(_step_fn(tx), donate_argnums=(0, 1))
        start = time.perf_counter()
        compiled = jitted.lower(params, state, grads).compile()
        compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        entries[opt_name] = {
            "compile_s": compile_s,
            "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
            "times_s": [],
        }
        carry = {"args": (params, state)}

        def run(compiled=compiled, carry=carry) -> float:
            dt, out = _timed(compiled, *carry["args"], grads)
            carry["args"] = out
            return dt

        runners[opt_name] = run
    if only is not None and "rotation_metrics" not in only:
        return _summary(entries, runners, reps, grads)
    # rotation_metrics(params, init_params): no donation, nothing carried.
    init = make_tree(shapes, seed=0)
    params = make_tree(shapes, seed=2)
    metrics = jax.jit(layca_optax.rotation_metrics)
    start = time.perf_counter()
    compiled_metrics = metrics.lower(params, init).compile()
    entries["rotation_metrics"] = {
        "compile_s": time.perf_counter() - start,
        "temp_bytes": getattr(
            compiled_metrics.memory_analysis(), "temp_size_in_bytes", None
        ),
        "times_s": [],
    }
    runners["rotation_metrics"] = lambda: _timed(
        compiled_metrics, params, init
    )[0]
    return _summary(entries, runners, reps, grads)


def _summary(
    entries: dict[str, dict],
    runners: dict[str, Callable[[], float]],
    reps: int,
    grads,
) -> dict:
    for run in runners.values():  # warm up
        run()
    for _ in range(reps):
        for opt_name, run in runners.items():
            entries[opt_name]["times_s"].append(run())
    ref = statistics.median(entries[REFERENCE]["times_s"])
    for entry in entries.values():
        entry["median_s"] = statistics.median(entry["times_s"])
        entry["ratio"] = entry["median_s"] / ref
    n_params = sum(x.size for x in jax.tree.leaves(grads))
    return {
        "params": n_params,
        "leaves": len(jax.tree.leaves(grads)),
        "param_bytes": 4 * n_params,
        "results": entries,
    }


def print_table(name: str, result: dict) -> None:
    print(
        f"\n{name}: {result['params'] / 1e6:.1f}M params, "
        f"{result['leaves']} leaves"
    )
    print(
        f"{'optimizer':<18}{'median ms':>11}{'x sgd+mom':>11}"
        f"{'compile s':>11}{'temp/params':>13}"
    )
    for opt_name, e in result["results"].items():
        temp = e["temp_bytes"]
        temp_ratio = (
            f"{temp / result['param_bytes']:.2f}" if temp is not None else "?"
        )
        print(
            f"{opt_name:<18}{1e3 * e['median_s']:>11.2f}{e['ratio']:>11.2f}"
            f"{e['compile_s']:>11.2f}{temp_ratio:>13}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--trees", nargs="+", default=list(TREES), choices=list(TREES)
    )
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*optimizers(), "rotation_metrics"],
        help="time only these (and the sgd_momentum reference)",
    )
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(
        f"device: {device.platform} ({device.device_kind}), "
        f"jax {jax.__version__}, optax {optax.__version__}, "
        f"layca_optax {layca_optax.__version__}; median of {args.reps} "
        f"interleaved runs"
    )
    report = {
        "device": f"{device.platform} ({device.device_kind})",
        "jax": jax.__version__,
        "optax": optax.__version__,
        "reps": args.reps,
        "trees": {},
    }
    for name in args.trees:
        result = bench_tree(name, args.reps, args.only)
        print_table(name, result)
        report["trees"][name] = result
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
