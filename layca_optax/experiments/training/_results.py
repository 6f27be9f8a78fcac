"""What training gives: :class:`TrainResult` for one run, and
:class:`SweepResult` for runs trained together."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What one training run gives.

    Attributes:
      train_accuracy: final accuracy on the train set (running BN stats).
      test_accuracy: final accuracy on the test set.
      rotation: each layer's cosine distance to its initial weights at the
        end of every epoch, ``{path: array of shape (epochs,)}``, in
        forward order.
      train_loss: mean minibatch loss of every epoch, shape ``(epochs,)``.
      test_accuracy_curve: test accuracy after every epoch.
      seconds: wall time of the run (of the whole sweep it was part of),
        compilation included, the initialization excluded.
      compile_seconds: the part of ``seconds`` spent compiling (about 0
        when a compiled run was reused, see :func:`train_sweep`).
      params: the final parameters.
      batch_stats: the final BatchNorm running statistics.
      init_params: the initial parameters.
      snapshots: with ``keep_params``, the parameters at the end of every
        epoch (leaves with a leading ``epochs`` axis), else None.
    """

    train_accuracy: float
    test_accuracy: float
    rotation: dict[str, np.ndarray]
    train_loss: np.ndarray
    test_accuracy_curve: np.ndarray
    seconds: float
    compile_seconds: float
    params: Any = dataclasses.field(repr=False)
    batch_stats: Any = dataclasses.field(repr=False)
    init_params: Any = dataclasses.field(repr=False, default=None)
    snapshots: Any = dataclasses.field(repr=False, default=None)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`train_sweep` gives: :class:`TrainResult`'s fields with a
    leading axis of size ``R`` (the runs, in the order given).

    ``len(result)`` is ``R``; ``result[i]`` is the ``i``-th run as a
    :class:`TrainResult`. ``seconds`` and ``compile_seconds`` are the
    sweep's.
    """

    train_accuracy: np.ndarray
    test_accuracy: np.ndarray
    rotation: dict[str, np.ndarray]
    train_loss: np.ndarray
    test_accuracy_curve: np.ndarray
    seconds: float
    compile_seconds: float
    params: Any = dataclasses.field(repr=False)
    batch_stats: Any = dataclasses.field(repr=False)
    init_params: Any = dataclasses.field(repr=False)
    snapshots: Any = dataclasses.field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.test_accuracy)

    def __getitem__(self, i: int) -> TrainResult:
        def pick(tree: Any) -> Any:
            return None if tree is None else jax.tree.map(lambda a: a[i], tree)

        return TrainResult(
            train_accuracy=float(self.train_accuracy[i]),
            test_accuracy=float(self.test_accuracy[i]),
            rotation={k: v[i] for k, v in self.rotation.items()},
            train_loss=self.train_loss[i],
            test_accuracy_curve=self.test_accuracy_curve[i],
            seconds=self.seconds,
            compile_seconds=self.compile_seconds,
            params=pick(self.params),
            batch_stats=pick(self.batch_stats),
            init_params=pick(self.init_params),
            snapshots=pick(self.snapshots),
        )
