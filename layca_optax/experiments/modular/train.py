"""The modular-arithmetic study's training: one compiled run per optimizer
family (its hyperparameters and the seed are arguments), full-batch steps
under ``lax.scan``, accuracies and layer rotations recorded every
``eval_every`` steps inside it.

The seeds of a configuration run one after another through the same
compiled run: ``jax.vmap`` over seeds was measured slower on CPU here (3
seeds 3.4 times, 9 seeds 14 times one seed's time per step, as batched
matrix products of per-seed weights).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax
from layca_optax.experiments.data import modular_addition
from layca_optax.experiments.models import Transformer
from layca_optax.experiments.modular.settings import (
    FAMILIES,
    ModularSettings,
    Unit,
)
from layca_optax.experiments.training import (
    DECAY_AT,
    DECAY_FACTOR,
    step_decay,
)


ADAM_B2 = 0.98
"""Adam's second-moment decay in every Adam direction (AdamW, Adam + Layca,
AdamH), as in Nanda et al.'s grokking runs; b1 is optax's 0.9."""

TARGET = 0.99
"""The accuracy whose first step is reported ("steps to 99%")."""


def layer_mask(params: Any) -> Any:
    """Every weight matrix is a layer, embeddings included: each leaf of
    two or more dimensions (the :class:`Transformer` has no other leaf:
    no bias, no LayerNorm)."""
    return jax.tree.map(lambda w: jnp.ndim(w) >= 2, params)


def optimizer(
    family: str, hp: Mapping[str, Any], schedule: optax.Schedule
) -> optax.GradientTransformation:
    """A family's optimizer for one configuration.

    Args:
      family: ``"adamw"`` (``optax.adamw``, decay on every matrix),
        ``"adam-layca"`` (``layca(base=scale_by_adam())``, as the
        reproduction's ``adam-layca``), ``"sgd-layca"`` (``layca`` over
        the gradient) or ``"hyperball"`` (AdamH:
        ``hyperball(base=scale_by_adam())``).
      hp: ``learning_rate`` (and ``weight_decay`` for AdamW).
      schedule: the learning rate's shape, 1 at step 0.

    Returns:
      The optimizer; the Layca-like ones act on the layers of
      :func:`layer_mask` (every parameter), without weight decay.
    """
    lr = lambda step: hp["learning_rate"] * schedule(step)
    adam = lambda: optax.scale_by_adam(b2=ADAM_B2)
    if family == "adamw":
        return optax.adamw(lr, b2=ADAM_B2, weight_decay=hp["weight_decay"])
    rest = {"mask": layer_mask, "other": optax.set_to_zero()}  # no leaf left
    if family == "adam-layca":
        return layca_optax.layca(lr, base=adam(), **rest)
    if family == "sgd-layca":
        return layca_optax.layca(lr, **rest)
    if family == "hyperball":
        return layca_optax.hyperball(lr, base=adam(), **rest)
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


class Shape(NamedTuple):
    """What shapes a compiled run (hashable: the cache key)."""

    family: str
    model: Transformer
    steps: int
    eval_every: int


def _accuracy(model: Transformer, params: Any, x: Any, y: Any) -> jax.Array:
    logits: Any = model.apply({"params": params}, x)
    return jnp.mean(jnp.argmax(logits, -1) == y)


def _records(model: Transformer, params: Any, init: Any, data: tuple):
    """Train, validation and test accuracy, each layer's rotation."""
    pairs = zip(data[::2], data[1::2], strict=True)
    accs = [_accuracy(model, params, x, y) for x, y in pairs]
    rot = layca_optax.rotation_metrics(params, init, mask=layer_mask, prefix="")
    return (*accs, rot)


def _one_run(shape: Shape, hp: Mapping[str, Any], seed: Any, data: tuple):
    """One seed's run: loss, accuracies and rotations at step 0 and after
    every ``eval_every`` steps."""
    model, x, y = shape.model, data[0], data[1]
    init = model.init(jax.random.key(seed), x[:1])["params"]
    tx = optimizer(shape.family, hp, step_decay(1.0, shape.steps))

    def loss_fn(params):
        logits = model.apply({"params": params}, x)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return losses.mean()

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    def chunk(carry, _):
        carry, losses = jax.lax.scan(step, carry, length=shape.eval_every)
        return carry, (losses[-1], *_records(model, carry[0], init, data))

    first = (loss_fn(init), *_records(model, init, init, data))
    chunks = shape.steps // shape.eval_every
    _, later = jax.lax.scan(chunk, (init, tx.init(init)), length=chunks)
    join = lambda a, b: jnp.concatenate([a[None], b])
    return jax.tree.map(join, first, later)


