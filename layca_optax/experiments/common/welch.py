"""Two configurations compared over seeds: Welch's t statistic
``(m1 - m2) / sqrt(s1^2/n1 + s2^2/n2)`` of their mean accuracies, and the
thresholds the studies' verdicts use (rules of thumb with 3 seeds, not
tests at a stated level)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


T_THRESHOLD = 2.0
"""``|t|`` at and above which two configurations are said to differ."""

MATCH_POINTS = 0.5
"""Two test accuracies within this many points (and ``|t| < 2``) match."""


def welch_t(
    a: Mapping[str, Any], b: Mapping[str, Any], on: str = "test"
) -> float:
    """Welch's t of ``a``'s mean accuracy on ``on`` minus ``b``'s."""
    diff = a[f"{on}_mean"] - b[f"{on}_mean"]
    sa, sb = a[f"{on}_std"], b[f"{on}_std"]
    se = math.sqrt(sa**2 / a["n"] + sb**2 / b["n"])
    if se == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / se
