"""ReinitResult's table and verdicts; plot_reinit_robustness, headless."""

import math
import sys

import numpy as np
import pytest

import layca_optax


LABELS = ("0", "10", "50", "300")
KERNELS = ("Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel")
# Test accuracies of the digits MLP of test_reinit.py.
RESULT = layca_optax.analysis.ReinitResult(
    paths=KERNELS,
    checkpoint_labels=LABELS,
    baseline=0.9682,
    reinit=np.array(
        [
            [0.7688, 0.8442, 0.9095, 0.9682],
            [0.8275, 0.8777, 0.9481, 0.9682],
            [0.5075, 0.7739, 0.9497, 0.9682],
        ]
    ),
    rerandom=np.array(
        [
            [0.07, 0.11, 0.13, 0.05],
            [0.05, 0.1, 0.13, 0.03],
            [0.03, 0.08, 0.1, 0.2],
        ]
    ),
)


def test_heatmap(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import AxesImage

    fig = layca_optax.analysis.plot_reinit_robustness(
        RESULT, metric_name="test accuracy", vmin=0.0, vmax=1.0
    )
    ax = fig.axes[0]
    (image,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    want = np.hstack([RESULT.reinit, RESULT.rerandom.mean(1, keepdims=True)])
    np.testing.assert_allclose(image.get_array(), want)
    assert image.get_clim() == (0.0, 1.0)
    xlabels = [t.get_text() for t in ax.get_xticklabels()]
    assert xlabels == [*LABELS, "rnd"]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(KERNELS)
    assert fig.axes[1].get_ylabel() == "test accuracy"  # the colour bar
    assert f"{RESULT.baseline:.3f}" in ax.get_title()
    cells = [t.get_text() for t in ax.texts]
    assert cells == [f"{v:.2f}" for v in want.ravel()]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    width, height = fig.get_size_inches() * fig.dpi
    assert pixels.shape == (round(height), round(width), 4)
    assert len(np.unique(pixels.reshape(-1, 4), axis=0)) > 100  # not blank
    fig.savefig(tmp_path / "reinit.png")
    assert (tmp_path / "reinit.png").stat().st_size > 10_000
    # Into given axes, without the rnd column and annotations.
    from matplotlib.figure import Figure

    own = Figure()
    ax = own.add_subplot()
    fig = layca_optax.analysis.plot_reinit_robustness(
        RESULT, ax=ax, rerandom=False, annotate=False
    )
    assert fig is own and not ax.texts
    assert len(ax.get_xticklabels()) == 4


def test_heatmap_without_matplotlib(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.colors"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        layca_optax.analysis.plot_reinit_robustness(RESULT)


def test_table_and_verdicts_for_a_loss():
    r = layca_optax.analysis.ReinitResult(
        paths=("a", "b"),
        checkpoint_labels=("init", "final"),
        baseline=0.5,
        reinit=np.array([[0.55, 0.5], [0.505, 0.5]]),
        rerandom=np.zeros((2, 0)),
        tolerance=0.01,
        higher_is_better=False,
    )
    assert r.classify() == {"a": "critical", "b": "robust"}
    rows = r.to_table()
    assert rows[0]["drop"] == pytest.approx(0.05)
    assert math.isnan(rows[0]["rerandom"])
    md = r.to_markdown(digits=3)
    assert md.splitlines()[0] == (
        "| layer | init | final | rerandom | drop | verdict |"
    )
    assert "| b | 0.505 | 0.500 | nan | 0.005 | robust |" in md


def test_table_for_an_accuracy():
    assert set(RESULT.classify().values()) == {"critical"}
    rows = RESULT.to_table()
    assert [r["layer"] for r in rows] == list(KERNELS)
    assert [r["300"] for r in rows] == [RESULT.baseline] * 3
    assert rows[2]["drop"] == pytest.approx(0.9682 - 0.5075)
    assert rows[1]["rerandom"] == pytest.approx(0.0775)
    loose = layca_optax.analysis.ReinitResult(
        **{**vars(RESULT), "tolerance": 0.15}
    )
    assert loose.classify()["Dense_1/kernel"] == "robust"
    fig = layca_optax.analysis.plot_reinit_robustness(RESULT)
    (image,) = fig.axes[0].images
    # Default colour scale: the range of the cells (rnd: the mean of draws).
    assert image.get_clim() == pytest.approx((0.0775, 0.9682))
