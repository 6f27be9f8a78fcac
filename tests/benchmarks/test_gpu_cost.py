"""The GPU benchmark's counters (benchmarks/_gpu_hlo.py, gpu_cost.py).

The counters read program text: checked here on a small hand-written HLO
program, without the CUDA plugin. The benchmark's own check (sgd-momentum
moves 5 parameter-sized arrays per step, Adam 7, on the H100 program) runs
in ``build/venv-gpu`` (``make bench-gpu``) when that venv exists: skipped
otherwise, so the default suite needs no CUDA plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from _gpu_hlo import analyse, kernel_list  # noqa: E402


HLO = """\
HloModule m

%fused_add (p0: f32[8], p1: f32[8]) -> (f32[8], f32[8]) {
  %p0 = f32[8]{0} parameter(0)
  %p1 = f32[8]{0} parameter(1)
  %add = f32[8]{0} add(%p0, %p1)
  ROOT %t = (f32[8]{0}, f32[8]{0}) tuple(%add, %add)
}

%sum (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (w: f32[8], g: f32[8]) -> (f32[8], f32[8]) {
  %w = f32[8]{0} parameter(0)
  %g = f32[8]{0} parameter(1)
  %f = (f32[8]{0}, f32[8]{0}) fusion(%w, %g), kind=kLoop, calls=%fused_add
  %e = f32[8]{0} get-tuple-element(%f), index=0
  %ars = f32[8]{0} all-reduce-start(%e), replica_groups={}, to_apply=%sum
  %ard = f32[8]{0} all-reduce-done(%ars)
  %c = f32[8]{0} copy(%ard)
  ROOT %r = (f32[8]{0}, f32[8]{0}) tuple(%c, %e)
}
"""


class _Compiled:
    """What the counters read of a compiled program: its text."""

    def as_text(self) -> str:
        return HLO


def test_counts_kernels_traffic_and_collectives():
    out = analyse(_Compiled(), param_bytes=32, leaves=1)
    # The fusion, the all-reduce (its start; the done is a wait), the copy.
    assert out["kernels_by_op"] == {"fusion": 1, "all-reduce": 1, "copy": 1}
    # Fusion: reads w, g, writes two arrays; all-reduce: reads e, writes
    # its result (the done's); copy: reads it, writes one: 4 + 2 + 2.
    assert out["traffic_bytes"] == 8 * 32
    assert out["arrays_moved"] == 8
    assert out["collectives"]["all-reduce"]["count"] == 1
    assert out["collectives"]["all-reduce"]["bytes"] == 32
    assert (
        kernel_list(_Compiled())[0]
        == "f = (f32[8], f32[8]) fusion(w: f32[8], g: f32[8])"
    )


GPU_PYTHON = os.path.join(ROOT, "build", "venv-gpu", "bin", "python")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(GPU_PYTHON), reason="no build/venv-gpu (make bench-gpu)"
)
def test_h100_traffic_validation():
    # gpu_cost.py asserts sgd-momentum's 5 and Adam's 7 on this layer.
    cmd = [GPU_PYTHON, "benchmarks/gpu_cost.py"]
    cmd += ["--workloads", "layer_50257x768", "--only", "adam"]
    run = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "adam " in run.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(GPU_PYTHON), reason="no build/venv-gpu (make bench-gpu)"
)
def test_h100_sharded_steps_all_reduce_the_sums_once(tmp_path):
    """GPT-2 small on 8 H100s (FSDP, tensor parallel): the staged steps
    all-reduce each rotated layer's sums once (50 layers: 3 float32
    values each for Layca, 5 for the metrics and the tracking), nothing
    else crosses devices (the variadic reduction's partial sums were
    all-gathered: 4,800 bytes for Layca under FSDP)."""
    out = tmp_path / "gpu_cost.json"
    cmd = [GPU_PYTHON, "benchmarks/gpu_cost.py", "--out", str(out)]
    cmd += ["--workloads", "fsdp", "tensor", "--only", "layca_adam"]
    cmd += ["rotation_metrics", "track_rotation"]
    run = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    sums = {"layca_adam": 3, "rotation_metrics": 5, "track_rotation": 5}
    for recipe in ("fsdp", "tensor"):
        for name, per_layer in sums.items():
            stats = dict(results[recipe][name]["collectives"])
            stats.pop("flagged", None)
            assert set(stats) == {"all-reduce"}, (recipe, name, stats)
            assert stats["all-reduce"]["count"] == 1, (recipe, name)
            assert stats["all-reduce"]["bytes"] == 50 * per_layer * 4
