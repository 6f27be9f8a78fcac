"""Logging layer rotation from a Flax NNX loop: one CSV row per step.

An MLP on scikit-learn's digits whose hidden layers are one stacked
``(depth, width, width)`` kernel (as a scanned model keeps them), trained
with Adam + Layca; ``track_rotation()`` last in the chain records, inside
each step, every layer's rotation rate and cosine distance to init, one
value per stacked layer with ``axis=(-2, -1)``.
``layca_optax.scalar_metrics`` turns what ``tracked_metrics`` returns
(arrays for the stacked kernel) into a flat ``{name: float}`` dict,
``blocks/0``, ``blocks/1``... for the stacked layers, which any logger
takes: here ``csv.DictWriter``.

    python docs/examples/nnx_logging.py --csv rotation.csv
    python docs/examples/nnx_logging.py --steps 5 --csv /tmp/r.csv  # quick
"""

import argparse
import csv

import jax
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import layca_optax


class StackedMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, depth: int = 3, width: int = 64):
        self.embed = nnx.Linear(64, width, rngs=rngs)
        init = nnx.initializers.lecun_normal(batch_axis=0)
        # The hidden layers, stacked: one leaf, `depth` layers.
        self.blocks = nnx.Param(init(rngs.params(), (depth, width, width)))
        self.out = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.embed(x))
        h, _ = jax.lax.scan(
            lambda h, w: (h + nnx.relu(h @ w), None), h, self.blocks[...]
        )
        return self.out(h)


def loss_fn(model, x, y):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    # tracked_metrics reads the nnx.Optimizer itself (or nnx.state of it):
    # per layer, arrays of shape (depth,) for the stacked kernel.
    return {"loss": loss, **layca_optax.tracked_metrics(optimizer)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3**-4)
    parser.add_argument("--csv", default="nnx_logging.csv", metavar="PATH")
    args = parser.parse_args()

    digits = load_digits()  # 1797 8x8 images: no download
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)

    axis = (-2, -1)  # one norm per stacked layer; a 2-D kernel is one layer
    model = StackedMLP(nnx.Rngs(0))
    tx = optax.chain(
        layca_optax.layca(
            args.lr,
            base=optax.scale_by_adam(),
            axis=axis,
            other=optax.adam(1e-3),  # the biases
        ),
        layca_optax.track_rotation(axis=axis, reference="exact"),  # last
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    rng = np.random.default_rng(1)
    with open(args.csv, "w", newline="") as f:
        writer = None
        for step in range(1, args.steps + 1):
            idx = rng.choice(len(x), args.batch_size, replace=False)
            metrics = train_step(model, optimizer, x[idx], y[idx])
            row = {"step": step, **layca_optax.scalar_metrics(metrics)}
            if writer is None:  # the first row's names are the columns
                writer = csv.DictWriter(f, list(row))
                writer.writeheader()
            writer.writerow(row)
    print(f"wrote {args.steps} rows x {len(row)} columns to {args.csv}")
    print(f"optimizer step count: {int(optimizer.step[...])}")
    print(f"last loss: {row['loss']:.4f}")

    # The same metrics, read outside the step from nnx.state(optimizer).
    state = layca_optax.scalar_metrics(
        layca_optax.tracked_metrics(nnx.state(optimizer))
    )
    same = state == {k: v for k, v in row.items() if k.startswith("track/")}
    print(f"nnx.state(optimizer) gives the last row's values: {same}")
    print("per layer: tan(angle) of the last step, cosine distance to init")
    for name in [k.removeprefix("track/rate/") for k in state if "/rate/" in k]:
        rate, cosine = (
            state[f"track/rate/{name}"],
            state[f"track/cosine/{name}"],
        )
        print(f"  {name:12s} {rate:.3e} {cosine:.4f}")


if __name__ == "__main__":
    main()
