"""Parameter trees shaped like ResNet-50 and GPT-2 small, for benchmarks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """ResNet-50 (torchvision layout): 25.6M params in 161 leaves.

    Conv kernels (HWIO), BatchNorm scale and bias vectors, and the final
    Dense kernel and bias.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(name, k, cin, cout):
        shapes[f"{name}/conv/kernel"] = (k, k, cin, cout)
        shapes[f"{name}/bn/scale"] = (cout,)
        shapes[f"{name}/bn/bias"] = (cout,)

    conv_bn("stem", 7, 3, 64)
    cin = 64
    for stage, (blocks, width) in enumerate(
        zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)
    ):
        for b in range(blocks):
            name = f"stage{stage}/block{b}"
            conv_bn(f"{name}/a", 1, cin, width)
            conv_bn(f"{name}/b", 3, width, width)
            conv_bn(f"{name}/c", 1, width, 4 * width)
            if b == 0:
                conv_bn(f"{name}/proj", 1, cin, 4 * width)
            cin = 4 * width
    shapes["head/kernel"] = (2048, 1000)
    shapes["head/bias"] = (1000,)
    return shapes


def gpt2_small_shapes() -> dict[str, tuple[int, ...]]:
    """GPT-2 small: 124M params in 148 leaves (tied embeddings)."""
    d, vocab, ctx = 768, 50257, 1024
    shapes: dict[str, tuple[int, ...]] = {
        "wte": (vocab, d),
        "wpe": (ctx, d),
    }
    for i in range(12):
        p = f"h{i}"
        shapes[f"{p}/ln_1/scale"] = (d,)
        shapes[f"{p}/ln_1/bias"] = (d,)
        shapes[f"{p}/attn/c_attn/kernel"] = (d, 3 * d)
        shapes[f"{p}/attn/c_attn/bias"] = (3 * d,)
        shapes[f"{p}/attn/c_proj/kernel"] = (d, d)
        shapes[f"{p}/attn/c_proj/bias"] = (d,)
        shapes[f"{p}/ln_2/scale"] = (d,)
        shapes[f"{p}/ln_2/bias"] = (d,)
        shapes[f"{p}/mlp/c_fc/kernel"] = (d, 4 * d)
        shapes[f"{p}/mlp/c_fc/bias"] = (4 * d,)
        shapes[f"{p}/mlp/c_proj/kernel"] = (4 * d, d)
        shapes[f"{p}/mlp/c_proj/bias"] = (d,)
    shapes["ln_f/scale"] = (d,)
    shapes["ln_f/bias"] = (d,)
    return shapes


def small_leaves_shapes(n: int = 1000) -> dict[str, tuple[int, ...]]:
    """``n`` small kernels (16x16) and as many bias vectors."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(n // 2):
        shapes[f"layer{i:04d}/kernel"] = (16, 16)
        shapes[f"layer{i:04d}/bias"] = (16,)
    return shapes


TREES = {
    "resnet50": resnet50_shapes,
    "gpt2_small": gpt2_small_shapes,
    "1000_small_leaves": small_leaves_shapes,
}


def make_tree(shapes: dict[str, tuple[int, ...]], seed: int) -> dict:
    """A nested dict of float32 arrays with the given shapes."""
    rng = np.random.default_rng(seed)
    tree: dict = {}
    for path, shape in shapes.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(
            rng.standard_normal(shape, dtype=np.float32) * 0.05
        )
    return jax.tree.map(jnp.asarray, tree)
