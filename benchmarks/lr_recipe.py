"""Choosing Layca's learning rate from an AdamW run: a measured recipe.

A tiny transformer (pre-LayerNorm, one block, learned token and position
embeddings, width 32) learns ``a + b mod p`` (p = 47) from 80% of the
``p * p`` pairs, full batch, data generated here (no downloads, seeded); the
other 20% are the test set. The script:

1. trains AdamW (``--adamw-lr 1e-3``, ``--adamw-wd 1.0``, ``b1=0.9``,
   ``b2=0.98``: the usual setting for this task) and records
   ``rotation_rate(new, old)`` (tan of the angle each layer turned) at
   every step;
2. computes the recipe's Layca rate two ways:
   ``equilibrium_layca_learning_rate("adamw", ...)`` (the Kosson et al.
   steady state) and the median, over layers, of each layer's median
   rotation rate over the last quarter of the AdamW run (``measured``);
3. trains ``layca(rho, base=optax.scale_by_adam(b1, b2), mask=
   default_layer_mask, other=optax.adam(1e-3))`` for rho in
   recipe x {1/10, 1/3, 1, 3, 10}, the measured rate, and the fixed rates
   0.1 and 0.01, with the same steps and seeds (all runs of the sweep in
   one vmapped, jitted program), and prints the final train loss, train
   and test accuracies, and the first step (evaluated every 50) with 95%
   test accuracy.

The recipe rate is the equilibrium one; the measured one is printed next to
it. Usage::

    python benchmarks/lr_recipe.py [--steps 1000] [--seeds 0 1] \\
        [--out lr_recipe.json]

The table in ``docs/howto/learning_rate.md`` comes from the default run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax


class Transformer(nn.Module):
    """One pre-LayerNorm transformer block on ``(a, b, =)``, read at the
    last position. Only the output at ``=`` is used, so the block computes
    attention (4 heads) and the MLP for that position's query only (the
    same function as a full block read there, at a third of the cost)."""

    vocab: int
    dim: int = 64
    heads: int = 4

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab + 1, self.dim, name="tok")(tokens)
        pos = nn.Embed(tokens.shape[-1], self.dim, name="pos")
        x = x + pos(jnp.arange(tokens.shape[-1]))
        h = nn.LayerNorm(name="ln_attn")(x)
        attn = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, name="attn"
        )
        x = x[:, -1] + attn(h[:, -1:], h)[:, 0]
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.gelu(nn.Dense(4 * self.dim, name="mlp_in")(h))
        x = x + nn.Dense(self.dim, name="mlp_out")(h)
        x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.vocab, name="unembed")(x)


def make_data(p: int, train_fraction: float, seed: int):
    """All pairs ``(a, b, =)`` with label ``(a + b) % p``, split at random."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    x = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.int32)
    y = ((a + b) % p).astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n = int(round(train_fraction * len(y)))
    tr, te = order[:n], order[n:]
    return (jnp.asarray(x[tr]), jnp.asarray(y[tr])), (
        jnp.asarray(x[te]),
        jnp.asarray(y[te]),
    )


def make_train(
    model, make_tx, data, steps: int, eval_every: int, record_rates: bool
):
    """A jitted, vmapped full-batch training run: ``f(params, rho)`` with a
    leading run axis on both. ``make_tx(rho)`` builds the optimizer (rho may
    be traced). Each run returns the final train and test accuracies and
    loss, the test accuracy every ``eval_every`` steps, and (if
    ``record_rates``) each layer's rotation rate at every step."""
    (xtr, ytr), (xte, yte) = data

    def loss_fn(p):
        logits = model.apply(p, xtr)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, ytr
        ).mean()

    def accuracy(p, x, y):
        return jnp.mean(jnp.argmax(model.apply(p, x), -1) == y)

    def one(params, rho):
        tx = make_tx(rho)

        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = tx.update(g, s, p)
            new = optax.apply_updates(p, u)
            rates = None
            if record_rates:
                rates = layca_optax.rotation_rate(
                    new["params"],
                    p["params"],
                    mask=layca_optax.default_layer_mask,
                )
            return (new, s), (loss, rates)

        def chunk(carry, _):
            carry, out = jax.lax.scan(step, carry, None, length=eval_every)
            return carry, (out, accuracy(carry[0], xte, yte))

        (p, _), ((losses, rates), curve) = jax.lax.scan(
            chunk,
            (params, tx.init(params)),
            None,
            length=steps // eval_every,
        )
        return {
            "train_acc": accuracy(p, xtr, ytr),
            "test_acc": accuracy(p, xte, yte),
            "final_loss": losses[-1, -1],
            "finite": jnp.all(jnp.isfinite(losses)),
            "test_curve": curve,
            "rates": jax.tree.map(lambda r: r.reshape(-1), rates),
        }

    return jax.jit(jax.vmap(one))


