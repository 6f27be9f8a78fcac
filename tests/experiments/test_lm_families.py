"""The language-model study's rotation-controlled families (Layca with
tangent momentum and its plain-momentum control, AdamW + radial brake)
against NumPy references, and ``lm --scale``'s settings and command."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from layca_optax.experiments import cli as _cli
from layca_optax.experiments.lm import (
    main as lm_main,
    report,
    run as lm_run,
    settings,
    stats,
)
from layca_optax.experiments.lm.optimizers import model_of, optimizer
from layca_optax.experiments.lm.train import lr_shape, setup


pytest.importorskip("bible")

S = settings.QUICK


def _model_and_params():
    model = model_of(S, vocab=11)
    tokens = jnp.zeros((1, S.length), jnp.int32)
    return model, model.init(jax.random.key(0), tokens)["params"]


def _grads(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda w: jnp.asarray(rng.normal(size=w.shape), w.dtype), params
    )


def _slices(name, w):
    """A leaf as its layers, NumPy: the blocks' leaves are stacked (one
    layer per block, axis 0), every other matrix is one layer."""
    w = np.asarray(w, np.float64)
    return list(w) if name[0] == "blocks" else [w]


def _names(params):
    return [
        [str(getattr(k, "key", k)) for k in path]
        for path, _ in jax.tree_util.tree_leaves_with_path(params)
    ]


def _braked(u, w, factor):
    """The reference brake of one layer: the outward radial part of ``u``
    scaled by ``factor``."""
    r = np.sum(u * w) / np.sum(w * w)
    return u - (1 - factor) * max(r, 0.0) * w, r


@pytest.mark.slow  # 7 s on 2 cores: out of `make test-fast`
def test_adamw_brake_is_adamw_then_the_brake_on_each_layer():
    model, params = _model_and_params()
    hp = {"learning_rate": 0.03, "weight_decay": 0.1, "factor": 0.25}
    shape = lr_shape(S)
    braked = optimizer("adamw-brake", hp, shape, S, model)
    plain = optimizer("adamw", hp, shape, S, model)
    b_state, p_state = braked.init(params), plain.init(params)
    signs = set()
    for t in range(3):
        grads = _grads(params, t)
        got, b_state = jax.jit(braked.update)(grads, b_state, params)
        want, p_state = jax.jit(plain.update)(grads, p_state, params)
        names = _names(params)
        leaves = zip(
            names,
            jax.tree.leaves(got),
            jax.tree.leaves(want),
            jax.tree.leaves(params),
            strict=True,
        )
        for name, g, u, w in leaves:
            if name[-1] == "scale":  # not a layer: AdamW's update
                np.testing.assert_allclose(g, u, rtol=1e-6, atol=1e-9)
                continue
            for g_l, u_l, w_l in zip(
                _slices(name, g),
                _slices(name, u),
                _slices(name, w),
                strict=True,
            ):
                ref, r = _braked(u_l, w_l, 0.25)
                signs.add(r > 0)
                np.testing.assert_allclose(g_l, ref, rtol=2e-5, atol=1e-8)
        params = optax.apply_updates(params, got)
    assert signs == {True, False}  # outward parts braked, inward kept


def _angles(old, new):
    """Each layer's turn (radians) from ``old`` to ``new``, NumPy."""
    out = []
    for name, w0, w1 in zip(
        _names(old), jax.tree.leaves(old), jax.tree.leaves(new), strict=True
    ):
        if name[-1] == "scale":
            continue
        for a, b in zip(_slices(name, w0), _slices(name, w1), strict=True):
            cos = np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))
            out.append(np.arccos(np.clip(cos, -1, 1)))
    return np.array(out)


def _tangent_moment(state, kind, field):
    """The first moment of the one ``kind`` state inside ``state``."""
    found = [
        getattr(x, field)
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kind))
        if isinstance(x, kind)
    ]
    assert len(found) == 1
    return found[0]


def _check_tangent(moment, params):
    """Each layer's moment is orthogonal to its weights (NumPy)."""
    weights = {
        tuple(name): w
        for name, w in zip(_names(params), jax.tree.leaves(params), strict=True)
    }
    layers = jax.tree_util.tree_leaves_with_path(moment)  # layers only
    assert len(layers) == sum(n[-1] != "scale" for n in weights)
    for path, m in layers:
        name = [str(getattr(k, "key", k)) for k in path]
        w = weights[tuple(name)]
        for m_l, w_l in zip(_slices(name, m), _slices(name, w), strict=True):
            cos = np.sum(m_l * w_l) / np.sqrt(
                np.sum(m_l * m_l) * np.sum(w_l * w_l)
            )
            assert abs(cos) < 1e-5


