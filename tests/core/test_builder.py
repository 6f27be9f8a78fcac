"""One way to build a full optimizer (``_builder.py``, issue 25 part 1).

AdaptCopy is Layca with a recorded rate (its fused step, ``axis``, float16
and warnings); each argument is checked once, by the public factory; the
check for ``optax.inject_hyperparams`` is pinned to the installed optax;
``_checks`` imports no other module of this package.
"""

import ast
import collections
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from layca_optax import (
    _axes,
    _checks as checks,
    _multipliers,
    _normalization,
    _projection,
    _reprojection,
    _static_args as static_args,
)
from layca_optax._builder import stateless_step


pytestmark = pytest.mark.filterwarnings("ignore:.*would drift:UserWarning")

W = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
G = {"w": jax.random.normal(jax.random.key(1), (4, 3))}


def _tan(new, old, axes=None):
    """tan of each slice's turn (reduced over ``axes``), in float64."""
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    cos = (new * old).sum(axes) / np.sqrt(
        (new * new).sum(axes) * (old * old).sum(axes)
    )
    return np.tan(np.arccos(np.clip(cos, -1, 1)))


# --- AdaptCopy is Layca with a recorded rate --------------------------------


def test_adapt_copy_float16_stays_finite_and_turns_by_the_rate():
    # tests/core/test_numeric_range.py's case: the chain's lr * g left float16.
    w = {"w": jnp.asarray([[300, 200], [100, 250]], jnp.float16)}
    g = {"w": jnp.asarray([[40000, -30000], [1000, 5]], jnp.float16)}
    rec = layca_optax.analysis.RotationRecording(("w",), [[3.0]])
    tx = layca_optax.analysis.adapt_copy(rec)
    u, _ = jax.jit(tx.update)(g, tx.init(w), w)
    assert u["w"].dtype == jnp.float16
    assert bool(jnp.all(jnp.isfinite(u["w"])))
    new = optax.apply_updates(w, u)["w"]
    np.testing.assert_allclose(
        np.arctan(_tan(new, w["w"])), np.arctan(3.0), atol=3e-3
    )


def test_adapt_copy_axis_turns_every_slice_and_the_leaf_by_the_rate():
    rec = layca_optax.analysis.RotationRecording(("w",), [[0.05]])
    tx = layca_optax.analysis.adapt_copy(rec, axis=0)
    u, _ = tx.update(G, tx.init(W), W)
    new = optax.apply_updates(W, u)["w"]
    np.testing.assert_allclose(_tan(new, W["w"], 0), 0.05, rtol=1e-4)
    np.testing.assert_allclose(_tan(new, W["w"]), 0.05, rtol=1e-4)
    norms = np.linalg.norm(np.asarray(new), axis=0)
    np.testing.assert_allclose(norms, np.linalg.norm(W["w"], axis=0), 1e-6)


@pytest.mark.parametrize("axis", [None, 0])
def test_adapt_copy_is_the_fused_layca_step(axis):
    # A constant recording replays as layca with that rate: the same step.
    rec = layca_optax.analysis.RotationRecording(("w",), [[0.1]])
    base = optax.trace(0.9)
    copy = layca_optax.analysis.adapt_copy(rec, base, axis=axis)
    plain = layca_optax.layca(0.1, base, axis=axis)
    s_copy, s_plain, p = copy.init(W), plain.init(W), W
    for _ in range(3):
        a, s_copy = jax.jit(copy.update)(G, s_copy, p)
        b, s_plain = jax.jit(plain.update)(G, s_plain, p)
        # The rate is traced (a row of the recording) against a constant.
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5, atol=1e-7)
        p = optax.apply_updates(p, a)


def test_adapt_copy_warns_as_layca_does():
    rec = layca_optax.analysis.RotationRecording(("z",), [[0.1]])
    tx = layca_optax.analysis.adapt_copy(rec)
    with pytest.warns(UserWarning, match="these layers are zero: z"):
        tx.init({"z": jnp.zeros((3, 3))})
    w16 = {"z": jnp.ones((3, 3), jnp.float16)}
    tx = layca_optax.analysis.adapt_copy(rec, optax.scale_by_adam())
    with pytest.warns(UserWarning, match="non-finite direction for float16"):
        tx.init(w16)


def test_adapt_copy_checks_its_static_arguments_under_inject():
    rec = layca_optax.analysis.RotationRecording(("w",), [[0.1]])
    injected = optax.inject_hyperparams(layca_optax.analysis.adapt_copy)
    tx = injected(rec, axis=layca_optax.fan_in_axes)
    with pytest.raises(ValueError, match=r"static_args=\('axis',\)"):
        tx.init(W)
    with pytest.raises(ValueError, match=r"^`adapt_copy\(axis=\.\.\.\)`"):
        layca_optax.analysis.adapt_copy(rec, axis="rows")


# --- Each argument is checked once, by the public factory -------------------


