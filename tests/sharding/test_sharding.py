"""Layca on 8 virtual CPU devices: jit with NamedSharding, and shard_map.

Every sharded run is compared with the same run on one device (float32 to
1e-5 relative over 20 steps, float64 to 1e-12), keeps its inputs'
shardings, and its compiled HLO may only all-reduce per-layer values: no
all-gather, reduce-scatter, all-to-all or collective-permute, each
all-reduce operand one layer's sums (a scalar, or one value per slice with
`axis`), and a bounded number of values per norm and step.
"""

import contextlib
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import layca_optax
from layca_optax import psum_layer_sums as psum_sums


CPUS = jax.devices("cpu")
STEPS = 20
SHAPES = {
    "Conv_0": {"kernel": (3, 8, 16)},  # FSDP splits its output axis
    "Dense_0": {"kernel": (64, 32), "bias": (32,)},  # FSDP: its input axis
}
MIXED = {  # for the recipes: split over "data" only, and never split
    "Head": {"kernel": (16, 5)},
    "Small": {"kernel": (3, 5)},
}
# (mesh shape, mesh axes, fsdp axis, tensor axis)
SHARDINGS = {
    "replicated": ((8,), ("data",), None, None),
    "fsdp": ((8,), ("data",), "data", None),
    "tensor": ((8,), ("model",), None, "model"),
    "2d": ((4, 2), ("data", "model"), "data", "model"),
}
AXES = {"whole": None, "fan_in": layca_optax.fan_in_axes}
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def mesh_of(shape, names, kind=jax.sharding.AxisType.Auto):
    assert len(CPUS) >= 8, "tests/conftest.py must set 8 CPU devices"
    devices = np.array(CPUS[: math.prod(shape)]).reshape(shape)
    return jax.sharding.Mesh(devices, names, axis_types=(kind,) * len(shape))


def random_tree(seed, dtype, shapes=None):
    """NumPy arrays (on the host: placing them compiles nothing)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: rng.normal(size=s).astype(dtype),
        SHAPES if shapes is None else shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


@functools.cache
def initial_state(kind, axis_name, dtype):
    """``tx.init`` of the params, on the host."""
    with jax.enable_x64(dtype == "float64"):
        tx = optimizer(kind, AXES[axis_name])
        return jax.device_get(tx.init(random_tree(0, dtype)))


def placed_state(kind, axis_name, dtype, params):
    """The initial state, placed as the params' shardings imply."""
    tx = optimizer(kind, AXES[axis_name])
    shardings = layca_optax.sharding.state_shardings(tx, params)
    return jax.device_put(initial_state(kind, axis_name, dtype), shardings)


def grad_fn(params, targets):
    """The gradients of ``||w - t||^2 / 2``: no cross-device work, and
    rounding differences do not grow over the steps."""
    return jax.tree.map(lambda w, t: w - t, params, targets)


@functools.cache
def optimizer(kind, axis):
    """``"fused"``: the default path with momentum and monitoring;
    ``"chain"``: the chain of primitives."""
    if kind == "chain":
        return layca_optax.layca(0.02, axis=axis, fused=False)
    fused = layca_optax.layca(
        0.02, base=optax.trace(0.9), other=optax.sgd(0.01), axis=axis
    )
    track = layca_optax.track_rotation(axis=axis, reference="exact")
    return optax.chain(fused, track)


def make_run(tx, monitored, psum=None):
    """20 steps under ``lax.scan``; the per-step metrics are stacked.

    ``psum``: inside ``jax.shard_map``, the mesh axes of Layca's sums and
    of the (whole-layer) metrics' sums, for :func:`psum_layer_sums`.
    """
    over = lambda names: (
        contextlib.nullcontext() if psum is None else psum_sums(names)
    )

    def run(params, state, targets):
        def step(carry, _):
            params, state = carry
            with over(psum and psum[0]):
                grads = grad_fn(params, targets)
                updates, state = tx.update(grads, state, params)
            new = optax.apply_updates(params, updates)
            with over(psum and psum[1]):
                metrics = layca_optax.rotation_metrics(new, params)
            if monitored:
                metrics |= layca_optax.tracked_metrics(state)
            return (new, state), metrics

        return jax.lax.scan(step, (params, state), None, length=STEPS)

    return run


def compile_fast(fn, *args):
    """``jax.jit(fn)`` compiled for ``args`` at the lowest LLVM
    optimization level: the same HLO (and collectives), compiled several
    times faster."""
    lowered = jax.jit(fn).lower(*args)
    return lowered.compile({"xla_backend_optimization_level": 0})


