"""Progress on stderr: a tqdm bar on a terminal, else one line per run."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def progress_bar(
    total: int, unit: str, desc: str | None = None, *, verbose: bool = True
) -> Any:
    """A tqdm bar on stderr; disabled (``bar.disable``) when stderr is no
    terminal, or when not ``verbose``."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=None if verbose else True,  # None: off unless a terminal
        dynamic_ncols=True,
    )


class Progress:
    """One tqdm bar per run on a terminal, else one line per run (stderr).

    Args:
      label: what is trained, e.g. ``"[2/5] sgd"``.
      epochs: the run's epochs (the bar's total).
    """

    def __init__(self, label: str, epochs: int) -> None:
        self.label, self.epochs = label, epochs
        self.bar = progress_bar(epochs, "epoch", label)

    def __call__(self, done: int) -> None:
        """Moves the bar to ``done`` epochs (called from the run)."""
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self, run: Mapping[str, Any]) -> None:
        """Ends the bar (or prints the line) with the run's results."""
        if self.bar.disable:
            unit = "epoch" if self.epochs == 1 else "epochs"
            line = (
                f"{self.label}: {self.epochs} {unit}, train acc "
                f"{run['train_accuracy']:.2%}, test acc "
                f"{run['test_accuracy']:.2%}, {run['seconds']:.1f} s "
                f"({run['compile_seconds']:.1f} s compiling)"
            )
            print(line, file=sys.stderr, flush=True)
        else:
            text = f"test acc {run['test_accuracy']:.1%}"
            self.bar.set_postfix_str(text, refresh=False)
        self.bar.close()