def unstack(out: dict, n: int) -> list[dict]:
    """Per-run Python values from a vmapped run's outputs (no rates)."""
    out = jax.device_get({k: v for k, v in out.items() if k != "rates"})
    runs = []
    for i in range(n):
        r = {k: v[i] for k, v in out.items()}
        runs.append(
            {
                "train_acc": float(r["train_acc"]),
                "test_acc": float(r["test_acc"]),
                "final_loss": float(r["final_loss"]),
                "finite": bool(r["finite"]),
                "test_curve": [float(a) for a in r["test_curve"]],
            }
        )
    return runs


def steps_to(curve, every: int, level: float = 0.95):
    """First evaluated step with test accuracy >= level, or None."""
    for i, a in enumerate(curve):
        if a >= level:
            return (i + 1) * every
    return None


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "jax_backend": jax.default_backend(),
        "jax": jax.__version__,
        "optax": optax.__version__,
    }


def write_json(path: str, obj) -> None:
    """Atomic: a temp file in the same folder, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lr_recipe.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--p", type=int, default=47)
    parser.add_argument("--train-fraction", type=float, default=0.8)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--adamw-lr", type=float, default=1e-3)
    parser.add_argument("--adamw-wd", type=float, default=1.0)
    parser.add_argument("--b1", type=float, default=0.9)
    parser.add_argument("--b2", type=float, default=0.98)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.steps % args.eval_every:
        parser.error("--steps must be a multiple of --eval-every")

    start = time.perf_counter()
    info = machine()
    print(
        f"machine: nproc={info['nproc']}, cpu={info['cpu']}, "
        f"jax {info['jax']} on {info['jax_backend']}"
    )
    data = make_data(args.p, args.train_fraction, seed=1234)
    print(
        f"task: a+b mod {args.p}, {len(data[0][1])} train / "
        f"{len(data[1][1])} test pairs, full batch, {args.steps} steps, "
        f"seeds {args.seeds}"
    )
    model = Transformer(args.p, dim=args.dim)
    seeds = args.seeds
    inits = [model.init(jax.random.key(s), data[0][0][:1]) for s in seeds]
    mask = layca_optax.default_layer_mask(inits[0]["params"])
    layers = [
        layca_optax.path_str(k)
        for k, v in jax.tree_util.tree_leaves_with_path(mask)
        if v
    ]
    print(f"layers (rotated by Layca): {', '.join(layers)}")

    def stacked(n):
        """The seeds' initial params, repeated n times: (n * seeds, ...)."""
        return jax.tree.map(lambda *x: jnp.stack(x * n), *inits)

    # (a) AdamW, recording every layer's per-step rotation rate.
    def make_adamw(_):
        return optax.adamw(
            args.adamw_lr, b1=args.b1, b2=args.b2, weight_decay=args.adamw_wd
        )

    out = make_train(
        model, make_adamw, data, args.steps, args.eval_every, True
    )(stacked(1), jnp.zeros(len(seeds)))
    adamw_runs = unstack(out, len(seeds))
    tail = args.steps - args.steps // 4
    rates = [
        (layca_optax.path_str(k), np.asarray(v))
        for k, v in jax.tree_util.tree_leaves_with_path(out["rates"])
    ]
    measured_per_seed = []
    for i, (s, r) in enumerate(zip(seeds, adamw_runs, strict=True)):
        med = {name: float(np.median(v[i, tail:])) for name, v in rates}
        r["seed"] = s
        r["per_layer_median_rate"] = med
        measured_per_seed.append(float(np.median(list(med.values()))))
        print(
            f"adamw seed {s}: train {r['train_acc']:.3f} "
            f"test {r['test_acc']:.3f}, median rate over layers and the "
            f"last quarter {measured_per_seed[-1]:.4g}"
        )

    # (b) The recipe's rate, two ways.
    equilibrium = layca_optax.analysis.equilibrium_layca_learning_rate(
        "adamw",
        learning_rate=args.adamw_lr,
        weight_decay=args.adamw_wd,
        b1=args.b1,
    )
    measured = float(np.median(measured_per_seed))
    print(
        f"recipe: equilibrium_layca_learning_rate = {equilibrium:.4g}; "
        f"measured median rotation rate = {measured:.4g}"
    )

    # (c) Layca sweep around the recipe, plus the fixed 0.1 and 0.01: all
    # rates and seeds in one vmapped program.
    labels = {
        "recipe / 10": 0.1,
        "recipe / 3": 1 / 3,
        "recipe": 1.0,
        "recipe x 3": 3.0,
        "recipe x 10": 10.0,
    }
    rhos = {k: equilibrium * v for k, v in labels.items()}
    rhos["measured"] = measured
    rhos["0.1"] = 0.1
    rhos["0.01"] = 0.01

    def make_layca(rho):
        return layca_optax.layca(
            rho,
            base=optax.scale_by_adam(b1=args.b1, b2=args.b2),
            mask=layca_optax.default_layer_mask,
            other=optax.adam(1e-3, b1=args.b1, b2=args.b2),
        )

    rho_axis = jnp.repeat(jnp.array(list(rhos.values())), len(seeds))
    out = make_train(
        model, make_layca, data, args.steps, args.eval_every, False
    )(stacked(len(rhos)), rho_axis)
    runs = unstack(out, len(rho_axis))
    sweep = []
    for j, (label, rho) in enumerate(rhos.items()):
        group = runs[j * len(seeds) : (j + 1) * len(seeds)]
        for s, r in zip(seeds, group, strict=True):
            r["seed"] = s
        sweep.append({"label": label, "rho": rho, "runs": group})
    wall = time.perf_counter() - start

    def fmt(group, key):
        v = np.array([r[key] for r in group])
        return f"{v.mean():.3f}" + (
            f" ({v.min():.2f}-{v.max():.2f})" if len(v) > 1 else ""
        )

    def when(group):
        s = [steps_to(r["test_curve"], args.eval_every) for r in group]
        return ", ".join("-" if t is None else str(t) for t in s)

    print()
    print(
        "| optimizer | rate | train loss | train acc | test acc | "
        "steps to 95% test |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| AdamW lr {args.adamw_lr:g}, wd {args.adamw_wd:g} | "
        f"measured {measured:.4f} | {fmt(adamw_runs, 'final_loss')} | "
        f"{fmt(adamw_runs, 'train_acc')} | "
        f"{fmt(adamw_runs, 'test_acc')} | {when(adamw_runs)} |"
    )
    for row in sweep:
        print(
            f"| Layca + Adam, {row['label']} | {row['rho']:.4f} | "
            f"{fmt(row['runs'], 'final_loss')} | "
            f"{fmt(row['runs'], 'train_acc')} | "
            f"{fmt(row['runs'], 'test_acc')} | {when(row['runs'])} |"
        )
    print(f"\nwall time: {wall:.0f} s (nproc={info['nproc']}, {info['cpu']})")

    if args.out:
        write_json(
            args.out,
            {
                "args": vars(args),
                "machine": info,
                "wall_time_s": wall,
                "layers": layers,
                "adamw": {
                    "runs": adamw_runs,
                    "measured_rate_per_seed": measured_per_seed,
                },
                "equilibrium_layca_learning_rate": equilibrium,
                "measured_rate": measured,
                "layca": sweep,
            },
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
