"""How the experiments write numbers: learning rates as powers of 3."""

from __future__ import annotations

import math


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
