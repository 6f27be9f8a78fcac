"""What every study's run and command share: the timed ``results.json``
content, and the verdicts printed at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def timed_results(
    train_all: Callable[[], list],
    summarize: Callable[[list], Any],
    write_outputs: Callable[[dict, Path], Any],
    *,
    out: str | Path | None,
    jobs: int,
    command: str | None,
) -> dict[str, Any]:
    """Trains (``train_all()``: every run's entry), then ``{"command",
    "jobs", "wall_seconds", "results": summarize(entries), "entries"}``,
    written with ``write_outputs`` into ``out`` unless it is None."""
    start = time.perf_counter()
    entries = train_all()
    results = {
        "command": command,
        "jobs": jobs,
        "wall_seconds": 0.0,
        "results": summarize(entries),
        "entries": entries,
    }
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    if out is not None:
        write_outputs(results, Path(out))
    return results


def print_claims(
    results: Mapping[str, Any], written: Sequence[str], out: Any
) -> None:
    """Each claim's verdict, then what was written where, and the time."""
    print()
    for claim in results["results"]["claims"]:
        print(f"[{claim['verdict']}] {claim['claim']}")
    print(
        f"\nwrote {', '.join(written)} and the figures in {out} "
        f"({results['wall_seconds']:.0f} s)"
    )