@pytest.mark.parametrize(
    ("family", "control", "kind", "field"),
    [
        (
            "layca-tangent",
            "layca-momentum",
            layca_optax.TangentTraceState,
            "trace",
        ),
        (
            "layca-tangent-adam",
            "adam-layca",
            layca_optax.TangentAdamState,
            "mu",
        ),
    ],
)
@pytest.mark.slow  # 9 s on 2 cores: out of `make test-fast`
def test_layca_with_a_tangent_base_turns_each_layer_by_arctan_lr(
    family, control, kind, field
):
    model, params = _model_and_params()
    lr = 0.05
    hp = {"learning_rate": lr, "weight_decay": 0.0, "factor": 1.0}
    shape = lr_shape(S)
    txs = {f: optimizer(f, hp, shape, S, model) for f in (family, control)}
    states = {f: tx.init(params) for f, tx in txs.items()}
    diffs = []
    for t in range(4):
        grads = _grads(params, 10 + t)
        out = {}
        for f, tx in txs.items():
            out[f], states[f] = jax.jit(tx.update)(grads, states[f], params)
        new = optax.apply_updates(params, out[family])
        eta = lr * float(shape(t))
        np.testing.assert_allclose(
            _angles(params, new), np.arctan(eta), rtol=2e-3
        )
        # The first moment lies in the tangent space of the weights it saw.
        _check_tangent(_tangent_moment(states[family], kind, field), params)
        diffs.append(
            max(
                float(jnp.abs(a - b).max() / jnp.abs(a).max())
                for a, b in zip(
                    jax.tree.leaves(out[family]),
                    jax.tree.leaves(out[control]),
                    strict=True,
                )
            )
        )
        params = new
    # The transport changes the direction (relative to the update) once
    # there is an old moment to carry; the momentum's first step has none:
    # there the two are one update.
    assert diffs[-1] > 5e-4
    if family == "layca-tangent":
        assert diffs[0] < 1e-5


def test_grids_of_the_new_families():
    d = settings.DEFAULT
    assert [u.label for u in settings.grid(d, "adamw-brake")] == [
        "adamw-brake, lr=0.01, wd=0.1, factor=0",
        "adamw-brake, lr=0.01, wd=0.1, factor=0.5",
        "adamw-brake, lr=0.02, wd=0.1, factor=0",
        "adamw-brake, lr=0.02, wd=0.1, factor=0.5",
    ]
    assert [u.label for u in settings.grid(d, "layca-tangent")] == [
        "layca-tangent, lr=3^-5",
        "layca-tangent, lr=3^-4.5",
        "layca-tangent, lr=3^-4",
        "layca-tangent, lr=3^-3",
    ]
    assert settings.grid(d, "layca-momentum")[0].hparams == (
        ("learning_rate", 3**-5),
    )
    assert [u.label for u in settings.grid(d, "layca-tangent-adam")] == [
        "layca-tangent-adam, lr=3^-5",
        "layca-tangent-adam, lr=3^-4",
        "layca-tangent-adam, lr=3^-3",
    ]
    configs = sum(len(settings.grid(d, f)) for f in settings.FAMILIES)
    assert settings.runs(d) == configs + 2 * len(settings.FAMILIES)
    with pytest.raises(ValueError, match="unknown family 'x'"):
        settings.grid(d, "x")


def test_the_pair_claims_compare_a_family_with_its_control():
    def summary(losses, steps):
        reached = [s for s in steps if s is not None]
        return {
            "summary": {
                "final_test_loss": stats.mean_sd(losses),
                "steps_to_target": {
                    **stats.mean_sd(reached),
                    "reached": len(reached),
                    "seeds": len(steps),
                },
            }
        }

    families = {
        "adamw": summary([2.0, 2.01, 1.99], [400, 425, 450]),
        "layca-tangent": summary([1.9, 1.91, 1.89], [300, 325, 350]),
        "layca-momentum": summary([2.1, 2.11, 2.09], [None, None, None]),
    }
    claims = stats.check_claims(families)
    pair = [c for c in claims if "plain momentum in" in c["claim"]]
    assert [c["verdict"] for c in pair] == ["holds"]
    speed = [c for c in claims if c["claim"].endswith("plain momentum")]
    assert [c["verdict"] for c in speed] == ["holds"]
    assert len(claims) == 2 * 2 + 2


