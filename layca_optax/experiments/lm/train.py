"""The language-model study's training: one compiled run per optimizer
family (its hyperparameters and the seed are arguments), random windows of
the train block under ``lax.scan``, the validation loss and each layer's
rotation (whole leaf and per stacked slice) every ``eval_every`` steps
inside it, the test loss at the end. The seeds of a configuration run one
after another through the same compiled run, each timed (characters per
second, compilation excluded)."""

from __future__ import annotations

import functools
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax
from layca_optax.experiments.data import (
    TextData,
    read_kjv,
    read_text,
    split_text,
)
from layca_optax.experiments.lm.optimizers import (
    ADAM_B2,
    layer_mask,
    layout,
    model_of,
    optimizer,
)
from layca_optax.experiments.lm.settings import LMSettings, Unit, grid
from layca_optax.experiments.models import CharLM


@functools.lru_cache(maxsize=2)
def load_data(text: str | None, length: int) -> TextData:
    """The King James Bible (``text`` None) or the file ``text``, split;
    each block holds at least ``length + 1`` characters."""
    raw, digest = read_kjv() if text is None else read_text(text)
    name = "kjv" if text is None else text.rsplit("/", 1)[-1]
    return split_text(raw, name, digest, min_block=length + 1)


def windows(ids: np.ndarray, length: int, count: int) -> np.ndarray:
    """``count`` evenly spaced windows of ``length + 1`` ids (inputs and
    next characters), ``(count, length + 1)``.

    Example:
      >>> windows(np.arange(10), 3, 3).tolist()
      [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    """
    starts = np.linspace(0, ids.size - length - 1, count).round().astype(int)
    return ids[starts[:, None] + np.arange(length + 1)]


def lr_shape(s: LMSettings) -> optax.Schedule:
    """The rate's shape: linear warmup to 1, flat, linear cooldown to 0
    over the last ``cooldown`` share of the steps."""
    cool_from = round(s.steps * (1 - s.cooldown))

    def shape(step: Any) -> Any:
        warm = jnp.minimum(1.0, (step + 1) / max(s.warmup, 1))
        cool = jnp.clip((s.steps - step) / max(s.steps - cool_from, 1), 0, 1)
        return warm * cool

    return shape


class Shape(NamedTuple):
    """What shapes a compiled run (hashable: the cache key)."""

    family: str
    model: CharLM
    settings: LMSettings


def _loss(model: CharLM, params: Any, w: jax.Array) -> jax.Array:
    """Mean next-character cross-entropy (nats) of windows ``w``."""
    logits = model.apply({"params": params}, w[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, w[:, 1:]
    ).mean()


def _rotations(model: CharLM, params: Any, init: Any) -> tuple[Any, Any]:
    """Each layer's cosine distance to init: per leaf, per stacked slice."""
    axis, _ = layout(model)
    metric = functools.partial(layca_optax.rotation_metrics, mask=layer_mask)
    return metric(params, init, prefix=""), metric(
        params, init, axis=axis, prefix=""
    )


def _one_run(shape: Shape, hp: Any, seed: Any, train: Any, val: Any, test: Any):
    """One seed's run: train and validation loss and rotations at step 0
    and after every ``eval_every`` steps; the final test loss."""
    model, s = shape.model, shape.settings
    key, init_key = jax.random.split(jax.random.key(seed))
    init = model.init(init_key, val[:1, :-1])["params"]
    tx = optimizer(shape.family, hp, lr_shape(s), s, model)
    grad = jax.value_and_grad(functools.partial(_loss, model))
    offsets = jnp.arange(s.length + 1)

    def step(carry, step_key):
        params, state = carry
        starts = jax.random.randint(
            step_key, (s.batch, 1), 0, train.shape[0] - s.length - 1
        )
        loss, grads = grad(params, train[starts + offsets[None]])
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    def chunk(carry, chunk_key):
        keys = jax.random.split(chunk_key, s.eval_every)
        carry, losses = jax.lax.scan(step, carry, keys)
        val_loss = _loss(model, carry[0], val)
        return carry, (
            losses.mean(),
            val_loss,
            *_rotations(model, carry[0], init),
        )

    first = (jnp.nan, _loss(model, init, val), *_rotations(model, init, init))
    keys = jax.random.split(key, s.steps // s.eval_every)
    (params, _), later = jax.lax.scan(chunk, (init, tx.init(init)), keys)
    join = lambda a, b: jnp.concatenate([jnp.asarray(a)[None], b])
    return jax.tree.map(join, first, later), _loss(model, params, test)


@functools.lru_cache(maxsize=8)
def compiled_run(shape: Shape, data: tuple[Any, ...]) -> Any:
    """The compiled run of one seed: ``run(hparams, seed, train, val,
    test)``; compiled once per family, reused for every rate and seed."""
    hp_names = ("learning_rate", "weight_decay", "factor")
    hp = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in hp_names}
    seed = jax.ShapeDtypeStruct((), jnp.uint32)
    args = [jax.ShapeDtypeStruct(shape_, jnp.int32) for shape_ in data]
    run = jax.jit(functools.partial(_one_run, shape))
    return run.lower(hp, seed, *args).compile()


def floats(values: Any) -> list[float | None]:
    """JSON-ready floats (6 significant digits); None where not finite."""
    out = np.asarray(values, float).ravel().tolist()
    return [float(f"{v:.6g}") if math.isfinite(v) else None for v in out]


def setup(s: LMSettings) -> dict[str, Any]:
    """The task's description (every entry carries it)."""
    data = load_data(s.text, s.length)
    model = model_of(s, len(data.vocab))
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, s.length), int))
    )["params"]
    leaves = jax.tree_util.tree_leaves_with_path(params)
    slices = _order(model, params)
    return {
        "corpus": data.name,
        "sha256": data.sha256,
        "vocab": len(data.vocab),
        "split": data.sizes,
        "model": {k: getattr(s, k) for k in ("width", "heads", "mlp", "depth")},
        "parameters": int(sum(math.prod(leaf.shape) for _, leaf in leaves)),
        "layers": list(dict.fromkeys(_leaf(n) for n in slices)),
        "slices": slices,
        **{
            k: getattr(s, k) for k in ("length", "batch", "steps", "eval_every")
        },
        **{k: getattr(s, k) for k in ("warmup", "cooldown", "val_windows")},
        "test_windows": s.test_windows,
        "other_learning_rate": s.other_learning_rate,
        "seeds": list(s.seeds),
        "adam_b2": ADAM_B2,
        "momentum": s.momentum,
        "brake_weight_decay": s.brake_weight_decay,
        "quick": s.quick,
        "scale": s.scale,
        "jax_version": jax.__version__,
        "layca_optax_version": layca_optax.__version__,
        "backend": jax.default_backend(),
    }


