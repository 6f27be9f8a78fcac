"""Reading a compiled GPU program: kernels, memory traffic, collectives.

XLA's GPU ``cost_analysis()`` is None for a program compiled without a GPU,
so every figure is counted from the optimized program's text
(``compiled.as_text()``), whose ENTRY computation is the sequence of
launches, in order:

- **kernels**: every ENTRY instruction that launches work on the GPU:
  ``fusion`` (one generated kernel each, whatever it fuses), ``copy``,
  ``custom-call`` (cuBLAS, cuDNN, ...), collectives (an async
  ``*-start``/``*-done`` pair counts once, at its start) and any other
  unfused op. Not counted: ``parameter``, ``constant``, ``tuple``,
  ``get-tuple-element``, ``bitcast`` (no work) and ``*-done`` (a wait).
  ``call``, ``while`` and ``conditional`` count their bodies' kernels (a
  loop body once, a conditional's largest branch), not themselves.
- **traffic**: per kernel, the bytes of its distinct operands plus those of
  its results (a tuple's leaves; a ``get-tuple-element`` operand is that
  element), as device memory traffic. An operand counts whole, an upper
  bound for a kernel that reads a slice of it. Scalars count too (4 bytes
  each, negligible beside a layer).
- **collectives**: as ``tpu_hlo.collectives`` (count, payload bytes,
  largest leaf in elements).
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tpu_hlo import _NO_WORK, Inst, _leaves, collectives, parse_hlo  # noqa: E402


_CONTROL = {"call", "while", "conditional"}


def _bytes(shape: str) -> int:
    """Logical bytes of the arrays of an HLO ``shape`` (a tuple's leaves)."""
    return sum(b for _, b, _, _ in _leaves(shape))


def _launches(inst: Inst) -> bool:
    """Whether an instruction launches a kernel (see the module docstring)."""
    return inst.op not in _NO_WORK | _CONTROL and not inst.op.endswith("-done")


def _walk(comps: dict, name: str, shapes: dict, ops: Counter) -> int:
    """Adds a computation's kernels to ``ops`` (by op); returns their bytes.

    A conditional counts its branch with the most traffic.
    """
    traffic = 0
    for inst in comps[name]:
        if inst.op in _CONTROL:
            branches = []
            for callee in inst.calls:
                sub: Counter = Counter()
                branches.append((_walk(comps, callee, shapes, sub), sub))
            if inst.op == "conditional" and branches:
                branches = [max(branches, key=lambda b: b[0])]
            for moved, sub in branches:
                traffic += moved
                ops.update(sub)
        elif _launches(inst):
            ops[inst.op.removesuffix("-start")] += 1
            traffic += sum(_bytes(shapes[o]) for o in set(inst.operands))
            # An async op's result is its -done's (keyed by the start).
            traffic += _bytes(shapes.get(f"{inst.name}-done", inst.shape))
    return traffic


def _done_results(insts: list[Inst]) -> dict[str, str]:
    """``*-start`` name -> its ``*-done``'s result shape."""
    return {i.operands[0]: i.shape for i in insts if i.op.endswith("-done")}


def analyse(compiled, param_bytes: int, leaves: int) -> dict:
    """Kernels, traffic and collectives of a compiled GPU program.

    Args:
      compiled: ``jax.jit(...).lower(...).compile()`` for a GPU target.
      param_bytes: the params' bytes (per device): ``arrays_moved`` is the
        traffic over it, in parameter-sized arrays.
      leaves: the number of param leaves: ``kernels_per_leaf`` is the
        kernel count over it.
    """
    comps, entry = parse_hlo(compiled.as_text())
    insts = [i for v in comps.values() for i in v]
    shapes = {i.name: i.shape for i in insts}
    for start, shape in _done_results(insts).items():
        shapes[f"{start}-done"] = shape
    ops: Counter = Counter()
    traffic = _walk(comps, entry, shapes, ops)
    kernels = sum(ops.values())
    return {
        "kernels": kernels,
        "kernels_per_leaf": kernels / leaves,
        "kernels_by_op": dict(ops.most_common()),
        "traffic_bytes": traffic,
        "arrays_moved": traffic / param_bytes,
        "collectives": collectives(comps, insts),
    }


def kernel_list(compiled) -> list[str]:
    """One line per ENTRY kernel: name, op, result shape, operands' shapes.

    For reading a program by eye (``gpu_cost.py --kernels``).
    """
    comps, entry = parse_hlo(compiled.as_text())
    shapes = {i.name: i.shape for v in comps.values() for i in v}
    lines = []
    for inst in comps[entry]:
        if _launches(inst) or inst.op in _CONTROL:
            args = ", ".join(
                f"{o}: {_short(shapes.get(o, '?'))}" for o in inst.operands
            )
            lines.append(
                f"{inst.name} = {_short(inst.shape)} {inst.op}({args})"
            )
    return lines


def _short(shape: str) -> str:
    """An HLO shape without layouts or index comments."""
    return re.sub(r"\{[^}]*\}|/\*[^*]*\*/", "", shape)