@functools.cache
def single_device(kind, axis_name, dtype):
    """The reference: the same run on one device, as NumPy arrays."""
    tx = optimizer(kind, AXES[axis_name])
    with jax.enable_x64(dtype == "float64"):
        put = lambda t: jax.device_put(t, CPUS[0])
        params, targets = put(random_tree(0, dtype)), put(random_tree(1, dtype))
        state = put(initial_state(kind, axis_name, dtype))
        run = compile_fast(
            make_run(tx, kind == "fused"), params, state, targets
        )
        return jax.tree.map(np.asarray, run(params, state, targets))


COLLECTIVE = re.compile(
    r"=\s*(\(.*?\)|\S+)\s+(all-gather|all-reduce|reduce-scatter|all-to-all"
    r"|collective-permute)(-start)?\("
)
SHAPE = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")


def _computations(hlo):
    """{name: [lines]} of the computations of ``hlo``'s text."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"(?:ENTRY )?(%?[\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            name = head.group(1).lstrip("%")
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    return comps


def collectives(hlo):
    """[(op, [elements of each operand])] of the collectives in ``hlo``."""
    found = []
    for lines in _computations(hlo).values():
        for line in lines:
            m = COLLECTIVE.search(line)
            if m:
                sizes = [
                    math.prod(int(d) for d in dims.split(",") if d)
                    for dims in SHAPE.findall(m.group(1))
                ]
                found.append((m.group(2), sizes))
    return found


def norms(params, axis):
    """The number of per-layer (or, with ``axis``, per-slice) norms of
    each layer of ``params``."""
    counts = []
    for leaf in jax.tree.leaves(params):
        if leaf.ndim >= 2:
            axes = range(leaf.ndim) if axis is None else axis(leaf)
            counts.append(leaf.size // math.prod(leaf.shape[a] for a in axes))
    return counts


def check_collectives(hlo, params, axis):
    """Only per-layer values cross devices, else fail loudly. Returns the
    number of all-reduces and of values they reduce (per step: the loop
    body is in the HLO once)."""
    found = collectives(hlo)
    assert " conditional(" not in hlo, "a conditional in the step"
    others = [(op, s) for op, s in found if op != "all-reduce"]
    assert not others, f"collectives other than all-reduce: {others}"
    # Each operand is one layer's sums: a scalar (one per slice with
    # `axis`), never an array the size of a layer.
    counts = norms(params, axis)
    largest = max((max(s) for _, s in found), default=0)
    assert largest <= max(counts), (
        f"an all-reduce operand of {largest} values; a layer has at most "
        f"{max(counts)} norms: {found}"
    )
    # Per step, norm and mesh axis reduced over: Layca's 3 sums or the
    # chain's 7, 5 for the monitor's rate and 5 for its cosine distance, 5
    # for the metrics (14 per mesh axis on the 2-D mesh: 28 per norm).
    # The bound leaves room but grows with the norms only.
    total = sum(sum(s) for _, s in found)
    assert total <= 40 * sum(counts), f"{total} values all-reduced per step"
    return len(found), total


def assert_close(got, want, rtol):
    flat_got, tree_got = jax.tree_util.tree_flatten_with_path(got)
    flat_want, tree_want = jax.tree_util.tree_flatten_with_path(want)
    assert tree_got == tree_want
    for (path, a), (_, b) in zip(flat_got, flat_want, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = np.max(np.abs(b), initial=0.0)
        tol = rtol
        if "radial" in jax.tree_util.keystr(path) and rtol > 1e-8:
            # The radial part of a Layca update, (cos(theta) - 1) ||w||,
            # comes from <u, w> = <w_new, w> - ||w||^2: float32 resolves
            # it to about 1e-4 relative, on one device or on eight.
            tol = 1e-3
        np.testing.assert_allclose(
            a, b, rtol=tol, atol=tol * scale, err_msg=str(path)
        )


def assert_same_shardings(got, want):
    """Same shardings, leaf by leaf (arrays or shardings)."""
    sharding = lambda x: getattr(x, "sharding", x)
    leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    for a, b in zip(*leaves, strict=True):
        ndim = len(a.shape)
        assert sharding(a).is_equivalent_to(sharding(b), ndim), (
            sharding(a),
            sharding(b),
        )


def place(sharding, dtype, mesh_kind=jax.sharding.AxisType.Auto):
    """Params and targets placed by a sharding recipe."""
    shape, names, fsdp, tensor = SHARDINGS[sharding]
    mesh = mesh_of(shape, names, mesh_kind)
    tree = random_tree(0, dtype)
    shardings = layca_optax.sharding.param_shardings(
        tree, mesh, fsdp=fsdp, tensor=tensor
    )
    params = jax.device_put(tree, shardings)
    return params, jax.device_put(random_tree(1, dtype), shardings)


# Every sharding in float32, with and without `axis`; float64 and the chain
# of primitives on the 2-D mesh (the recipes combined), to keep compiles
# few.
JIT_CASES = [
    ("fused", sharding, axis_name, "float32")
    for sharding in SHARDINGS
    for axis_name in AXES
] + [
    (kind, "2d", axis_name, dtype)
    for kind, dtype in [("fused", "float64"), ("chain", "float32")]
    for axis_name in AXES
]


@pytest.mark.parametrize(("kind", "sharding", "axis_name", "dtype"), JIT_CASES)
@pytest.mark.slow  # 25 s on 2 cores: out of `make test-fast`
def test_jit_with_named_sharding(kind, sharding, axis_name, dtype):
    axis = AXES[axis_name]
    tx = optimizer(kind, axis)
    with jax.enable_x64(dtype == "float64"):
        params, targets = place(sharding, dtype)
        state = placed_state(kind, axis_name, dtype, params)
        run = make_run(tx, kind == "fused")
        compiled = compile_fast(run, params, state, targets)
        (new_params, new_state), metrics = compiled(params, state, targets)
    want = single_device(kind, axis_name, dtype)
    assert_close(((new_params, new_state), metrics), want, TOLERANCE[dtype])
    # No silent replication: params and state keep their shardings, and
    # the momentum and the monitor's copy are split as their layers.
    assert_same_shardings((new_params, new_state), (params, state))
    for field in ("trace", "reference") if kind == "fused" else ():
        copy = optax.tree.get(state, field)
        for name in ("Conv_0", "Dense_0"):
            spec = params[name]["kernel"].sharding.spec
            assert copy[name]["kernel"].sharding.spec == spec
    check_collectives(compiled.as_text(), params, axis)


@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_explicit_mesh_keeps_shardings():
    """With explicit axis types (``jax.make_mesh``'s default), plain
    ``jax.jit(tx.init)`` places the state as :func:`state_shardings` says,
    and the steps keep every sharding."""
    tx = optimizer("fused", layca_optax.fan_in_axes)
    params, targets = place("2d", "float32", jax.sharding.AxisType.Explicit)
    state = jax.jit(tx.init)(params)
    assert_same_shardings(
        state, layca_optax.sharding.state_shardings(tx, params)
    )
    run = compile_fast(make_run(tx, True), params, state, targets)
    (new_params, new_state), metrics = run(params, state, targets)
    assert_same_shardings((new_params, new_state), (params, state))
    want = single_device("fused", "fan_in", "float32")
    assert_close(((new_params, new_state), metrics), want, 1e-5)


def test_param_shardings_recipes():
    mesh = mesh_of((4, 2), ("data", "model"))
    tree = random_tree(0, "float32", SHAPES | MIXED)
    specs = lambda **kw: jax.tree.map(
        lambda s: s.spec, layca_optax.sharding.param_shardings(tree, mesh, **kw)
    )
    assert specs()["Dense_0"]["kernel"] == P(None, None)
    fsdp = specs(fsdp="data")
    assert fsdp["Conv_0"]["kernel"] == P(None, None, "data")
    assert fsdp["Dense_0"]["kernel"] == P("data", None)
    assert fsdp["Dense_0"]["bias"] == P("data")
    assert fsdp["Small"]["kernel"] == P(None, None)
    tensor = specs(tensor="model")
    assert tensor["Dense_0"]["kernel"] == P(None, "model")
    assert tensor["Dense_0"]["bias"] == P(None)  # vectors: not split
    both = specs(fsdp="data", tensor="model")
    assert both["Conv_0"]["kernel"] == P(None, "data", "model")
    assert both["Head"]["kernel"] == P("data", None)
    assert both["Small"]["kernel"] == P(None, None)
    two = specs(fsdp=("data", "model"))
    assert two["Dense_0"]["kernel"] == P(("data", "model"), None)


# --- inside jax.shard_map ------------------------------------------------


def _hook_installed():
    """Whether the reductions call ``_sharding.complete_sum`` (a psum
    appears in a shard_map-ped ``layer_rotation``)."""
    mesh = mesh_of((2,), ("data",))
    w = jnp.ones((4, 2))

    def body(w):
        with layca_optax.psum_layer_sums("data"):
            return layca_optax.layer_rotation(w, w)

    fn = jax.shard_map(
        body, mesh=mesh, in_specs=P("data"), out_specs=P(), check_vma=False
    )
    return "psum" in str(jax.make_jaxpr(fn)(w))


needs_hook = pytest.mark.skipif(
    not _hook_installed(),
    reason="the reductions in _sums/monitor do not call "
    "layca_optax.sharding._shardings.complete_sum yet",
)

# sharding on the 2-D mesh, axis, the axes Layca's sums run over,
# check_vma. "fsdp" splits the layers over "data" only: they are replicated
# over "model", which the sums must skip. Tensor parallelism splits the
# slices (output units): with `axis` only the fsdp axis is summed over.
SHARD_MAP_CASES = [
    ("fsdp", "whole", ("data", "model"), True),
    ("2d", "whole", ("data", "model"), True),
    ("2d", "fan_in", "data", True),
    # without check_vma every layer must be split over every named axis
    ("2d", "whole", ("data", "model"), False),
]


@needs_hook
@pytest.mark.parametrize(
    ("sharding", "axis_name", "names", "check_vma"), SHARD_MAP_CASES
)
def test_shard_map(sharding, axis_name, names, check_vma):
    """The jit test's 20 steps inside ``jax.shard_map``, with explicit
    psums of the per-layer sums: same results as one device."""
    _, _, fsdp, tensor = SHARDINGS[sharding]
    mesh = mesh_of((4, 2), ("data", "model"))
    tx = optimizer("fused", AXES[axis_name])
    tree, targets = random_tree(0, "float32"), random_tree(1, "float32")
    shardings = layca_optax.sharding.param_shardings(
        tree, mesh, fsdp=fsdp, tensor=tensor
    )
    params, targets = jax.device_put((tree, targets), (shardings,) * 2)
    state = placed_state("fused", axis_name, "float32", params)
    specs, state_specs = jax.tree.map(
        lambda a: a.sharding.spec, (params, state)
    )
    run = jax.shard_map(
        make_run(tx, False, psum=(names, mesh.axis_names)),
        mesh=mesh,
        in_specs=(specs, state_specs, specs),
        out_specs=((specs, state_specs), P()),
        check_vma=check_vma,
    )
    compiled = compile_fast(run, params, state, targets)
    (new_params, new_state), metrics = compiled(params, state, targets)
    (want_params, want_state), want_metrics = single_device(
        "fused", axis_name, "float32"
    )
    want_metrics = {k: want_metrics[k] for k in metrics}
    assert_close(
        ((new_params, new_state), metrics),
        ((want_params, want_state), want_metrics),
        1e-5,
    )
    assert_same_shardings((new_params, new_state), (params, state))
    check_collectives(compiled.as_text(), params, AXES[axis_name])


def test_psum_layer_sums_outside_shard_map_is_a_no_op():
    w = {"w": jnp.arange(8.0).reshape(4, 2) + 1}
    with layca_optax.psum_layer_sums("data"):
        got = jax.jit(layca_optax.rotation_metrics)(
            w, jax.tree.map(jnp.flip, w)
        )
    want = jax.jit(layca_optax.rotation_metrics)(w, jax.tree.map(jnp.flip, w))
    assert_close(got, want, 0)


@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_sharded_example_matches_one_device():
    """The example (data parallel + FSDP over all 8 devices) follows the
    single-device loss curve step by step (a smaller CNN, a few steps, and
    MNIST-1D-shaped random data, to keep it fast)."""
    from layca_optax.experiments import CNN, Dataset
    from layca_optax.experiments.demo import sharded

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1088, 40, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=1088).astype(np.int32)
    data = Dataset(x[:1024], y[:1024], x[1024:], y[1024:], "random", 10)
    model = CNN(features=(8,), strides=(2,))
    init = jax.jit(lambda key: model.init(key, x[:1], train=False))
    variables = init(jax.random.key(0, impl="rbg"))  # compiles fast
    kwargs = dict(
        epochs=1, model=model, data=data, max_steps=6, variables=variables
    )
    many = sharded.train(devices=CPUS[:8], **kwargs)
    one = sharded.train(devices=CPUS[:1], **kwargs)
    assert many["devices"] == 8 and len(many["loss"]) == 6
    np.testing.assert_allclose(many["loss"], one["loss"], rtol=1e-5)
    for name, value in one["rotation"].items():
        np.testing.assert_allclose(many["rotation"][name], value, rtol=1e-4)
