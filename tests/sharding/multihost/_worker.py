"""One process of a multi-process JAX job on CPU, for
tests/sharding/test_multihost.py.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/sharding/multihost/_worker.py --out DIR --processes 2 \\
        --process-id I --port PORT

runs the cases of ``_cases.py`` and ``_parallel.py`` on a mesh of the
job's 4 CPU devices, the processes joined by ``jax.distributed`` over Gloo.
With ``--processes 1`` (and 4 devices in ``XLA_FLAGS``) it is the
one-process reference, which also runs the unstacked mixture of experts.
Process 0 writes each case's results as ``DIR/<case>.npz`` (leaf paths as
keys, no pickles); each process writes ``DIR/facts<I>.json`` (placements,
checkpoint checks, seconds per case). Orbax writes its checkpoint to
``DIR/checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def flat(tree: Any) -> dict[str, np.ndarray]:
    """{"params/Dense_0/kernel": array, ...}: the leaves by path."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(x)
        for path, x in leaves
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    return parser.parse_args(argv)


def start(args: argparse.Namespace) -> None:
    """Joins the job (several processes), or checks the devices (one)."""
    if args.processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.processes,
            process_id=args.process_id,
            initialization_timeout=120,
        )
    if jax.device_count() != 4 or jax.process_count() != args.processes:
        raise SystemExit(
            f"expected 4 devices over {args.processes} processes, got "
            f"{jax.device_count()} over {jax.process_count()}"
        )


def cases(out: pathlib.Path) -> dict[str, Callable[[], Any]]:
    """{case: function returning (results, facts)}, in running order."""
    import _cases
    import _parallel

    trained: dict[str, Any] = {}

    def train(recipe: str) -> Callable[[], Any]:
        def run() -> Any:
            results, facts, arrays = _cases.train(recipe)
            trained[recipe] = arrays
            return results, facts

        return run

    todo: dict[str, Callable[[], Any]] = {
        f"train_{r}": train(r) for r in _cases.RECIPES
    }
    todo["checkpoint"] = lambda: (
        None,
        _cases.checkpoint(str(out / "checkpoint"), *trained["fsdp"]),
    )
    todo["moe"] = _parallel.moe
    todo["replicated"] = lambda: (_parallel.replicated(), {})
    if jax.process_count() == 1:
        todo["moe_unstacked"] = lambda: (_parallel.moe_unstacked(), {})
    return todo


def main(argv: list[str] | None = None) -> None:
    """Runs every case and writes the results."""
    args = parse(argv)
    start(args)
    args.out.mkdir(parents=True, exist_ok=True)
    facts: dict[str, Any] = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_devices": [d.id for d in jax.local_devices()],
        "seconds": {},
    }
    for name, case in cases(args.out).items():
        begin = time.perf_counter()
        results, facts[name] = case()
        facts["seconds"][name] = round(time.perf_counter() - begin, 2)
        if results is not None and jax.process_index() == 0:
            np.savez(args.out / f"{name}.npz", **flat(results))
    path = args.out / f"facts{jax.process_index()}.json"
    path.write_text(json.dumps(facts, indent=1), encoding="utf-8")
    if args.processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
