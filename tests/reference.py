"""An independent NumPy implementation of Layca (SPEC.md section 1).

Written from the authors' `layca(p, step, lr)` (layer-rotation-tools,
`keras/layer_rotation_control.py`) and the paper's Eq. 1, with no JAX or optax
code. The base optimizers give the *direction* in optax's conventions (the
ones a user of `layca_optax.layca(base=optax.scale_by_...())` gets), written
out here by hand from their published update rules.
"""

from __future__ import annotations

import numpy as np


def layca_step(p, step, lr, eps=1e-7):
    """The authors' per-kernel Layca update: returns the new weights.

    Args:
      p: current weights w_t.
      step: the base optimizer's lr-scaled step (optimizer would do p - step).
      lr: the layer's learning rate eta_l.
      eps: the absolute zero-step threshold.
    """
    n = np.linalg.norm(p)
    if n == 0:  # layca_optax's documented policy; the reference divides by 0
        return p.copy()
    s = step - (np.vdot(step, p) / n**2) * p  # 2. tangent projection
    ns = np.linalg.norm(s)
    s = np.zeros_like(s) if ns <= eps else s * n / ns  # 3. normalization
    new = p - lr * s  # 4. update
    return new * n / np.linalg.norm(new)  # 5. back onto the sphere


def depth_multipliers(alpha, num_layers):
    """Eq. 1, as `get_learning_rate_multipliers` computes it."""
    if num_layers == 1:
        return [1.0]
    last = num_layers - 1
    if alpha > 0:
        mult = (1 - alpha) ** (5 / last)
        return [mult ** (last - i) for i in range(num_layers)]
    mult = (1 + alpha) ** (5 / last)
    return [mult**i for i in range(num_layers)]


class Base:
    """A direction-producing base optimizer for one leaf, in NumPy."""

    def __init__(self, name, shape, dtype):
        self.name, self.t = name, 0
        self.m = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        if name == "adagrad":
            self.v = np.full(shape, 0.1, dtype)  # initial_accumulator_value

    def direction(self, g):
        self.t += 1
        t, m, v = self.t, self.m, self.v
        if self.name == "sgd":
            return g
        if self.name in ("momentum", "nesterov"):  # optax.trace(0.9)
            self.m = g + 0.9 * m
            return g + 0.9 * self.m if self.name == "nesterov" else self.m
        if self.name == "adam":  # optax.scale_by_adam()
            self.m = 0.9 * m + 0.1 * g
            self.v = 0.999 * v + 0.001 * g * g
            m_hat = self.m / (1 - 0.9**t)
            v_hat = self.v / (1 - 0.999**t)
            return m_hat / (np.sqrt(v_hat) + 1e-8)
        if self.name == "rmsprop":  # optax.scale_by_rms()
            self.v = 0.9 * v + 0.1 * g * g
            return g / np.sqrt(self.v + 1e-8)
        if self.name == "adagrad":  # optax.scale_by_rss()
            self.v = v + g * g
            return g / np.sqrt(self.v + 1e-7)
        if self.name == "amom":  # optax.ema(0.9, debias=False): SGD_AMom
            self.m = 0.9 * m + 0.1 * g
            return self.m
        if self.name == "lion":  # optax.scale_by_lion()
            d = np.sign(0.1 * g + 0.9 * m)
            self.m = 0.99 * m + 0.01 * g
            return d
        raise ValueError(self.name)


def run_layca(params, grads_fn, steps, lr_fn, base, multipliers, eps=1e-7):
    """Runs `steps` Layca updates on a dict of kernels (all leaves layers).

    Args:
      params: dict name -> np.ndarray.
      grads_fn: (step index, params) -> dict of gradients.
      steps: number of steps.
      lr_fn: step index -> global learning rate rho(t).
      base: name of the base optimizer (see `Base`).
      multipliers: dict name -> multiplier m_l.
      eps: zero-step threshold.

    Returns:
      The list of params after each step.
    """
    params = {k: v.copy() for k, v in params.items()}
    bases = {k: Base(base, v.shape, v.dtype) for k, v in params.items()}
    history = []
    for t in range(steps):
        grads = grads_fn(t, params)
        new = {}
        for k, p in params.items():
            eta = lr_fn(t) * multipliers[k]
            step = eta * bases[k].direction(grads[k])  # Keras' lr-scaled step
            new[k] = layca_step(p, step, eta, eps)
        params = new
        history.append(params)
    return history
