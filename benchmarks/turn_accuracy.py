"""How exactly one Layca step turns a layer, by the direction's angle to it.

One 64x64 float32 layer ``w`` and a direction ``d`` at angle ``theta`` from
``w`` (``sin(theta)`` from 0.3 down to 1e-3); one step of ``layca(0.1)``,
fused (default) and as the chain of primitives (``fused=False``). Printed:
the relative error of the turn, ``tan(angle(w, w')) / lr - 1``, measured in
float64, and the fused step's bound ``2 eps_f32 / sin(theta)^2``.

Usage::

    python benchmarks/turn_accuracy.py

The table in ``docs/algorithm.md`` comes from this run.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import layca_optax


def turn_error(w: np.ndarray, d: np.ndarray, lr: float, fused: bool) -> float:
    tx = layca_optax.layca(lr, fused=fused)
    u, _ = tx.update(jnp.asarray(d), tx.init(jnp.asarray(w)), jnp.asarray(w))
    old = w.astype(np.float64)
    new = old + np.asarray(u, np.float64)
    cos = np.sum(new * old) / np.linalg.norm(new) / np.linalg.norm(old)
    return float(np.sqrt(max(1 - cos * cos, 0.0)) / cos / lr - 1)


def main() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    unit = w / np.linalg.norm(w)
    t = rng.standard_normal(w.shape)
    t -= np.sum(t * unit) * unit
    t /= np.linalg.norm(t)
    eps = float(np.finfo(np.float32).eps)
    print("| sin(theta) | theta (deg) | fused | chain | 2 eps / sin^2 |")
    print("| --- | --- | --- | --- | --- |")
    for s in (0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3):
        d = ((np.sqrt(1 - s * s) * unit + s * t) * 10).astype(np.float32)
        fused, chain = (turn_error(w, d, 0.1, f) for f in (True, False))
        print(
            f"| {s:g} | {np.degrees(np.arcsin(s)):.3f} | {fused:+.1e} | "
            f"{chain:+.1e} | {2 * eps / s**2:.1e} |"
        )


if __name__ == "__main__":
    main()
