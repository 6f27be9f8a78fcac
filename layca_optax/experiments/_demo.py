"""The demo's machinery: its optimizers built, its runs trained, its results
gathered and written (:mod:`~layca_optax.experiments.mnist1d` holds its
settings and its public functions)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import optax

import layca_optax
from layca_optax.experiments import _report, mnist1d
from layca_optax.experiments.data import DATA_SEED, Dataset
from layca_optax.experiments.models import CNN
from layca_optax.experiments.training import (
    BATCH_SIZE,
    DECAY_AT,
    DECAY_FACTOR,
    step_decay,
    train,
)


@functools.lru_cache(maxsize=16)
def optimizer(
    name: str, learning_rate: float, total_steps: int
) -> optax.GradientTransformation:
    """One optimizer, the same object for the same arguments (so that
    :func:`~layca_optax.experiments.train` reuses its compiled run)."""
    schedule = step_decay(learning_rate, total_steps)
    if name == "layca":
        return layca_optax.layca(schedule)
    if name == "sgd":
        return optax.sgd(schedule)
    if name == "sgd-wd":
        decay = optax.add_decayed_weights(
            mnist1d.SGD_WD_WEIGHT_DECAY, mask=layca_optax.default_layer_mask
        )
        return optax.chain(decay, optax.sgd(schedule))
    if name == "adam":
        return optax.adam(schedule)
    if name == "adam-layca":
        return layca_optax.layca(schedule, base=optax.scale_by_adam())
    raise ValueError(f"unknown optimizer {name!r}; known: {mnist1d.OPTIMIZERS}")


def train_all(
    compared: Mapping[str, tuple[float, str, optax.GradientTransformation]],
    data: Dataset,
    model: CNN,
    epochs: int,
    seed: int,
    verbose: bool,
) -> dict[str, Any]:
    """Trains each optimizer; ``{name: its results.json entry}``."""
    runs: dict[str, Any] = {}
    for i, (name, (lr, description, tx)) in enumerate(compared.items()):
        label = f"[{i + 1}/{len(compared)}] {name}"
        bar = _report.Progress(label, epochs) if verbose else None
        result = train(tx, data, epochs, seed, model=model, progress=bar)
        runs[name] = _report.summary(
            result, optimizer=description, learning_rate=lr
        )
        if bar is not None:
            bar.close(runs[name])
    return runs


def results(
    runs: Mapping[str, Any],
    data: Dataset,
    model: CNN,
    epochs: int,
    seed: int,
    steps: int,
) -> dict[str, Any]:
    """The content of ``results.json``: the settings, then the runs."""
    return {
        "task": "MNIST-1D, 1-D CNN without biases and BatchNorm affine "
        "parameters",
        "layca_optax_version": layca_optax.__version__,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "epochs": epochs,
        "seed": seed,
        "data_seed": DATA_SEED,
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "batch_size": BATCH_SIZE,
        "steps_per_epoch": steps,
        "schedule": {"decay_factor": DECAY_FACTOR, "decay_at": list(DECAY_AT)},
        "layers": list(model.layer_names),
        "optimizers": dict(runs),
    }


def write(out: Path, results: Mapping[str, Any]) -> None:
    """Writes the demo's outputs into ``out`` (created if needed), each
    atomically, ``results.json`` last."""
    out.mkdir(parents=True, exist_ok=True)
    for name, run in results["optimizers"].items():
        _report.history(run).save_csv(out / mnist1d.history_name(name))
    _report.write_figure(out / mnist1d.FIGURE_NAME, results)
    _report.write_markdown(
        out / mnist1d.REPORT_NAME, results, mnist1d.FIGURE_NAME
    )
    _report.write_json(out / mnist1d.RESULTS_NAME, results)  # last: all done
