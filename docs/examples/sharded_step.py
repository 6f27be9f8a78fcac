"""A sharded Layca train step: data parallel + FSDP + tensor parallel.

Params, optimizer state and batches are placed on a ("data", "model") mesh
of all devices with ``NamedSharding``; the step is a ``jax.jit`` with those
shardings in and out, written as for one device. It checks that each step
turns every layer by exactly arctan(lr), as on one device. On a CPU it runs
on 8 virtual devices (set below, before JAX starts). See docs/multihost.md.

    python docs/examples/sharded_step.py --steps 20
"""

import os


FLAG = "--xla_force_host_platform_device_count"  # on CPU, 8 devices:
if FLAG not in os.environ.get("XLA_FLAGS", ""):  # unless already set
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FLAG}=8"

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import layca_optax  # noqa: E402


SIZES = [("dense1", 64, 256), ("dense2", 256, 256), ("out", 256, 10)]


def init_params(key):
    keys = jax.random.split(key, len(SIZES))
    return {
        name: {
            "kernel": jax.random.normal(k, (d_in, d_out)) / np.sqrt(d_in),
            "bias": jnp.zeros(d_out),
        }
        for k, (name, d_in, d_out) in zip(keys, SIZES, strict=True)
    }


def forward(params, x):
    for name, _, _ in SIZES:
        x = x @ params[name]["kernel"] + params[name]["bias"]
        x = jax.nn.relu(x) if name != "out" else x
    return x


def make_step(tx):
    def step(params, opt_state, x, y):
        def loss_fn(params):
            logits = forward(params, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return loss.mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # tan of the angle each layer turned (sums over the sharded layers).
        rates = layca_optax.rotation_rate(new_params, params)
        return new_params, opt_state, loss, rates

    return step


def show(title, tree):
    print(f"{title} (shape, sharding, shape on one device)")
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        spec, shard = leaf.sharding.spec, leaf.sharding.shard_shape(leaf.shape)
        print(f"  {layca_optax.path_str(path):52s} {leaf.shape} {spec} {shard}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3**-3)  # tan(angle)
    args = parser.parse_args()

    n = jax.device_count()
    w = 2 if n % 2 == 0 else 1  # the width of the tensor-parallel axis
    auto = (jax.sharding.AxisType.Auto,) * 2  # XLA shards the activations
    mesh = jax.make_mesh((n // w, w), ("data", "model"), axis_types=auto)
    print(f"mesh {dict(mesh.shape)} of {n} {jax.devices()[0].platform} devices")

    init = init_params(jax.random.key(0))
    param_sh = layca_optax.sharding.param_shardings(
        init, mesh, fsdp="data", tensor="model"
    )
    params = jax.device_put(init, param_sh)
    init = jax.device_get(init)  # a host copy: the step donates `params`
    show("params", params)

    tx = layca_optax.layca(
        args.lr,
        base=optax.trace(0.9),  # the direction of SGD with momentum
        mask=layca_optax.default_layer_mask,  # the kernels are layers
        other=optax.sgd(0.1, momentum=0.9),  # for the biases
    )
    state_sh = layca_optax.sharding.state_shardings(tx, params)  # as the params
    opt_state = jax.jit(tx.init, out_shardings=state_sh)(params)
    show("optimizer state", opt_state)

    batch = NamedSharding(mesh, P("data"))  # split the batch dimension
    replicated = NamedSharding(mesh, P())
    step = make_step(tx)
    sharded_step = jax.jit(
        step,
        in_shardings=(param_sh, state_sh, batch, batch),
        out_shardings=(param_sh, state_sh, replicated, replicated),
        donate_argnums=(0, 1),  # update params and state in place
    )

    teacher = init_params(jax.random.key(1))  # labels random inputs
    rng = np.random.default_rng(0)
    worst = 0.0
    for i in range(1, args.steps + 1):
        x = rng.standard_normal((32 * mesh.shape["data"], 64), np.float32)
        y = np.asarray(jnp.argmax(forward(teacher, x), -1))
        xy = jax.device_put((x, y), batch)
        params, opt_state, loss, rates = sharded_step(params, opt_state, *xy)
        if i == 1:  # the same step on one device, for comparison
            one = jax.jit(step)(init, jax.jit(tx.init)(init), x, y)[0]
            diff = jax.tree.map(lambda a, b: np.abs(a - b).max(), params, one)
            gap = float(max(jax.tree.leaves(diff)))
            print(f"step 1, sharded vs one device: max difference {gap:.1e}")
        # The Layca invariant: tan(angle) == lr for every layer, every step.
        for rate in jax.tree.leaves(rates):
            worst = max(worst, abs(float(rate) / args.lr - 1))
        if i % 5 == 0 or i == 1:
            print(f"step {i:3d}  loss {float(loss):.4f}")

    same = jax.tree.map(lambda a, s: a.sharding == s, params, param_sh)
    rotation = jax.jit(layca_optax.rotation_metrics)(params, init)
    for key, value in rotation.items():
        print(f"{key:24s} {float(value):.4f} (cosine distance to init)")
    ok = worst < 1e-4 and gap < 1e-5 and all(jax.tree.leaves(same))
    print(
        f"invariant {'OK' if ok else 'FAILED'}: each layer turned by "
        f"arctan(lr) = {np.degrees(np.arctan(args.lr)):.4f} degrees a step "
        f"(max relative error of tan: {worst:.1e})"
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