_RECORDING = layca_optax.analysis.RotationRecording(("w",), [[0.1]])
_FACTORIES = {
    "layca": lambda lr: layca_optax.layca(lr, axis=0, multipliers=1.0),
    "layca_chain": lambda lr: layca_optax.layca(
        lr, axis=0, multipliers=1.0, fused=False
    ),
    "hyperball": lambda lr: layca_optax.hyperball(lr, axis=0),
    "adapt_copy": lambda lr: layca_optax.analysis.adapt_copy(
        _RECORDING, axis=0
    ),
    "layca_lars": lambda lr: layca_optax.layca_lars(lr, axis=0),
}


@pytest.fixture
def validations(monkeypatch):
    """The checks each argument got (outermost checks only: a schedule's
    value is checked inside the learning rate's check)."""
    counts = collections.Counter()
    depth = [0]

    def spy(module, name, key):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            if not depth[0]:
                counts[key(*args)] += 1
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(module, name, wrapper)

    spy(_axes, "check_axis", lambda *_: "axis")
    spy(checks, "check_learning_rate", lambda *_: "learning_rate")
    spy(checks, "check_scalar", lambda _, name: name)
    spy(_multipliers, "_check_factors", lambda *_: "multipliers")
    spy(static_args, "check_not_scheduled", lambda *_: "inject")
    return counts


@pytest.mark.parametrize(
    "name",
    list(_FACTORIES),
)
def test_each_argument_is_checked_once(validations, name):
    calls = []

    def schedule(count):
        calls.append(count)
        return 0.1

    _FACTORIES[name](schedule)
    assert validations, "the spies saw nothing"
    assert max(validations.values()) == 1, dict(validations)
    # The schedule is called once, at step 0, by the learning rate's check.
    assert calls == ([] if name == "adapt_copy" else [0])


def test_stateless_steps_are_the_public_primitives():
    params = {"w": jax.random.normal(jax.random.key(2), (5, 4))}
    grads = {"w": jax.random.normal(jax.random.key(3), (5, 4))}
    pairs = [
        (
            stateless_step(_projection, 0),
            layca_optax.project_to_tangent(axis=0),
        ),
        (
            stateless_step(_normalization, 0, 0.5),
            layca_optax.normalize_to_param_norm(axis=0, eps=0.5),
        ),
        (
            stateless_step(_reprojection, 0),
            layca_optax.reproject_to_sphere(axis=0),
        ),
    ]
    for ours, public in pairs:
        a, _ = ours.update(grads, ours.init(params), params)
        b, _ = public.update(grads, public.init(params), params)
        np.testing.assert_array_equal(a["w"], b["w"])


# --- optax.inject_hyperparams' record, pinned -------------------------------


def test_inject_hyperparams_keeps_the_record_this_package_reads():
    # If optax renames its local, this fails here (and the check warns).
    wrapped = optax.inject_hyperparams(layca_optax.layca)
    assert static_args._RECORD in wrapped.__code__.co_cellvars
    # Callables that no other check catches: fan_in_axes(count) is (), a
    # valid axis; the multipliers' value at a count is 1.0.
    for kwargs in (
        {"axis": layca_optax.fan_in_axes},
        {"multipliers": lambda p: jax.tree.map(lambda _: 1.0, p)},
    ):
        name = next(iter(kwargs))
        tx = wrapped(0.1, **kwargs)
        with pytest.raises(ValueError, match=rf"static_args=\('{name}',\)"):
            tx.init(W)


def test_an_unreadable_record_warns_instead_of_passing(monkeypatch):
    # An inject_hyperparams frame whose record has another name.
    frame = types.SimpleNamespace(
        f_code=types.SimpleNamespace(
            co_qualname="inject_hyperparams.<locals>.init_fn"
        ),
        f_globals={"__name__": "optax.schedules._inject"},
        f_locals={"schedules": {}},
    )
    assert static_args.scheduled_names(frame) is None
    monkeypatch.setattr(static_args, "_builder_frame", lambda: frame)
    monkeypatch.setattr(static_args, "_unreadable", [])
    with pytest.warns(RuntimeWarning, match="could not read optax"):
        layca_optax.layca(0.1)
    other = types.SimpleNamespace(  # any other frame: nothing scheduled
        f_code=types.SimpleNamespace(co_qualname="main"),
        f_globals={"__name__": "__main__"},
        f_locals={},
    )
    assert static_args.scheduled_names(other) == set()


# --- No import cycle --------------------------------------------------------


def test_checks_imports_no_module_of_this_package():
    source = pathlib.Path(checks.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("layca_optax"), node
        elif isinstance(node, ast.Import):
            assert all(not a.name.startswith("layca_optax") for a in node.names)


@pytest.mark.parametrize("fused", [True, False])
def test_a_callable_axis_is_resolved_once_per_leaf_and_update(fused):
    calls = []

    def rule(x):
        calls.append(x.shape)
        return tuple(range(x.ndim - 1))

    params = {"a": jnp.ones((3, 4)), "b": jnp.ones((4, 2))}
    tx = layca_optax.layca(0.1, axis=rule, fused=fused, mask=True)
    state = tx.init(params)
    calls.clear()
    jax.jit(tx.update)(params, state, params)
    assert sorted(calls) == [(3, 4), (4, 2)]