def _order(model: CharLM, params: Any) -> list[str]:
    """The layers' stacked slices in forward order."""
    tokens = jax.ShapeDtypeStruct((1, model.length), jnp.int32)
    apply = lambda p, t: model.apply({"params": p}, t)
    return layca_optax.forward_order(
        apply, params, tokens, mask=layer_mask, per_slice=True
    )


def _leaf(name: str) -> str:
    """The leaf of a slice's name: ``"blocks/query/kernel/1"`` gives
    ``"blocks/query/kernel"``; a leaf's name is kept."""
    head, _, tail = name.rpartition("/")
    return head if tail.isdigit() and head.startswith("blocks/") else name


def _arrays(s: LMSettings) -> tuple[np.ndarray, ...]:
    """The train block, the validation and the test windows."""
    data = load_data(s.text, s.length)
    return (
        data.train,
        windows(data.val, s.length, s.val_windows),
        windows(data.test, s.length, s.test_windows),
    )


def pick_key(run: dict[str, Any]) -> float:
    """How a configuration is picked: the lowest final validation loss of
    the first seed (a diverged run, None, never)."""
    val = run["final_val_loss"]
    return math.inf if val is None else val


def train_family(settings: LMSettings, family: str) -> dict[str, Any]:
    """Tunes one family on validation loss with the first seed (every
    configuration of :func:`grid`), then runs its pick with the other
    seeds, in this process (one compilation).

    Returns:
      A JSON-ready entry: ``family``, ``setup``, ``eval_steps``,
      ``compile_seconds``, ``seconds``, ``grid`` (each configuration's
      ``label``, ``hparams`` and first-seed run), ``picked`` (the index
      in ``grid``), ``label`` and ``hparams`` of the pick and ``runs``,
      one per seed (the first is the grid's): ``seed``, ``train_loss``
      (mean of each interval; None at step 0), ``val_loss``, ``rotation``
      (per leaf), ``slices`` (per stacked slice) at ``eval_steps``,
      ``final_val_loss``, ``final_test_loss``, ``seconds`` and
      ``chars_per_second``.
    """
    start = time.perf_counter()
    s = settings
    arrays = _arrays(s)
    model = model_of(s, len(load_data(s.text, s.length).vocab))
    shapes = tuple(a.shape for a in arrays)
    run = compiled_run(Shape(family, model, s), shapes)
    compiled = time.perf_counter() - start
    device = [jnp.asarray(a) for a in arrays]

    def one(unit: Unit, seed: int) -> dict[str, Any]:
        hp = {"weight_decay": 0.0, "factor": 1.0, **dict(unit.hparams)}
        hp = {k: jnp.float32(v) for k, v in hp.items()}
        t0 = time.perf_counter()
        curves, test = jax.device_get(run(hp, np.uint32(seed), *device))
        return _run_entry(seed, curves, test, time.perf_counter() - t0, s)

    configs = grid(s, family)
    tried = [one(unit, s.seeds[0]) for unit in configs]
    best = min(range(len(configs)), key=lambda i: pick_key(tried[i]))
    rest = [one(configs[best], seed) for seed in s.seeds[1:]]
    return {
        "family": family,
        "setup": setup(s),
        "eval_steps": list(range(0, s.steps + 1, s.eval_every)),
        "compile_seconds": round(compiled, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "grid": [
            {"label": u.label, "hparams": dict(u.hparams), "run": r}
            for u, r in zip(configs, tried, strict=True)
        ],
        "picked": best,
        "label": configs[best].label,
        "hparams": dict(configs[best].hparams),
        "runs": [tried[best], *rest],
    }


def _run_entry(
    seed: int, curves: Any, test: Any, seconds: float, s: LMSettings
) -> dict[str, Any]:
    train_loss, val_loss, rotation, slices = curves
    val = floats(val_loss)
    return {
        "seed": seed,
        "train_loss": floats(train_loss),
        "val_loss": val,
        "rotation": {k: floats(v) for k, v in rotation.items()},
        "slices": {k: floats(v) for k, v in slices.items()},
        "final_val_loss": val[-1],
        "final_test_loss": floats(test)[0],
        "seconds": round(seconds, 2),
        "chars_per_second": round(s.steps * s.chars_per_step / seconds),
    }
