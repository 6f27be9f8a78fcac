"""Norm drift and per-step angle error of Layca over many steps, per dtype.

Trains four layers (a 64x64 Dense kernel, a 3x3x16x32 Conv kernel, a
128x10 Dense kernel and a 64x256 one) with ``layca(rate, base)`` on
random normal gradients (``--persistent``: plus a fixed random matrix per
layer, so that successive gradients correlate as in training), for each
rate in ``3^-3 .. 3^-6``, each base (``sgd``: None, the plain gradient;
``adam``: ``optax.scale_by_adam()``, with ``eps=1e-6`` in float16, whose
default ``1e-8`` is 0 there) and each params dtype (float32, bfloat16,
float16; the gradients in the same dtype). Layca's sums run in float32
for all three dtypes. bfloat16 and float16 run twice: ``nearest``, the
new weights rounded to nearest (as before stochastic rounding, through
``layca_optax._rounding.nearest_rounding``), and ``stochastic``, the
default. Each run is one ``jax.lax.scan`` under ``jax.jit``; the weights
are rounded to their dtype after each step as when stored (inside one
``jit`` XLA may keep them in float32). Reported per run, over the layers:

- norm drift: ``||w_T|| / ||w_0|| - 1`` after the last step, for the
  layer where it is largest in absolute value (signed), and the largest
  ``| ||w_t|| / ||w_0|| - 1 |`` over all steps;
- per-step angle error: ``| tan(angle(w_t, w_{t+1})) / eta - 1 |``, the
  relative error of each step's turn (measured in float32 by
  ``rotation_rate`` from the stored parameters), median over steps and
  layers;
- per layer: the root mean square over the runs of the final drift, next
  to the random walk that stochastic rounding predicts (one standard
  deviation, ``sqrt(steps) * layca_optax._rounding.drift_per_step``, the
  criterion of ``init``'s warning).

Usage::

    python benchmarks/drift.py [--steps 10000] [--chain] [--persistent]
        [--out drift.json]

``--chain`` runs ``layca(..., fused=False)``. The tables in
``docs/robustness.md`` come from the default run and ``--persistent``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax
from layca_optax._io import atomic_write_text
from layca_optax._rounding import drift_per_step, nearest_rounding


SHAPES = {"a": (64, 64), "b": (3, 3, 16, 32), "c": (128, 10), "d": (64, 256)}
DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}
RATES = {f"3^-{k}": 3.0**-k for k in (3, 4, 5, 6)}
BASES = ("sgd", "adam")


def make_base(name: str, dtype) -> optax.GradientTransformation | None:
    """The base direction: None (SGD) or Adam (``eps=1e-6`` in float16)."""
    if name == "sgd":
        return None
    eps = 1e-6 if jnp.dtype(dtype) == jnp.float16 else 1e-8
    return optax.scale_by_adam(eps=eps)


def stored(x: jax.Array) -> jax.Array:
    """``x`` as stored in its dtype. Inside one ``jit``, XLA may keep a
    bfloat16 result in float32 (it allows excess precision), so that the
    norm of ``apply_updates``' result would be measured before rounding:
    ``reduce_precision`` rounds it, and the next step starts from it."""
    info = jnp.finfo(x.dtype)
    wide = x.astype(jnp.float32)
    return jax.lax.reduce_precision(wide, info.nexp, info.nmant).astype(x.dtype)


def run(
    dtype,
    lr: float,
    base: str,
    steps: int,
    *,
    fused: bool = True,
    persistent: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-step norms (steps + 1, layers) and tan of each turn (steps,
    layers), both in float32. ``persistent``: each layer's gradient is a
    fixed random matrix plus the fresh noise (as in training, where
    successive gradients correlate), else the noise alone."""
    key = jax.random.key(seed)
    keys = jax.random.split(key, len(SHAPES))
    params = {
        k: jax.random.normal(kk, s).astype(dtype)
        for kk, (k, s) in zip(keys, SHAPES.items(), strict=True)
    }
    fixed = {
        k: jax.random.normal(jax.random.fold_in(kk, 1), s) * persistent
        for kk, (k, s) in zip(keys, SHAPES.items(), strict=True)
    }
    tx = layca_optax.layca(lr, make_base(base, dtype), fused=fused)

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
                k: (fixed[k] + jax.random.normal(kk, p[k].shape)).astype(dtype)
                for kk, k in zip(ks, SHAPES, strict=True)
            }
            u, s = tx.update(g, s, p)
            new = jax.tree.map(stored, optax.apply_updates(p, u))
            rate = layca_optax.rotation_rate(new, p)
            tans = jnp.stack([rate[k] for k in SHAPES])
            return (new, s), (norms(new), tans)

        _, (ns, tans) = jax.lax.scan(
            body, (params, tx.init(params)), jnp.arange(steps)
        )
        return jnp.concatenate([norms(params)[None], ns]), tans

    ns, tans = scan(params)
    return {"norms": np.asarray(ns, np.float64), "tans": np.asarray(tans)}


