"""The check that ``optax.inject_hyperparams`` schedules no static argument.

``inject_hyperparams`` turns every callable argument that is not in
``static_args`` into a schedule and passes its value at the step count
instead (a callable ``axis`` or ``mask`` then silently becomes a constant
computed from an integer). The optimizer cannot see that from its
arguments, so :func:`check_not_scheduled` reads ``inject_hyperparams``'
record of the schedules from the frame that builds the optimizer.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

import optax

from layca_optax import _checks as checks


_RECORD = "sched_hps"  # inject_hyperparams' local: argument name -> schedule
_unreadable: list[bool] = []  # warned once that the record was not found


def _builder_frame() -> Any:
    """The first frame up the stack outside this package: the code that
    builds the optimizer (``optax.inject_hyperparams``' init or update)."""
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        "layca_optax"
    ):
        frame = frame.f_back
    return frame


def scheduled_names(frame: Any) -> set[str] | None:
    """The arguments that ``optax.inject_hyperparams`` calls as schedules
    when ``frame`` is one of its functions (the keys of its local
    ``sched_hps``); an empty set for any other frame; None for an
    ``inject_hyperparams`` frame without that record (another optax)."""
    if frame is None or "inject" not in frame.f_code.co_qualname:
        return set()
    if not frame.f_globals.get("__name__", "").startswith("optax"):
        return set()
    record = frame.f_locals.get(_RECORD)
    return set(record) if isinstance(record, dict) else None


def check_not_scheduled(names: Sequence[str]) -> None:
    """``ValueError`` when the optimizer is being built by
    ``optax.inject_hyperparams`` with one of ``names`` outside
    ``static_args`` (read by :func:`scheduled_names` from the first frame
    up the stack outside this package). An optax whose
    ``inject_hyperparams`` keeps no such record gets a ``RuntimeWarning``
    (once) saying that the check could not run, never a silent pass;
    ``tests/core/test_builder.py`` pins the record on the installed optax."""
    scheduled = scheduled_names(_builder_frame())
    if scheduled is None:
        if not _unreadable:
            _unreadable.append(True)
            warnings.warn(
                f"`{checks.caller()}` could not read "
                "optax.inject_hyperparams' record of its schedules "
                f"(`{_RECORD}`, optax {optax.__version__}), so it cannot "
                f"check that {', '.join(names)} are in `static_args`: pass "
                "callables for them as static_args, or they are called as "
                "schedules of the step count.",
                RuntimeWarning,
                stacklevel=3,
            )
        return
    bad = [name for name in names if name in scheduled]
    if bad:
        listed = ", ".join(repr(n) for n in bad)
        raise ValueError(
            f"{checks.arg(bad[0])} got a callable under "
            "optax.inject_hyperparams, which calls it as a schedule of the "
            "step count. Pass it as static: optax.inject_hyperparams("
            f"{checks.caller()}, static_args=({listed},))."
        )
