"""The language-model study's optimizers: each family's optimizer for one
configuration, its layers (the weight matrices) and their stacked axes
read from the model."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

import layca_optax
from layca_optax.experiments.lm.settings import FAMILIES, LMSettings
from layca_optax.experiments.models import LM_KERNELS, CharLM


ADAM_B2 = 0.95
"""Adam's second-moment decay in every Adam direction (nanoGPT's)."""


def _name(path: Any) -> list[str]:
    return [str(getattr(k, "key", k)) for k in path]


def layer_mask(params: Any) -> Any:
    """Every weight matrix is a layer, embeddings included; the
    LayerNorms' scales are not."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _name(path)[-1] != "scale", params
    )


def block_kernel_mask(params: Any) -> Any:
    """The blocks' kernels only (Muon's matrices: not the embeddings, the
    unembedding or the LayerNorm scales, as in modded-nanogpt)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: (
            _name(path)[0] == "blocks" and _name(path)[-1] == "kernel"
        ),
        params,
    )


def model_of(s: LMSettings, vocab: int) -> CharLM:
    """The settings' model for ``vocab`` characters."""
    return CharLM(vocab, s.length, s.width, s.heads, s.mlp, s.depth)


@functools.lru_cache(maxsize=8)
def layout(model: CharLM) -> tuple[Any, Callable[[Any], Any]]:
    """``(axis, numbers)``: each leaf's stacked axes
    (:func:`layca_optax.infer_stacked_axes`) and Muon's dimension numbers
    of the block kernels (:func:`layca_optax.infer_muon_dimension_numbers`),
    ``None`` on every other leaf (Adam's, in ``optax.contrib.muon``),
    read from the model's jaxpr."""
    tokens = jax.ShapeDtypeStruct((1, model.length), jnp.int32)
    params = jax.eval_shape(
        lambda t: model.init(jax.random.key(0), t)["params"], tokens
    )
    apply = lambda p, t: model.apply({"params": p}, t)
    axis = layca_optax.infer_stacked_axes(apply, params, tokens)
    inferred = layca_optax.infer_muon_dimension_numbers(apply, params, tokens)

    def numbers(tree: Any) -> Any:
        found = inferred({"blocks": {k: tree["blocks"][k] for k in LM_KERNELS}})
        out = jax.tree.map(lambda _: None, tree)
        out["blocks"].update(found["blocks"])
        return out

    return axis, numbers


def optimizer(
    family: str,
    hp: Mapping[str, Any],
    shape: optax.Schedule,
    settings: LMSettings,
    model: CharLM,
) -> optax.GradientTransformation:
    """A family's optimizer for one configuration.

    Args:
      family: ``"adamw"`` (decay on every matrix), ``"adam-layca"``
        (``layca(base=scale_by_adam())`` on every matrix),
        ``"muon"`` (``optax.contrib.muon`` on the block kernels, Adam on
        the rest), ``"muon-layca"`` (``layca(base=scale_by_muon())`` on
        the block kernels, Adam on the rest), ``"hyperball"`` (AdamH:
        ``hyperball(base=scale_by_adam())`` on every matrix),
        ``"layca-tangent-adam"`` (``layca(base=scale_by_tangent_adam())``
        on every matrix), ``"layca-tangent"``
        (``layca(base=tangent_trace(momentum))`` on every matrix),
        ``"layca-momentum"`` (its control:
        ``layca(base=optax.trace(momentum))``) or ``"adamw-brake"``
        (AdamW, then ``radial_brake(factor)`` on every matrix).
      hp: ``learning_rate`` (and ``weight_decay`` for AdamW, with
        ``factor`` for AdamW + radial brake).
      shape: the learning rate's shape (warmup, peak 1, cooldown).
      settings: the study's settings (Adam's rate on the other leaves).
      model: the model (its stacked axes, Muon's matrices).

    Returns:
      The optimizer. No family but AdamW decays weights.
    """
    lr = lambda step: hp["learning_rate"] * shape(step)
    other_lr = lambda step: settings.other_learning_rate * shape(step)
    adam = lambda: optax.scale_by_adam(b2=ADAM_B2)
    other = optax.adam(other_lr, b2=ADAM_B2)
    axis, numbers = layout(model)
    if family in ("adamw", "adamw-brake"):
        adamw = optax.adamw(
            lr, b2=ADAM_B2, weight_decay=hp["weight_decay"], mask=layer_mask
        )
        if family == "adamw":
            return adamw
        # The brake sees the update as apply_updates adds it: after the
        # rate and the weight decay.
        brake = layca_optax.radial_brake(hp["factor"], axis=axis)
        return optax.chain(adamw, optax.masked(brake, layer_mask))
    bases = {
        "adam-layca": adam,
        "hyperball": adam,
        "layca-tangent-adam": lambda: layca_optax.scale_by_tangent_adam(
            b2=ADAM_B2, axis=axis
        ),
        "layca-tangent": lambda: layca_optax.tangent_trace(
            settings.momentum, axis=axis
        ),
        "layca-momentum": lambda: optax.trace(settings.momentum),
    }
    if family in bases:
        rule = (
            layca_optax.hyperball
            if family == "hyperball"
            else layca_optax.layca
        )
        base = bases[family]()
        return rule(lr, base=base, mask=layer_mask, other=other, axis=axis)
    if family == "muon":
        return optax.contrib.muon(
            lr,
            adam_b2=ADAM_B2,
            adam_learning_rate=other_lr,
            muon_weight_dimension_numbers=numbers,
        )
    if family == "muon-layca":
        muon = optax.contrib.scale_by_muon(weight_dimension_numbers=numbers)
        return layca_optax.layca(
            lr, base=muon, mask=block_kernel_mask, other=other, axis=axis
        )
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
