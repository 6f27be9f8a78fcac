"""Layca in a Flax NNX training loop: an MLP on scikit-learn's digits.

Layca turns every kernel by exactly arctan(learning rate) per step, in the
direction Adam proposes (``base=optax.scale_by_adam()``); the biases get
plain Adam (``other=``). The loop records each layer's rotation (cosine
distance of its kernel to the initial one, the paper's layer rotation)
once per epoch, and the per-step rate tracked inside the optimizer.

    python docs/examples/nnx_loop.py
    python docs/examples/nnx_loop.py --epochs 2 --steps 5  # a quick check
    python docs/examples/nnx_loop.py --plot rotation.png   # needs matplotlib
"""

import argparse

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import layca_optax


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(64, 256, rngs=rngs)
        self.hidden2 = nnx.Linear(256, 256, rngs=rngs)
        self.out = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.hidden1(x))
        x = nnx.relu(self.hidden2(x))
        return self.out(x)


def loss_fn(model, x, y):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)  # passes the params to Layca
    # What track_rotation recorded for this step: per layer, the tangent of
    # the angle it turned ("track/rate/..."), and more (see its docs).
    return loss, layca_optax.tracked_metrics(optimizer.opt_state)


@nnx.jit
def accuracy(model, x, y):
    return jnp.mean(jnp.argmax(model(x), -1) == y)


def params_of(model):
    """The model's parameters as a pytree of arrays (a copy to keep)."""
    return nnx.as_pure(nnx.state(model, nnx.Param))  # flax 0.12.0: nnx.pure


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--steps",
        type=int,
        help="steps per epoch (default and at most: one pass over the data)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3**-4)
    parser.add_argument("--plot", metavar="PNG", help="save the curves here")
    args = parser.parse_args()

    # 1797 8x8 images of digits, shipped with scikit-learn: no download.
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    x_test, y_test = jnp.asarray(x[test]), jnp.asarray(y[test])

    one_pass = len(train) // args.batch_size
    steps = min(args.steps or one_pass, one_pass)
    # Each step turns each kernel by arctan(schedule(step)): lr down to lr/10.
    schedule = optax.cosine_decay_schedule(
        args.lr, args.epochs * steps, alpha=0.1
    )
    model = MLP(nnx.Rngs(0))
    tx = optax.chain(
        layca_optax.layca(
            schedule,
            base=optax.scale_by_adam(),  # a direction: no lr, no sign flip
            mask=layca_optax.default_layer_mask,  # the kernels are layers
            other=optax.adam(1e-3),  # for the rest: the biases
        ),
        layca_optax.track_rotation(),  # last in the chain: records, no-op
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    init_params = params_of(model)  # kept to measure the rotation

    history = layca_optax.RotationHistory(unit="epoch")
    rng = np.random.default_rng(1)
    for epoch in range(1, args.epochs + 1):
        batches = rng.permutation(train)[: steps * args.batch_size]
        for idx in batches.reshape(steps, args.batch_size):
            loss, tracked = train_step(model, optimizer, x[idx], y[idx])
        rotation = layca_optax.rotation_metrics(params_of(model), init_params)
        history.append(epoch, rotation)
        acc = accuracy(model, x_test, y_test)
        print(
            f"epoch {epoch:3d}  loss {float(loss):.4f}  "
            f"test accuracy {float(acc):.4f}"
        )

    print(f"test accuracy: {float(acc):.4f}")
    last = float(schedule(args.epochs * steps - 1))
    print(f"last step's tan(angle) per layer (learning rate {last:.2e}):")
    for key, rate in tracked.items():
        if key.startswith("track/rate/"):
            print(f"  {key.removeprefix('track/rate/'):16s} {float(rate):.2e}")
    print("final rotation (cosine distance to init) per layer:")
    for layer in history.layers("rotation/"):
        value = history.as_array(f"rotation/{layer}")[-1]
        print(f"  rotation {layer:16s} {value:.4f}")

    if args.plot:
        forward = ["hidden1/kernel", "hidden2/kernel", "out/kernel"]
        fig = layca_optax.plot_rotation_curves(
            history, layers=forward, title=f"Adam + Layca, lr {args.lr:.4f}"
        )
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
