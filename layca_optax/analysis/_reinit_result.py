"""The result of a re-initialization robustness study, as rows and verdicts."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ReinitResult:
    """What :func:`reinit_robustness` measured, one row per layer.

    Attributes:
      paths: the probed layers' paths, in the order asked for.
      checkpoint_labels: one label per checkpoint, the initialization first.
      baseline: the metric of the unmodified ``params`` (a float).
      reinit: ``[layers, checkpoints]``: the metric with only that layer reset
        to its value at that checkpoint.
      rerandom: ``[layers, num_draws]``: the metric with only that layer
        replaced by a fresh draw from its initializer's distribution.
      tolerance: the largest metric drop for which a layer is robust.
      higher_is_better: True for accuracy-like metrics, False for losses.

    Example:
      >>> import numpy as np
      >>> import layca_optax
      >>> r = layca_optax.ReinitResult(
      ...     paths=("Dense_0/kernel", "Dense_1/kernel"),
      ...     checkpoint_labels=("init", "final"), baseline=0.97,
      ...     reinit=np.array([[0.20, 0.97], [0.968, 0.97]]),
      ...     rerandom=np.array([[0.10], [0.30]]))
      >>> r.drop()[:, 0].round(3).tolist()
      [0.77, 0.002]
      >>> r.classify()
      {'Dense_0/kernel': 'critical', 'Dense_1/kernel': 'robust'}
      >>> print(r.to_markdown(digits=2))
      | layer | init | final | rerandom | drop | verdict |
      | --- | --- | --- | --- | --- | --- |
      | Dense_0/kernel | 0.20 | 0.97 | 0.10 | 0.77 | critical |
      | Dense_1/kernel | 0.97 | 0.97 | 0.30 | 0.00 | robust |
      <BLANKLINE>
      baseline: 0.97
      <BLANKLINE>

    References:
      Zhang, Bengio & Singer, `Are All Layers Created Equal?
      <https://arxiv.org/abs/1902.01996>`_, JMLR 2022, Sections 2-3.
    """

    paths: tuple[str, ...]
    checkpoint_labels: tuple[str, ...]
    baseline: float
    reinit: np.ndarray
    rerandom: np.ndarray
    tolerance: float = 0.01
    higher_is_better: bool = True

    def drop(self) -> np.ndarray:
        """``[layers, checkpoints]``: how much worse than ``baseline`` each is.

        Positive means worse: ``baseline - reinit`` when higher is better,
        ``reinit - baseline`` otherwise.

        Returns:
          A float64 array of the shape of ``reinit``.
        """
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * (self.baseline - self.reinit)

    def classify(self) -> dict[str, str]:
        """``{path: "robust" | "critical"}`` from the reset to initialization.

        A layer is **robust** when resetting it to its value at the first
        checkpoint (the initialization) worsens the metric by at most
        ``tolerance`` (``drop()[:, 0] <= tolerance``), and **critical**
        otherwise. This is Zhang et al.'s re-initialization robustness
        (they call robust layers "ambient"); the default ``0.01`` is one
        percentage point of accuracy. Re-randomization is not used: in their
        experiments it hurts nearly every layer.

        Returns:
          A dict from each probed layer's path to its verdict, in ``paths``
          order.
        """
        drops = self.drop()[:, 0]
        return {
            p: "robust" if d <= self.tolerance else "critical"
            for p, d in zip(self.paths, drops, strict=True)
        }

    def to_table(self) -> list[dict[str, Any]]:
        """The result as rows, one dict per layer.

        Returns:
          A list of dicts with the keys ``layer``, one per checkpoint label,
          ``rerandom`` (mean over draws, NaN without draws), ``drop`` (at
          initialization) and ``verdict`` (from :meth:`classify`).
        """
        verdicts, drops = self.classify(), self.drop()[:, 0]
        rows = []
        for i, path in enumerate(self.paths):
            row: dict[str, Any] = {"layer": path}
            for label, v in zip(
                self.checkpoint_labels, self.reinit[i], strict=True
            ):
                row[label] = float(v)
            draws = self.rerandom[i]
            row["rerandom"] = float(np.mean(draws)) if draws.size else np.nan
            row["drop"] = float(drops[i])
            row["verdict"] = verdicts[path]
            rows.append(row)
        return rows

    def to_markdown(self, digits: int = 4) -> str:
        """:meth:`to_table` as a Markdown table, values to ``digits`` places.

        Args:
          digits: decimals of the floats.

        Returns:
          The table and a ``baseline:`` line, as a str.
        """
        rows = self.to_table()
        head = list(rows[0])
        fmt = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)
        lines = ["| " + " | ".join(head) + " |"]
        lines.append("|" + " --- |" * len(head))
        lines += [
            "| " + " | ".join(fmt(r[k]) for k in head) + " |" for r in rows
        ]
        return "\n".join(lines) + f"\n\nbaseline: {fmt(self.baseline)}\n"
