"""How XLA computes Layca's three per-layer sums, against one pass.

Layca needs ``<w, w>``, ``<d, w>`` and ``<d, d>`` for each layer before it
can write anything. This times, on two parameter-sized float32 arrays
(8M entries each, 32 MiB), the ways of asking XLA for them:

- ``three sums``: three ``jnp.sum`` (what the library does);
- ``variadic reduce``: one ``lax.reduce`` with three outputs;
- ``stacked``: one ``jnp.sum`` over a stacked (n, 3) array;

against the floor, ``one pass``: a single sum that reads both arrays once
(``jnp.sum(w + d)``), and ``one array``: ``jnp.sum(w * w)``. The ratio of
``three sums`` to ``one pass`` is what the memory-traffic model of
``docs/performance.md`` assumes (4 array reads against 2). It also prints
the fusions XLA emitted for each (one per pass over the inputs).

Usage::

    python benchmarks/reductions.py [--reps 15] [--size 8388608]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp


def _three(w, d):
    return jnp.sum(w * w), jnp.sum(d * w), jnp.sum(d * d)


def _variadic(w, d):
    zero = jnp.zeros((), w.dtype)
    return jax.lax.reduce(
        (w * w, d * w, d * d),
        (zero, zero, zero),
        lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)),
        (0, 1),
    )


def _stacked(w, d):
    return jnp.sum(jnp.stack([w * w, d * w, d * d], -1), axis=(0, 1))


def _one_pass(w, d):
    return jnp.sum(w + d)


def _one_array(w, d):
    return jnp.sum(w * w)


VARIANTS = {
    "three sums": _three,
    "variadic reduce": _variadic,
    "stacked": _stacked,
    "one pass": _one_pass,
    "one array": _one_array,
}


def _passes(compiled) -> str:
    """The entry computation's fusions (each a pass over its inputs)."""
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :].splitlines()[1:]
    names = [
        line.split("=")[0].replace("ROOT", "").strip().lstrip("%")
        for line in entry
        if "fusion(" in line or " reduce(" in line
    ]
    return ", ".join(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--size", type=int, default=8 * 2**20)
    args = parser.parse_args(argv)
    cols = 512
    shape = (args.size // cols, cols)
    w = jax.random.normal(jax.random.key(0), shape)
    d = jax.random.normal(jax.random.key(1), shape)
    device = jax.devices()[0]
    print(
        f"device: {device.platform} ({device.device_kind}), jax "
        f"{jax.__version__}; two float32 arrays of {args.size:,} entries; "
        f"median of {args.reps} interleaved runs"
    )
    compiled = {
        name: jax.jit(fn).lower(w, d).compile() for name, fn in VARIANTS.items()
    }
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for fn in compiled.values():
        jax.block_until_ready(fn(w, d))
    for _ in range(args.reps):
        for name, fn in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(w, d))
            times[name].append(time.perf_counter() - start)
    floor = statistics.median(times["one pass"])
    print(f"{'variant':<18}{'median ms':>11}{'x one pass':>12}  fusions")
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(
            f"{name:<18}{1e3 * ms:>11.2f}{ms / floor:>12.2f}  "
            f"{_passes(compiled[name])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
