"""A prototype of Layca's fused step staged for fewer GPU kernels.

Evidence for issue 27 part 2, not product code: ``layca_optax.layca``'s
step (float32 layers, one layer per leaf, a static rate, leaves of fewer
than 2 dims frozen, as by default) written three ways, to compare their H100
programs with ``gpu_cost.py``'s counters (``python
benchmarks/_staged_layca.py``):

- ``variadic``: each layer's three sums as ONE variadic ``lax.reduce`` (one
  reduction hero instead of three), then its coefficients and its
  elementwise pass, per leaf.
- ``stacked``: the same sums, stacked into ``(L,)`` vectors: one kernel
  computes every layer's coefficients, each layer's pass reads its own.
- ``segments``: each layer reduced to per-row partial sums only (one
  variadic reduction over its last axis), every layer's partials
  concatenated and finished by one segment sum (a scatter-add), one kernel
  for every layer's coefficients, then each layer's elementwise pass.

The coefficients are ``layca_optax._layca.layca_coefficients``'s. The
package now does ``stacked`` on GPUs (``layca_optax._staging.map_leaves``,
with an optimization barrier); ``segments``-like partial sums were not
kept: under FSDP or tensor parallelism a layer's partial sums along a
sharded reduced axis were all-gathered.
"""

from __future__ import annotations

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _layca


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
MODES = ("variadic", "stacked", "segments")


def _add3(x: tuple, y: tuple) -> tuple:
    return tuple(a + b for a, b in zip(x, y, strict=True))


def three_sums(w, d, axes: tuple[int, ...]) -> tuple:
    """``(<w, w>, <d, w>, <d, d>)`` over ``axes`` as one variadic reduce."""
    zero = np.float32(0)
    return jax.lax.reduce((w * w, d * w, d * d), (zero,) * 3, _add3, axes)


def _coefficients(ww, dw, dd, lr: float, eps: float) -> tuple:
    """The package's coefficients, whatever their number."""
    terms = _layca.rate_terms(lr, eps)
    return tuple(_layca.layca_coefficients(ww, dw, dd, terms=terms))


def _update(coefficients: tuple, w, d):
    """``w_{t+1} - w`` from the coefficients (2 or 3 of them)."""
    if hasattr(_layca, "layca_update"):
        return _layca.layca_update(coefficients, w, d)
    a_w, a_d = coefficients
    return a_w * w + a_d * d


def _segment_sums(ws: list, ds: list) -> tuple:
    """Every layer's three sums as ``(L,)`` vectors: per-row partials
    (one variadic reduce per layer), finished by one segment sum."""
    parts, ids = [], []
    for i, (w, d) in enumerate(zip(ws, ds, strict=True)):
        w2, d2 = w.reshape(-1, w.shape[-1]), d.reshape(-1, d.shape[-1])
        parts.append(jnp.stack(three_sums(w2, d2, (1,)), axis=1))
        ids.append(np.full(w2.shape[0], i, np.int32))
    rows = jnp.concatenate(parts)  # (rows of every layer, 3)
    seg = jax.ops.segment_sum(
        rows, np.concatenate(ids), len(ws), indices_are_sorted=True
    )
    return seg[:, 0], seg[:, 1], seg[:, 2]


def staged_updates(ds: list, ws: list, mode: str, lr: float, eps: float):
    """Every layer's update from its direction ``d`` and weights ``w``."""
    if mode == "variadic":
        out = []
        for w, d in zip(ws, ds, strict=True):
            ww, dw, dd = three_sums(w, d, tuple(range(w.ndim)))
            out.append(_update(_coefficients(ww, dw, dd, lr, eps), w, d))
        return out
    if mode == "stacked":
        per_layer = [
            three_sums(w, d, tuple(range(w.ndim)))
            for w, d in zip(ws, ds, strict=True)
        ]
        vectors = [jnp.stack(s) for s in zip(*per_layer, strict=True)]
    else:
        vectors = list(_segment_sums(ws, ds))
    ww, dw, dd = vectors
    coefficients = _coefficients(ww, dw, dd, lr, eps)  # one kernel for all
    return [
        _update(tuple(c[i] for c in coefficients), w, d)
        for i, (w, d) in enumerate(zip(ws, ds, strict=True))
    ]


def staged_layca(
    learning_rate: float,
    base: optax.GradientTransformation | None = None,
    mode: str = "stacked",
    eps: float = 1e-7,
) -> optax.GradientTransformation:
    """Layca with ``base`` as a prototype transformation (see the module
    docstring): leaves of at least 2 dims are layers, the others get no
    update; ``base`` sees the layers only (as in ``layca``)."""
    base = base or optax.identity()

    def layers(tree) -> list:
        return [x for x in jax.tree.leaves(tree) if jnp.ndim(x) >= 2]

    def update_fn(grads, state, params):
        ws = layers(params)
        ds, state = base.update(layers(grads), state, ws)
        new = iter(staged_updates(ds, ws, mode, learning_rate, eps))
        rotate = lambda w: next(new) if w.ndim >= 2 else jnp.zeros_like(w)
        return jax.tree.map(rotate, params), state

    return optax.GradientTransformation(
        lambda p: base.init(layers(p)), update_fn
    )


def prototypes() -> dict[str, optax.GradientTransformation]:
    """Each mode with the sgd, momentum and Adam bases."""
    bases = {
        "": None,
        "_momentum": optax.trace(0.9),
        "_adam": optax.scale_by_adam(),
    }
    return {
        f"{mode}{suffix}": staged_layca(0.1, base, mode)
        for mode in MODES
        for suffix, base in bases.items()
    }


def main() -> int:
    """The prototypes' H100 programs beside layca's, per workload."""
    import gpu_cost  # the CUDA topology: only in build/venv-gpu

    topo = gpu_cost.topology(os.path.join(gpu_cost.HERE, "h100_sxm.txtpb"))
    device = jax.sharding.SingleDeviceSharding(topo.devices[0])
    report = {}
    for workload in sys.argv[1:] or ["layer_1024x1024", "stack_48x1024x1024"]:
        shapes = gpu_cost.LAYERS.get(workload) or gpu_cost.TREES[workload]()
        txs = gpu_cost.candidates(["layca_momentum", "layca_adam", "layca"])
        txs |= prototypes()
        kernels = "--kernels" in os.environ.get("STAGED_FLAGS", "")
        results = gpu_cost.bench(txs, shapes, device, kernels)
        n = sum(map(math.prod, shapes.values()))
        title = f"{workload}: {n / 1e6:.1f}M params, {len(shapes)} leaves"
        gpu_cost.print_table(title, results, sharded=False)
        report[workload] = results
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
