"""How the experiments write numbers: learning rates as powers of 3, and
values that may be missing (``null`` in ``results.json``: not finite)."""

from __future__ import annotations

import math
from typing import Any


def power_of_3(x: float, *, op: str = "^", below_one: bool = False) -> str:
    """``x`` as a power of 3 when it is one (half-integer exponents too),
    else ``"%g"``.

    Args:
      x: the number.
      op: the power operator: ``"^"`` for labels, ``"**"`` for Python code.
      below_one: only numbers below 1 as powers (3.0 stays ``"3"``).

    Example:
      >>> power_of_3(3**-3), power_of_3(3**-2.5), power_of_3(3.0)
      ('3^-3', '3^-2.5', '3^1')
      >>> power_of_3(3**-4, op="**", below_one=True), power_of_3(0.03)
      ('3**-4', '0.03')
      >>> power_of_3(3.0, op="**", below_one=True)
      '3'
    """
    if x > 0 and not (below_one and x >= 1):
        k = math.log(x, 3)
        if abs(k * 2 - round(k * 2)) < 1e-9:
            return f"3{op}{round(k * 2) / 2:g}"
    return f"{x:g}"


def number(x: Any, spec: str = ".2f", *, scale: float = 1.0) -> str:
    """``x * scale`` formatted with ``spec``; ``"n/a"`` when ``x`` is None
    (a non-finite value in ``results.json``) or not finite.

    Example:
      >>> number(0.98765, ".2f", scale=100), number(None), number(math.nan)
      ('98.77', 'n/a', 'n/a')
    """
    if x is None or not math.isfinite(x):
        return "n/a"
    return format(x * scale, spec)