def summarize(result: dict[str, np.ndarray], lr: float) -> dict:
    ns, tans = result["norms"], result["tans"]
    drift = ns / ns[0] - 1
    last = drift[-1]
    err = np.abs(tans.astype(np.float64) / lr - 1)
    return {
        "final_norm_drift_per_layer": dict(
            zip(SHAPES, last.tolist(), strict=True)
        ),
        "final_norm_drift": float(last[np.argmax(np.abs(last))]),
        "max_norm_drift": float(np.abs(drift).max()),
        "median_angle_error": float(np.median(err)),
        "max_angle_error": float(err.max()),
    }


def configs():
    """(dtype name, rounding) columns of the tables."""
    for name in DTYPES:
        for rounding in ("nearest", "stochastic"):
            if name != "float32" or rounding == "stochastic":
                yield name, rounding


def measure(steps: int, fused: bool, persistent: bool) -> dict:
    """Every run's summary, keyed ``base/rate/dtype/rounding``."""
    out = {}
    for base in BASES:
        for rate, lr in RATES.items():
            for name, rounding in configs():
                start = time.perf_counter()
                ctx = (
                    nearest_rounding()
                    if rounding == "nearest"
                    else contextlib.nullcontext()
                )
                with ctx:
                    result = run(
                        DTYPES[name],
                        lr,
                        base,
                        steps,
                        fused=fused,
                        persistent=persistent,
                    )
                s = summarize(result, lr)
                s["seconds"] = time.perf_counter() - start
                out[f"{base}/{rate}/{name}/{rounding}"] = s
                print(f"  {base} {rate} {name} {rounding}: {s}", flush=True)
    return out


def table(report: dict, field: str, fmt: str) -> list[str]:
    cols = list(configs())
    head = " | ".join(
        name if name == "float32" else f"{name} {rounding}"
        for name, rounding in cols
    )
    lines = [f"| base | rate | {head} |", "| --- " * (2 + len(cols)) + "|"]
    for base in BASES:
        for rate in RATES:
            cells = [
                format(report[f"{base}/{rate}/{n}/{r}"][field], fmt)
                for n, r in cols
            ]
            lines.append(f"| {base} | {rate} | " + " | ".join(cells) + " |")
    return lines


def per_layer(report: dict, steps: int) -> list[str]:
    """Per layer and low-precision dtype: the root mean square, over the
    runs of every base and rate, of the final drift with stochastic
    rounding, and the prediction (one standard deviation of the norm's
    random walk, ``sqrt(steps) * drift_per_step``, see init's warning)."""
    lines = [
        "| layer | entries | dtype | RMS final drift, stochastic "
        "| predicted | RMS final drift, nearest |",
        "| --- " * 6 + "|",
    ]
    for name in ("bfloat16", "float16"):
        for k, shape in SHAPES.items():
            w = jax.random.normal(jax.random.key(0), shape).astype(DTYPES[name])
            axes = tuple(range(len(shape)))
            pred = drift_per_step(w, axes) * np.sqrt(steps)
            rms = [
                np.sqrt(
                    np.mean(
                        [
                            v["final_norm_drift_per_layer"][k] ** 2
                            for key, v in report.items()
                            if key.endswith(f"/{name}/{rounding}")
                        ]
                    )
                )
                for rounding in ("stochastic", "nearest")
            ]
            lines.append(
                f"| {'x'.join(map(str, shape))} | {np.prod(shape)} | {name} "
                f"| {rms[0]:.1e} | {pred:.1e} | {rms[1]:.1e} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--chain", action="store_true", help="fused=False")
    parser.add_argument(
        "--persistent",
        action="store_true",
        help="gradients: a fixed random matrix per layer plus the noise",
    )
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(
        f"device: {device.platform}, jax {jax.__version__}, optax "
        f"{optax.__version__}; layca(rate, base, fused={not args.chain}), "
        f"{args.steps} steps, layers {list(SHAPES.values())}, "
        f"{'persistent' if args.persistent else 'random'} gradients"
    )
    start = time.perf_counter()
    runs = measure(args.steps, not args.chain, args.persistent)
    print(f"total {time.perf_counter() - start:.0f} s\n")
    print("Norm drift after the last step (signed, largest layer):\n")
    print("\n".join(table(runs, "final_norm_drift", "+.1e")))
    print("\nLargest norm drift over the steps:\n")
    print("\n".join(table(runs, "max_norm_drift", ".1e")))
    print("\nPer-step angle error, median:\n")
    print("\n".join(table(runs, "median_angle_error", ".1e")))
    print("\nFinal drift per layer, over the bases and rates:\n")
    print("\n".join(per_layer(runs, args.steps)))
    if args.out:
        report = {
            "steps": args.steps,
            "chain": args.chain,
            "persistent": args.persistent,
            "runs": runs,
        }
        atomic_write_text(args.out, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
