"""The demo's settings: Layca against tuned SGD and Adam on MNIST-1D, with
the layer-rotation curves.

A small 1-D CNN (:class:`~layca_optax.experiments.CNN`; no biases, BatchNorm
without affine parameters, so every parameter is a layer) is trained on
MNIST-1D from the same initialization, for the same epochs and the same
step-decay schedule shape, with five optimizers (:data:`OPTIMIZERS`):
``layca_optax.layca(3**-3)`` (the paper's default: SGD without momentum,
alpha 0), plain ``optax.sgd`` (no momentum, no weight decay), SGD with L2
weight decay on the kernels, ``optax.adam``, and Layca over Adam's
direction; every learning rate (and the weight decay) tuned on this task.
Each layer's cosine distance to its initial weights is recorded after every
epoch: the paper's layer-rotation curves.

Run it with ``layca-optax demo`` or call
:func:`~layca_optax.experiments.demo.run.run_demo`.
"""

from __future__ import annotations


# This module holds the demo's settings and is imported without JAX (the
# command line reads its defaults for ``--help``); the demo runs in
# :mod:`~layca_optax.experiments.demo.run`.


DEFAULT_EPOCHS = 40
"""Epochs of the demo: 64 s wall (106 s CPU, compilation included) for the
five runs on an idle 2-core AMD EPYC machine; 3 min on the same machine
under a load average of 6-7 (docs/getting_started.md)."""

QUICK_EPOCHS = 3
"""Epochs of ``layca-optax demo --quick``, a smoke test."""

MAX_EPOCHS = 1000
"""The most epochs ``layca-optax demo --epochs`` accepts (25 times the
default: about half an hour per optimizer on 2 cores)."""

DEFAULT_SEED = 0
"""The seed of the initialization and of the shuffling."""

OPTIMIZERS = ("layca", "sgd", "sgd-wd", "adam", "adam-layca")
"""The compared optimizers' names, in the demo's order."""

# Each rate below was tuned with this code: 40 epochs, this schedule,
# final test accuracy (%), seeds as given. Some were measured with earlier
# code (before the per-epoch progress callback in the compiled run and
# layca's fused step), which rounds differently: seed 0 moved by up to 0.3
# points since (Layca 98.3 -> 98.1), as other seeds do.

LAYCA_LEARNING_RATE = 3**-3
"""The paper's best initial learning rate for SGD + Layca (alpha = 0)."""
# Layca at 3**-3: 98.3 / 98.1 / 98.3 (seeds 0 / 1 / 2, mean 98.2).

SGD_LEARNING_RATE = 3.0
"""Plain SGD's initial learning rate, the best of a sweep on this task."""
# optax.sgd, seeds 0 / 1 / 2 (mean):
#   3**3  95.7 / 95.7 / 96.1 (95.8)     3**-1  96.5 / 97.0 / 96.4 (96.6)
#   3**2  97.7 / 96.7 / 97.4 (97.3)     3**-2  95.0 / 96.7 / 96.0 (95.9)
#   3**1  97.8 / 97.3 / 97.7 (97.6)     3**-3  91.7 / 92.4 / 92.6 (92.2)
#   3**0  97.2 / 97.8 / 97.5 (97.5)
# Plain SGD's best rate is large, probably because BatchNorm makes the conv
# layers scale-invariant: their weights grow, and the effective rate (and
# the rotation) shrinks. Below 3**-1, SGD's layers barely rotate (mean
# final cosine distance 0.14 at 3**-1 against 0.35 at 3 and 0.50 for
# Layca, seed 0).

SGD_WD_LEARNING_RATE = 3.0
SGD_WD_WEIGHT_DECAY = 5e-4
"""SGD + weight decay: the initial learning rate and the L2 coefficient
(``optax.add_decayed_weights`` on the kernels, before ``optax.sgd``)."""
# Seed 0, learning rate (rows) x weight decay (columns):
#           1e-4   5e-4   1e-3
#   0.1     94.7   94.8   94.8
#   0.3     96.6   96.2   97.7
#   1       97.9   97.9   97.1
#   3       97.9   97.9      -
# Seeds 0 / 1 / 2 (mean) of the best: lr 3, wd 5e-4: 97.9 / 98.0 / 98.3
# (98.1); lr 1, wd 5e-4: 97.9 / 98.0 / 97.6 (97.8); lr 1, wd 1e-4: 97.9 /
# 97.1 / 97.0 (97.3). Weight decay keeps the scale-invariant layers small,
# so they rotate more (mean final rotation 0.60 at lr 3, wd 5e-4, seed 0).

ADAM_LEARNING_RATE = 3e-2
"""Adam's initial learning rate."""
# Seed 0: 1e-3 95.0, 3e-3 96.6, 1e-2 97.7, 3e-2 97.8. Seeds 0 / 1 / 2
# (mean): 1e-2 97.7 / 97.5 / 97.5 (97.6), 3e-2 97.8 / 97.7 / 97.4 (97.6),
# a tie; 3e-2 has the higher mean by 0.07 points.

ADAM_LAYCA_LEARNING_RATE = 3**-4
"""Layca over Adam's direction: the initial learning rate (the paper's
Adam_layca uses 3**-5; 3**-4 is better on this task)."""
# Seeds 0 / 1 / 2 (mean), current code: 3**-5 97.9 / 97.6 / 97.6 (97.7),
# 3**-4 98.3 / 98.8 / 98.7 (98.6); 3**-3 98.2 (seed 0, earlier code).

FIGURE_NAME = "layer_rotation.png"
RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"


def history_name(optimizer: str) -> str:
    """The CSV of one run's per-epoch records in ``--out``."""
    return f"history_{optimizer}.csv"
