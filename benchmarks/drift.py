"""Norm drift and per-step angle error of Layca over many steps, per dtype.

Trains three layers (a 64x64 Dense kernel, a 3x3x16x32 Conv kernel and a
128x10 Dense kernel) with ``layca(3**-3, optax.trace(0.9))`` on random
normal gradients, with the parameters (and gradients) stored in float32,
bfloat16 and float16; Layca's reductions run in float32 for all three. The
whole run is one ``jax.lax.scan`` under ``jax.jit``. Reported per dtype,
over the layers:

- norm drift: ``| ||w_T|| / ||w_0|| - 1 |`` after the last step, and the
  largest over all steps;
- per-step angle error: ``| tan(angle(w_t, w_{t+1})) / eta - 1 |``, the
  relative error of each step's turn (measured in float32 by
  ``rotation_rate`` from the stored parameters), median and max over steps.

Usage::

    python benchmarks/drift.py [--steps 10000] [--out drift.json]

The table in ``docs/robustness.md`` comes from the default run.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax
from layca_optax._io import atomic_write_text


SHAPES = {"a": (64, 64), "b": (3, 3, 16, 32), "c": (128, 10)}
DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}
LR = 3**-3


def run(dtype, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-step norms (steps + 1, layers) and tan of each turn (steps,
    layers), both in float32."""
    key = jax.random.key(seed)
    keys = jax.random.split(key, len(SHAPES))
    params = {
        k: jax.random.normal(kk, s).astype(dtype)
        for kk, (k, s) in zip(keys, SHAPES.items(), strict=True)
    }
    tx = layca_optax.layca(LR, optax.trace(0.9))

    def norms(p):
        return jnp.stack(
            [jnp.linalg.norm(p[k].astype(jnp.float32)) for k in SHAPES]
        )

    @jax.jit
    def scan(params):
        def body(carry, t):
            p, s = carry
            ks = jax.random.split(jax.random.fold_in(key, t), len(SHAPES))
            g = {
                k: jax.random.normal(kk, p[k].shape).astype(dtype)
                for kk, k in zip(ks, SHAPES, strict=True)
            }
            u, s = tx.update(g, s, p)
            new = optax.apply_updates(p, u)
            rate = layca_optax.rotation_rate(new, p)
            tans = jnp.stack([rate[k] for k in SHAPES])
            return (new, s), (norms(new), tans)

        _, (ns, tans) = jax.lax.scan(
            body, (params, tx.init(params)), jnp.arange(steps)
        )
        return jnp.concatenate([norms(params)[None], ns]), tans

    ns, tans = scan(params)
    return {"norms": np.asarray(ns, np.float64), "tans": np.asarray(tans)}


def summarize(result: dict[str, np.ndarray]) -> dict[str, float]:
    ns, tans = result["norms"], result["tans"]
    drift = np.abs(ns / ns[0] - 1)
    err = np.abs(tans.astype(np.float64) / LR - 1)
    return {
        "final_norm_drift": float(drift[-1].max()),
        "max_norm_drift": float(drift.max()),
        "median_angle_error": float(np.median(err)),
        "max_angle_error": float(err.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(
        f"device: {device.platform}, jax {jax.__version__}, optax "
        f"{optax.__version__}; layca({LR:.4g}, optax.trace(0.9)), "
        f"{args.steps} steps, layers {list(SHAPES.values())}"
    )
    header = (
        "| params dtype | norm drift after the last step | max norm drift "
        "| per-step angle error, median | per-step angle error, max |"
    )
    print(header)
    print("| --- | --- | --- | --- | --- |")
    report: dict = {"steps": args.steps, "lr": LR, "dtypes": {}}
    for name, dtype in DTYPES.items():
        start = time.perf_counter()
        s = summarize(run(dtype, args.steps))
        s["seconds"] = time.perf_counter() - start
        report["dtypes"][name] = s
        print(
            f"| {name} | {s['final_norm_drift']:.1e} | "
            f"{s['max_norm_drift']:.1e} | {s['median_angle_error']:.1e} | "
            f"{s['max_angle_error']:.1e} |"
        )
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
