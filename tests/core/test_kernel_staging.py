"""The GPU program's forms (issue 27 part 2), checked on the CPU.

On GPUs a layer's sums are one variadic reduction and the per-layer map is
staged (each layer's sums, every layer's coefficients at once, then each
layer's elementwise pass); elsewhere the per-leaf program is kept.
``_sums.gpu_forms(True)`` forces the GPU forms on the CPU: their results
equal the per-leaf ones to float32 rounding, their derivatives too, and
the CPU program has no conditional. The H100
program's kernel counts and traffic run in ``build/venv-gpu`` (``make
bench-gpu``), skipped without it.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from layca_optax import _sums as sm


ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
GPU_PYTHON = os.path.join(ROOT, "build", "venv-gpu", "bin", "python")

SHAPES = {
    "a": (64, 64),
    "b": (3, 3, 8, 16),
    "c": (40, 64),
    "d": (64, 64),
    "bias": (16,),  # frozen
}


def _tree(seed: int, dtype=jnp.float32) -> dict:
    keys = jax.random.split(jax.random.key(seed), len(SHAPES))
    return {
        k: (3.0 * jax.random.normal(kk, s)).astype(dtype)
        for kk, (k, s) in zip(keys, SHAPES.items(), strict=True)
    }


def _fresh_jit(fn):
    """A new jitted function (jit's trace cache does not see gpu_forms)."""
    return jax.jit(lambda *args: fn(*args))


def _both(fn, *args):
    """``fn(*args)`` under jit with the per-leaf and the GPU forms."""
    out = []
    for on in (False, True):
        with sm.gpu_forms(on):
            out.append(_fresh_jit(fn)(*args))
    return out


# XLA:CPU sums a variadic reduction sequentially: relative errors of about
# sqrt(n) eps in the forced GPU forms' sums (4e-6 measured on 4096 entries;
# a GPU reduces it as a tree, as its other sums).
def _close(a, b, rtol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x64, y64 = (np.asarray(v, np.float64) for v in (x, y))
        scale = max(np.max(np.abs(x64)), 1e-30)
        assert np.max(np.abs(x64 - y64)) <= rtol * scale, (x64, y64)


@pytest.mark.parametrize(
    "make",
    [
        lambda: layca_optax.layca(0.1),
        lambda: layca_optax.layca(0.3, optax.trace(0.9)),
        lambda: layca_optax.layca(
            optax.cosine_decay_schedule(0.2, 10),
            optax.scale_by_adam(),
            multipliers={"a": 1.0, "b": 2.0, "c": 0.5, "d": 1.0, "bias": 1},
        ),
        lambda: layca_optax.layca(0.1, axis=(-2, -1)),  # no scalar sums
        # The chain: projection, normalization and reprojection staged.
        lambda: layca_optax.layca(0.3, optax.trace(0.9), fused=False),
    ],
)
@pytest.mark.slow  # 10 s on 2 cores: out of `make test-fast`
def test_staged_step_equals_per_leaf(make):
    params, grads = _tree(0), _tree(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tx = make()
        state = tx.init(params)
    (u0, s0), (u1, s1) = _both(tx.update, grads, state, params)
    _close(u0, u1)
    _close(s0, s1)
    assert np.all(np.asarray(u1["bias"]) == 0)
    moved = np.abs(np.asarray(u1["a"])).max()
    assert moved > 0.01


@pytest.mark.parametrize(
    "make",
    [
        layca_optax.project_to_tangent,
        layca_optax.normalize_to_param_norm,
        layca_optax.reproject_to_sphere,
        lambda: layca_optax.radial_brake(0.25),
        lambda: layca_optax.hyperball(0.1, optax.scale_by_adam()),
        # Bases whose sums read a third array (the first moment).
        lambda: layca_optax.tangent_trace(0.9),
        lambda: layca_optax.tangent_trace(0.9, nesterov=True),
        lambda: layca_optax.scale_by_tangent_adam(),
        lambda: layca_optax.layca(0.1, layca_optax.tangent_trace(0.9)),
    ],
)
def test_staged_primitives_equal_per_leaf(make):
    # Each primitive registers its stages: the GPU forms stage its layers
    # (an optimization barrier between the sums and the coefficients) and
    # give the per-leaf results.
    params, grads = _tree(0), _tree(1)
    grads["a"] = grads["a"] + 0.5 * params["a"]  # outward: the brake acts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layca: the frozen bias
        tx = make()
        state = tx.init(params)
    _, state = tx.update(_tree(2), state, params)  # a nonzero momentum
    (u0, s0), (u1, s1) = _both(tx.update, grads, state, params)
    _close(u0, u1)
    _close(s0, s1)
    for on, staged in ((False, False), (True, True)):
        with sm.gpu_forms(on):
            step = jax.make_jaxpr(lambda *a: tx.update(*a))  # a fresh trace
            text = str(step(grads, state, params))
        assert ("optimization_barrier" in text) == staged
    assert not np.allclose(np.asarray(u1["a"]), np.asarray(grads["a"]))


def test_staged_bfloat16_layers_and_mixed_dtypes():
    params, grads = _tree(0), _tree(1)
    params["d"] = params["d"].astype(jnp.bfloat16)
    grads["d"] = grads["d"].astype(jnp.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tx = layca_optax.layca(0.1)
        state = tx.init(params)
    (u0, _), (u1, _) = _both(tx.update, grads, state, params)
    _close(
        {k: v for k, v in u0.items() if k != "d"},
        {k: v for k, v in u1.items() if k != "d"},
    )
    # The bfloat16 layer is rounded stochastically from float32 values that
    # differ by rounding: most entries land on the same neighbour.
    same = np.mean(np.asarray(u0["d"]) == np.asarray(u1["d"]))
    assert same > 0.99


def test_staged_metrics_equal_per_leaf():
    new, old = _tree(2), _tree(3)
    for fn in (layca_optax.rotation_metrics, layca_optax.rotation_rate):
        a, b = _both(fn, new, old)
        _close(a, b)


@pytest.mark.parametrize("axis", [None, layca_optax.fan_in_axes])
def test_staged_tracking_equals_per_leaf(axis):
    """track_rotation (no reference) staged as rotation_metrics: the same
    rate, radial ratio and norm as per leaf; with ``axis`` (no scalar
    sums) nothing is staged."""
    params, updates = _tree(4), _tree(5)
    updates = jax.tree.map(lambda u: 0.01 * u, updates)
    tx = layca_optax.track_rotation(axis=axis)
    state = tx.init(params)
    (u0, s0), (u1, s1) = _both(tx.update, updates, state, params)
    _close(u0, u1)
    _close(s0, s1)
    rates = np.asarray(s1.rotation_rate["a"])
    assert np.all(rates > 1e-4) and np.all(np.isfinite(rates))


def test_staged_derivatives_equal_per_leaf():
    params, grads = _tree(0), _tree(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tx = layca_optax.layca(0.2, optax.trace(0.9))
        state = tx.init(params)

    def loss(g):
        u, _ = tx.update(g, state, params)
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(u))

    a, b = _both(jax.grad(loss), grads)
    _close(a, b, rtol=1e-5)


def test_staged_step_under_vmap_equals_per_leaf():
    """A batch of steps (the partitioned reductions have no batching rule:
    under vmap they are the plain ones) equals the per-leaf batch."""
    params = jax.tree.map(lambda *x: jnp.stack(x), _tree(0), _tree(2))
    grads = jax.tree.map(lambda *x: jnp.stack(x), _tree(1), _tree(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tx = layca_optax.layca(0.3, optax.trace(0.9))
        state = jax.vmap(tx.init)(params)
    (u0, s0), (u1, s1) = _both(jax.vmap(tx.update), grads, state, params)
    _close(u0, u1)
    _close(s0, s1)
    metrics = _both(jax.vmap(layca_optax.rotation_metrics), params, grads)
    _close(*metrics)


def test_the_cpu_program_has_no_conditional():
    params, grads = _tree(0), _tree(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tx = layca_optax.layca(0.1, optax.scale_by_adam())
        state = tx.init(params)
    hlo = _fresh_jit(tx.update).lower(grads, state, params).compile()
    text = hlo.as_text()
    assert " conditional(" not in text, "a conditional in the step"
    # The CPU program is the per-leaf one: one sum per product.
    assert "reduce(" in text and "variadic" not in text


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(GPU_PYTHON), reason="no build/venv-gpu (make bench-gpu)"
)
def test_h100_kernels_and_traffic(tmp_path):
    out = tmp_path / "gpu_cost.json"
    cmd = [GPU_PYTHON, "benchmarks/gpu_cost.py"]
    cmd += ["--workloads", "stack_48x1024x1024", "--out", str(out)]
    cmd += ["--only", "layca", "layca_momentum", "layca_adam"]
    cmd += ["rotation_metrics", "track_rotation"]
    run = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())["results"]["stack_48x1024x1024"]
    # Arrays moved: the traffic floor (momentum and Adam's state written
    # in place, no copy), and kernels per layer.
    floors = {"layca": 5, "layca_momentum": 7, "layca_adam": 10}
    for name, floor in floors.items():
        assert results[name]["arrays_moved"] < floor + 0.02, name
        assert results[name]["kernels_per_leaf"] <= 3, name
        assert results[name]["kernels_by_op"].get("copy", 0) == 0, name
    # Two per layer (its sums' two reduction stages), and a few for all;
    # track_rotation's step adds the update's pass (fused across layers).
    assert results["rotation_metrics"]["kernels"] <= 2 * 48 + 8
    assert results["track_rotation"]["kernels"] <= 2 * 48 + 10


# Layers split over different mesh axes (FSDP, tensor, both, none), on 8
# CPU devices as a ("data", "model") 4x2 mesh.
SPLITS = {
    "fsdp": (("data", None), (64, 32)),
    "tensor": ((None, "model"), (48, 16)),
    "both": ((("data", "model"), None), (32, 24)),
    "none": ((None, None), (8, 16)),
}


def _sharded_tree(seed: int, mesh) -> dict:
    rng = np.random.default_rng(seed)
    return {
        name: jax.device_put(
            rng.normal(size=shape).astype(np.float32),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)),
        )
        for name, (spec, shape) in SPLITS.items()
    }


def _all_reduced(hlo: str) -> list[tuple[str, int]]:
    """``(op, values)`` for each collective of a compiled program."""
    found = []
    pattern = (
        r"=\s*(\(.*?\)|\S+)\s+(all-gather|all-reduce|reduce-scatter"
        r"|all-to-all|collective-permute)(-start)?\("
    )
    for shape, op, _ in re.findall(pattern, hlo):
        dims = re.findall(r"\[([\d,]*)\]", shape)
        values = sum(math.prod(int(d) for d in s.split(",") if d) for s in dims)
        found.append((op, values))
    return found


@pytest.mark.parametrize(
    "fn", ["layca_momentum", "rotation_metrics", "track_rotation", "tangent"]
)
@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_sharded_staged_sums_are_all_reduced_once(fn):
    """Under jit with NamedShardings the staged (GPU) step equals the
    per-leaf one, and only the layers' sums cross devices: one
    all-reduce per set of mesh axes that split layers, 3 (Layca,
    tangent_trace) or 5 (metrics, tracking) values per split layer, no
    gather (the partitioner gathered every device's partial sums of a
    variadic reduction)."""
    assert len(jax.devices("cpu")) >= 8, "tests/conftest.py sets 8 devices"
    devices = np.array(jax.devices("cpu")[:8]).reshape(4, 2)
    mesh = jax.sharding.Mesh(devices, ("data", "model"))
    params, other = _sharded_tree(0, mesh), _sharded_tree(1, mesh)
    if fn == "rotation_metrics":
        step, args, per_layer = layca_optax.rotation_metrics, (params, other), 5
    else:
        tx, per_layer = layca_optax.layca(0.1, optax.trace(0.9)), 3
        if fn == "track_rotation":
            tx, per_layer = layca_optax.track_rotation(), 5
        if fn == "tangent":  # three operands per layer: g, w, the momentum
            tx, per_layer = layca_optax.tangent_trace(0.9), 3
        state = tx.init(params)
        step, args = tx.update, (other, state, params)
    outs, texts = [], []
    for on in (False, True):
        with sm.gpu_forms(on):
            compiled = _fresh_jit(step).lower(*args).compile()
            texts.append(compiled.as_text())
            outs.append(compiled(*args))
    _close(outs[0], outs[1])
    found = _all_reduced(texts[1])
    assert {op for op, _ in found} == {"all-reduce"}, found
    # fsdp, tensor and both are split, each over its own set of axes.
    assert len(found) == 3, found
    assert sum(v for _, v in found) == 3 * per_layer, found
