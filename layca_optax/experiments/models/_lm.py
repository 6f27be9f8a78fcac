"""A small decoder-only language model: pre-LayerNorm blocks scanned with
``nn.scan``, so that every block kernel is one leaf with a leading
stacked-layer axis (``(depth, d_in, d_out)``)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


LM_KERNELS = ("query", "key", "value", "out", "mlp_in", "mlp_out")
"""Each block's weight matrices, in forward order."""


class LMBlock(nn.Module):
    """``x + attn(ln(x))`` then ``x + mlp(ln(x))``: causal multi-head
    attention and a GELU MLP, no biases, LayerNorms with a scale only.

    Attributes:
      width: the residual stream's width.
      heads: attention heads (they divide ``width``).
      mlp: the MLP's hidden width.
    """

    width: int
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        """The block's output (``nn.scan``'s carry) for ``(batch, n,
        width)``."""
        dense = lambda f, name: nn.Dense(f, use_bias=False, name=name)
        norm = lambda name: nn.LayerNorm(use_bias=False, name=name)
        h, d = self.heads, self.width // self.heads
        y = norm("ln_attn")(x)
        split = lambda t: t.reshape(*t.shape[:2], h, d)
        q, k, v = (split(dense(self.width, n)(y)) for n in LM_KERNELS[:3])
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d)
        n = x.shape[1]
        causal = jnp.tril(jnp.ones((n, n), bool))
        scores = jnp.where(causal[None, None], scores, -jnp.inf)
        mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores), v)
        x = x + dense(self.width, "out")(mixed.reshape(x.shape))
        y = nn.gelu(dense(self.mlp, "mlp_in")(norm("ln_mlp")(x)))
        return x + dense(self.width, "mlp_out")(y), None


class CharLM(nn.Module):
    """Token and position embeddings, ``depth`` :class:`LMBlock` s under
    ``nn.scan``, a final LayerNorm and an unembedding: the logits of the
    next character at every position.

    Parameters: ``embed/embedding`` ``(vocab, width)``, ``pos_embed``
    ``(length, width)``, ``blocks/{query,key,value,out}/kernel``
    ``(depth, width, width)``, ``blocks/mlp_in/kernel`` ``(depth, width,
    mlp)``, ``blocks/mlp_out/kernel`` ``(depth, mlp, width)``, the
    LayerNorms' scales ``blocks/ln_attn/scale``, ``blocks/ln_mlp/scale``
    ``(depth, width)`` and ``ln_final/scale`` ``(width,)``, and
    ``unembed/kernel`` ``(width, vocab)``. Embeddings are drawn from
    N(0, 1/width), kernels as Flax's ``Dense``.

    Attributes:
      vocab: the characters.
      length: the longest sequence.
      width: the residual stream's width.
      heads: attention heads (they divide ``width``).
      mlp: the MLP's hidden width.
      depth: the number of blocks.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = CharLM(vocab=5, length=8, width=16, heads=2, mlp=32, depth=2)
      >>> tokens = jnp.zeros((3, 8), jnp.int32)
      >>> params = model.init(jax.random.key(0), tokens)["params"]
      >>> model.apply({"params": params}, tokens).shape
      (3, 8, 5)
      >>> params["blocks"]["query"]["kernel"].shape
      (2, 16, 16)
    """

    vocab: int
    length: int
    width: int = 64
    heads: int = 4
    mlp: int = 256
    depth: int = 2

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Logits ``(batch, n, vocab)`` of ``(batch, n)`` int tokens, ``n
        <= length``."""
        if self.width % self.heads:
            raise ValueError(
                f"CharLM: width {self.width} is not a multiple of heads "
                f"{self.heads}"
            )
        init = nn.initializers.normal(self.width**-0.5)
        embed = nn.Embed(
            self.vocab, self.width, embedding_init=init, name="embed"
        )
        pos = self.param("pos_embed", init, (self.length, self.width))
        x = embed(tokens) + pos[None, : tokens.shape[1]]
        blocks = nn.scan(
            LMBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.depth,
        )(self.width, self.heads, self.mlp, name="blocks")
        x, _ = blocks(x, None)
        x = nn.LayerNorm(use_bias=False, name="ln_final")(x)
        return nn.Dense(self.vocab, use_bias=False, name="unembed")(x)