@functools.lru_cache(maxsize=8)
def compiled_run(shape: Shape) -> Any:
    """The jitted run of one seed: ``run(hparams, seed, data)`` with
    ``data = (x_train, y_train, x_val, y_val, x_test, y_test)``; compiled
    once per family and shapes, reused for every rate and seed."""
    return jax.jit(functools.partial(_one_run, shape))


def steps_to(
    curve: Sequence[float | None],
    steps: Sequence[int],
    target: float = TARGET,
) -> int | None:
    """The first step whose value is at least ``target`` (None: never).

    Example:
      >>> steps_to([0.1, 0.995, 0.98, 1.0], [0, 50, 100, 150])
      50
      >>> steps_to([0.1, None, 0.5], [0, 50, 100]) is None
      True
    """
    for value, step in zip(curve, steps, strict=True):
        if value is not None and value >= target:
            return int(step)
    return None


def floats(values: Any) -> list[float | None]:
    """JSON-ready floats (6 significant digits); None where not finite."""
    out = np.asarray(values, float).ravel().tolist()
    return [float(f"{v:.6g}") if math.isfinite(v) else None for v in out]


def setup(settings: ModularSettings) -> dict[str, Any]:
    """The task's description (every entry carries it)."""
    s = settings
    data = modular_addition(
        s.p, s.train_fraction, s.validation_fraction, s.data_seed
    )
    return {
        "p": s.p,
        "train_fraction": s.train_fraction,
        "validation_fraction": s.validation_fraction,
        "data_seed": s.data_seed,
        "n_train": len(data.x_train),
        "n_val": len(data.x_val),
        "n_test": len(data.x_test),
        "model": {
            "width": s.width,
            "heads": s.heads,
            "mlp": s.mlp,
            "depth": s.depth,
        },
        "layers": list(_model(s).layer_names),
        "steps": s.steps,
        "eval_every": s.eval_every,
        "seeds": list(s.seeds),
        "decay_factor": DECAY_FACTOR,
        "decay_at": list(DECAY_AT),
        "adam_b2": ADAM_B2,
        "quick": s.quick,
        "jax_version": jax.__version__,
        "layca_optax_version": layca_optax.__version__,
        "backend": jax.default_backend(),
    }


def _model(s: ModularSettings) -> Transformer:
    return Transformer(s.p + 1, s.p, 3, s.width, s.heads, s.mlp, s.depth)


def _run_entry(seed: int, out: tuple, eval_steps: list[int]) -> dict:
    """One seed's JSON-ready curves and summary."""
    loss, train, val, test, rotation = out
    curves = {
        "loss": floats(loss),
        "train": floats(train),
        "val": floats(val),
        "test": floats(test),
    }
    return {
        "seed": seed,
        **curves,
        "rotation": {k: floats(v) for k, v in rotation.items()},
        "final_train": curves["train"][-1],
        "final_val": curves["val"][-1],
        "final_test": curves["test"][-1],
        "steps_to_99_val": steps_to(curves["val"], eval_steps),
        "steps_to_99_test": steps_to(curves["test"], eval_steps),
    }


def train_unit(settings: ModularSettings, unit: Unit) -> dict[str, Any]:
    """Trains one configuration with every seed of ``settings``.

    Returns:
      A JSON-ready entry: ``family``, ``label``, ``hparams``, ``setup``
      (:func:`setup`), ``eval_steps``, ``seconds`` and ``runs``, one per
      seed: its curves (``loss``, ``train``, ``val``, ``test`` accuracy,
      ``rotation`` per layer) at ``eval_steps``, final accuracies and the
      first step at 99% validation and test accuracy (None: never).
    """
    start = time.perf_counter()
    s = settings
    data = modular_addition(
        s.p, s.train_fraction, s.validation_fraction, s.data_seed
    )
    arrays = tuple(
        jnp.asarray(a)
        for a in (data.x_train, data.y_train, data.x_val, data.y_val)
        + (data.x_test, data.y_test)
    )
    run = compiled_run(Shape(unit.family, _model(s), s.steps, s.eval_every))
    hp = {k: jnp.float32(v) for k, v in unit.hparams}
    eval_steps = list(range(0, s.steps + 1, s.eval_every))
    runs = [
        _run_entry(
            seed, jax.device_get(run(hp, np.uint32(seed), arrays)), eval_steps
        )
        for seed in s.seeds
    ]
    return {
        "family": unit.family,
        "label": unit.label,
        "hparams": dict(unit.hparams),
        "setup": setup(s),
        "eval_steps": eval_steps,
        "seconds": round(time.perf_counter() - start, 1),
        "runs": runs,
    }