# ----------------------------------------------------------------- scale


def test_scale_grows_every_dimension_and_the_report_says_so():
    d, s = settings.DEFAULT, settings.make_settings(scale=True)
    assert s.scale and not s.quick
    for name in ("width", "depth", "length", "batch", "steps", "mlp"):
        assert getattr(s, name) > getattr(d, name), name
    assert s.steps % s.eval_every == 0 and s.warmup == settings.SCALE.warmup
    for family in settings.FAMILIES:
        assert settings.grid(s, family)  # every family has a grid
    block = {"setup": setup(s), "target": 1.0}
    assert block["setup"]["parameters"] > 4_000_000  # 4.8M, not run here
    text = "\n".join(report._setup_lines(block))
    assert "**--scale**: grown for a GPU" in text
    assert "6 blocks" in text and "width 256" in text
    assert "64 x 256 characters" in text
    with pytest.raises(ValueError, match="quick and scale exclude"):
        settings.make_settings(quick=True, scale=True)
    with pytest.raises(ValueError, match="multiple of 100"):
        settings.make_settings(scale=True, steps=150)


class _Called(Exception):
    """Raised by a stand-in for the study: the arguments it got."""


def test_the_scale_command_builds_its_settings_and_warns_on_a_cpu(
    monkeypatch, tmp_path, capsys
):
    def run_lm(chosen, out, jobs, **kwargs):
        raise _Called(chosen, jobs)

    monkeypatch.setattr(lm_run, "run_lm", run_lm)
    out = str(tmp_path / "out")
    with pytest.raises(_Called) as called:
        _cli.main(["lm", "--scale", "--steps", "200", "--out", out])
    chosen, _ = called.value.args
    assert chosen == settings.make_settings(scale=True, steps=200)
    err = capsys.readouterr().err
    if jax.default_backend() == "cpu":
        assert "--scale" in err and "GPU" in err
    assert lm_main.settings is settings
    with pytest.raises(SystemExit) as info:
        _cli.main(["lm", "--scale", "--steps", "150", "--out", out])
    assert info.value.code == 2
    assert "multiple of 100" in capsys.readouterr().err


# -------------------------------------------------------------- figures


def _shown_ticks(axis):
    """The tick labels drawn: those of ticks inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(lo), abs(hi), 1.0)
    return [
        t.label1
        for t in axis.get_major_ticks()
        if lo - slack <= t.get_loc() <= hi + slack
    ]


def _check_readable(fig):
    """Every title, label and tick label lies inside the figure, no two
    of them overlap, and no legend covers a panel."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    texts = list(fig.texts)  # the suptitle among them
    for ax in [a for a in fig.axes if a.get_visible()]:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        texts += [*_shown_ticks(ax.xaxis), *_shown_ticks(ax.yaxis)]
    boxes = [
        (t.get_text(), t.get_window_extent(renderer))
        for t in texts
        if t.get_visible() and t.get_text()
    ]
    for text, box in boxes:
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, text
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, text
    overlaps = [
        (a, b)
        for i, (a, box) in enumerate(boxes)
        for b, other in boxes[i + 1 :]
        if box.overlaps(other)
    ]
    assert not overlaps
    for legend in fig.legends:
        covered = legend.get_window_extent(renderer)
        for ax in [a for a in fig.axes if a.get_visible()]:
            assert not covered.overlaps(ax.get_window_extent(renderer))


@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_the_committed_runs_figures_are_readable():
    import json
    from pathlib import Path

    from layca_optax.experiments.lm.figures import figures

    path = Path(__file__).parents[2] / "docs" / "lm" / settings.RESULTS_NAME
    block = json.loads(path.read_text())["results"]
    drawn = figures(block)
    assert set(drawn) == set(settings.FIGURE_NAMES)
    for fig in drawn.values():
        _check_readable(fig)


@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_the_reproduce_figures_are_readable():
    # The same check on the reproduce study's figures, redrawn from its
    # committed results.json (Fig. 6's title was cut at both ends, the
    # rotation/re-initialization figure's too).
    import json
    from pathlib import Path

    from layca_optax.experiments.reproduce.report import draw_figures

    path = Path(__file__).parents[2] / "docs" / "reproduce" / "results.json"
    drawn = draw_figures(json.loads(path.read_text()))
    for key in ("fig1", "fig2", "fig6", "rotation_reinit"):
        _check_readable(drawn[key])
