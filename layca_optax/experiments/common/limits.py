"""The limits every study's command shares: seeds and worker processes
(imported without JAX: the command line reads them for ``--help``)."""

from __future__ import annotations

import os


MAX_JOBS = 4
"""The default worker processes: the CPUs, up to this many."""

MAX_SEEDS = 100
"""The most seeds per configuration (``--seeds``): 100 seeds are 5,900
runs, a ``results.json`` of about 75 MB at the default scale."""

MAX_SEED = 2**32 - 1
"""The largest seed: JAX's keys hold 32 bits of it (larger seeds, and
negative ones, would repeat smaller ones)."""


def default_jobs() -> int:
    """The default worker processes: the CPUs, up to :data:`MAX_JOBS`."""
    return min(os.cpu_count() or 1, MAX_JOBS)


def max_jobs() -> int:
    """The most worker processes ``--jobs`` accepts: the CPUs, or
    :data:`MAX_JOBS` if more (each worker loads JAX and the data: more
    workers than CPUs only cost memory)."""
    return max(os.cpu_count() or 1, MAX_JOBS)
