"""RotationHistory (JSON/CSV, atomic writes, checks) and the rotation plots."""

import json
import os
import re

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest
from matplotlib.figure import Figure

import layca_optax


matplotlib.use("Agg")

LAYERS = ["Conv_0/kernel", "Conv_1/kernel", "Conv_10/kernel", "Dense_0/kernel"]
VIRIDIS = matplotlib.colormaps["viridis"]


def make_history(prefix="rotation/", steps=(1, 2, 3, 4, 5), unit=None):
    history = layca_optax.RotationHistory(unit=unit)
    for step in steps:
        history.append(
            step,
            {
                f"{prefix}{k}": 0.1 * step * (i + 1)
                for i, k in enumerate(LAYERS)
            },
        )
    return history


def test_append_accessors_and_jax_metrics():
    w0 = {"Conv_0": {"kernel": jnp.eye(3)}, "bias": jnp.zeros(3)}
    w1 = {"Conv_0": {"kernel": jnp.eye(3)[::-1]}, "bias": jnp.ones(3)}
    history = layca_optax.RotationHistory()
    history.append(0, jax.jit(layca_optax.rotation_metrics)(w0, w0))
    history.append(np.int64(5), layca_optax.rotation_metrics(w1, w0))
    history.append(7, {"rotation/Conv_0/kernel": np.float32(0.25)})
    assert len(history) == 3 and "3 records" in repr(history)
    np.testing.assert_array_equal(history.steps, [0, 5, 7])
    assert history.keys == ("rotation/Conv_0/kernel",)
    assert history.layers("rotation/") == ["Conv_0/kernel"]
    values = history.as_array("rotation/Conv_0/kernel")
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, [0.0, 1 - 1 / 3, 0.25], rtol=1e-6)
    # Later records may list the keys in another order.
    other = make_history()
    record = {f"rotation/{k}": 0.6 * (i + 1) for i, k in enumerate(LAYERS)}
    other.append(6, dict(reversed(record.items())))
    np.testing.assert_allclose(
        other.as_array("rotation/Dense_0/kernel")[-1], 2.4
    )


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_round_trip_is_exact(tmp_path, fmt):
    history = make_history()
    history.append(
        9,
        {
            f"rotation/{k}": v
            for k, v in zip(LAYERS, [0.1, np.inf, np.nan, 1 / 3], strict=True)
        },
    )
    path = tmp_path / f"h.{fmt}"
    getattr(history, f"save_{fmt}")(path)
    loaded = getattr(layca_optax.RotationHistory, f"load_{fmt}")(str(path))
    np.testing.assert_array_equal(loaded.steps, history.steps)
    assert loaded.keys == history.keys
    for key in history.keys:
        np.testing.assert_array_equal(
            loaded.as_array(key), history.as_array(key)
        )
    assert os.listdir(tmp_path) == [f"h.{fmt}"]  # no temporary file left
    if fmt == "csv":
        header = path.read_text().splitlines()[0]
        assert header == "step," + ",".join(f"rotation/{k}" for k in LAYERS)


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "h.json"
    path.write_text("old")
    seen = []

    def failing_replace(src, dst):
        seen.append((os.path.dirname(src), dst))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        make_history().save_json(path)
    assert path.read_text() == "old"  # untouched
    assert os.listdir(tmp_path) == ["h.json"]  # the temporary file is removed
    assert seen == [(str(tmp_path), str(path))]  # written in the same folder


def _json(records, fmt="layca_optax.RotationHistory"):
    return json.dumps({"format": fmt, "records": records})


BAD_FILES = {
    "corrupt.json": (_json([])[:-5], "not valid JSON"),
    "other.json": (_json([], "x"), "'format': 'layca_optax.RotationHistory'"),
    "nostep.json": (_json([{"a": 1}]), "record 0 has no 'step'"),
    "ragged.json": (
        _json([{"step": 1, "a": 1}, {"step": 2, "b": 1}]),
        r"record 1: .*missing \['a'\], extra \['b'\]",
    ),
    "text.json": (_json([{"step": 1, "a": "x"}]), "record 0: .*real scalar"),
    "empty.json": (_json([]), "no records"),
    "nostep.csv": (
        "epoch,a\n1,0.5\n",
        r"no 'step' column first \(got \['epoch', 'a'\]\)",
    ),
    "ragged.csv": (
        "step,a,b\n1,0.5,0.1\n2,0.5\n",
        "ragged rows: line 3 has 2 fields, the header 3",
    ),
    "float.csv": ("step,a\n1,zero\n", "line 2: could not convert"),
    "order.csv": (
        "step,a\n2,0.5\n1,0.5\n",
        "line 3: .*must increase: got 1 after 2",
    ),
    "empty.csv": ("", "no 'step' column first"),
    "header.csv": ("step,a\n", "no records"),
    "repeat.csv": ("step,a,a\n1,0.5,0.5\n", "a column name repeats"),
    "binary.csv": (b"\xff\xfe\x00", "can't decode"),
}


def _colorbar_labels(fig):
    bar = fig.axes[1]
    return [t.get_text() for t in bar.get_yticklabels()]


def test_rotation_curves_artists():
    order = [
        "Conv_0/kernel",
        "Conv_1/kernel",
        "Dense_0/kernel",
        "Conv_10/kernel",
    ]
    fig = layca_optax.plot_rotation_curves(
        make_history(unit="epoch"), layers=order, title="SGD"
    )
    fig.savefig(os.devnull, format="png")  # draws: tick labels are final
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == order
    for line, depth in zip(lines, np.linspace(0, 1, 4), strict=True):
        np.testing.assert_allclose(
            matplotlib.colors.to_rgba(line.get_color()), VIRIDIS(depth)
        )
    dense = lines[2]  # the paper's curves start at (0, 0) before epoch 1
    np.testing.assert_array_equal(dense.get_xdata(), [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(dense.get_ydata(), [0, 0.4, 0.8, 1.2, 1.6, 2.0])
    assert ax.get_ylim() == (0, 1)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "Epoch",
        "Cosine distance",
        "SGD",
    )
    assert _colorbar_labels(fig) == ["First layer", "Last layer"]
    assert isinstance(fig, Figure)


def test_rotation_rates_artists_and_a_given_axes():
    history = make_history(prefix="track/rate/", steps=range(0, 50, 10))
    fig = Figure()
    ax = fig.add_subplot()
    assert layca_optax.plot_rotation_rates(history, ax=ax) is fig
    fig.savefig(os.devnull, format="png")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == LAYERS  # natural order
    for line, depth in zip(lines, np.linspace(0, 1, 4), strict=True):
        np.testing.assert_allclose(
            matplotlib.colors.to_rgba(line.get_color()), VIRIDIS(depth)
        )
    np.testing.assert_array_equal(lines[0].get_xdata(), [0, 10, 20, 30, 40])
    assert ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel()) == (
        "Step",
        r"Rotation rate $\tan\theta$",
    )
    # No order given: the colours follow the names, and the figure says so.
    assert _colorbar_labels(fig) == ["First name", "Last name"]
    assert "Name order" in fig.axes[1].get_ylabel()
    assert ax.get_legend().get_title().get_text() == "Layer (name order)"


def test_rates_that_are_all_zero_plot_on_a_linear_scale():
    history = make_history(prefix="track/rate/")
    zeros = {k: 0.0 for k in history.keys}
    history.append(6, zeros)
    fig = layca_optax.plot_rotation_rates(history)
    assert fig.axes[0].get_yscale() == "log"
    history = layca_optax.RotationHistory()
    history.append(1, zeros)
    fig = layca_optax.plot_rotation_rates(history)  # no log-scale warning
    fig.savefig(os.devnull, format="png")
    assert fig.axes[0].get_yscale() == "linear"


def test_tracked_run_to_csv_to_plot(tmp_path):
    params = {
        "Dense_0": {"kernel": jnp.ones((3, 4))},
        "Dense_1": {"kernel": jnp.eye(4)},
    }
    tx = optax.chain(
        layca_optax.layca(0.1), layca_optax.track_rotation(reference="exact")
    )
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    history = layca_optax.RotationHistory()
    for t in range(1, 4):
        grads = jax.tree.map(
            lambda x, t=t: jnp.sin(t * jnp.arange(x.size).reshape(x.shape)),
            params,
        )
        updates, state = step(params, state, grads)
        params = optax.apply_updates(params, updates)
        history.append(t, layca_optax.tracked_metrics(state))
    history.save_csv(tmp_path / "run.csv")
    loaded = layca_optax.RotationHistory.load_csv(tmp_path / "run.csv")
    np.testing.assert_allclose(
        loaded.as_array("track/rate/Dense_1/kernel"), 0.1, rtol=1e-5
    )
    fig = layca_optax.plot_rotation_curves(loaded, prefix="track/cosine/")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "Dense_0/kernel",
        "Dense_1/kernel",
    ]
    text = json.dumps(loaded.keys)
    assert "track/norm/Dense_0/kernel" in text


# Issue 23: the x label from the history's unit, a depth colour bar above
# 8 curves, layer_order's missing and unknown names.


def test_x_label_follows_the_history_unit():
    def label(unit, **kwargs):
        history = make_history(unit=unit)
        fig = layca_optax.plot_rotation_curves(history, **kwargs)
        return fig.axes[0].get_xlabel()

    assert label("epoch") == "Epoch"
    assert label("step") == label(None) == "Step"  # per step unless said
    assert label("epoch", x_label="Iteration") == "Iteration"
    history = make_history(prefix="track/rate/", unit="epoch")
    fig = layca_optax.plot_rotation_rates(history)
    assert fig.axes[0].get_xlabel() == "Epoch"
    with pytest.raises(ValueError, match=r"curves\(x_label=...\)` must be"):
        layca_optax.plot_rotation_curves(make_history(), x_label=1)
    with pytest.raises(ValueError, match=r"RotationHistory\(unit=...\)` m"):
        layca_optax.RotationHistory(unit="epochs")
    history.unit = "step"  # settable, e.g. after loading a file
    assert history.unit == "step"


def _many(n=12, unit="step"):
    names = [f"blocks/layer{i}/kernel" for i in range(n)]
    history = layca_optax.RotationHistory(unit=unit)
    for step in (1, 2):
        history.append(step, {f"rotation/{k}": 0.01 * step for k in names})
    return history, names


def test_many_curves_get_a_depth_colour_bar_instead_of_a_legend():
    history, names = _many()
    order = names[::-1]  # the output side first, to see the order used
    fig = layca_optax.plot_rotation_curves(history, layer_order=order)
    fig.savefig(os.devnull, format="png")
    ax, bar = fig.axes
    assert ax.get_legend() is None
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == order  # drawn in order
    for line, depth in zip(lines, np.linspace(0, 1, 12), strict=True):
        np.testing.assert_allclose(
            matplotlib.colors.to_rgba(line.get_color()), VIRIDIS(depth)
        )
    labels = _colorbar_labels(fig)
    assert labels[0] == order[0] and labels[-1] == order[-1]
    assert labels[1:-1] and all(t.isdigit() for t in labels[1:-1])
    assert "Depth index" in bar.get_ylabel()
    # A legend on request keeps the first/last layer bar.
    fig = layca_optax.plot_rotation_curves(
        history, layer_order=order, legend=True
    )
    fig.savefig(os.devnull, format="png")
    assert fig.axes[0].get_legend() is not None
    assert _colorbar_labels(fig) == ["First layer", "Last layer"]
    # No order: the bar's ends are the first and last names, and it says so.
    fig = layca_optax.plot_rotation_curves(history)
    fig.savefig(os.devnull, format="png")
    assert _colorbar_labels(fig)[-1] == "blocks/layer11/kernel"
    assert "Name order" in fig.axes[1].get_ylabel()


def test_layer_order_with_per_slice_names_and_unknown_names():
    history = layca_optax.RotationHistory()
    for step in (1, 2):
        history.append(
            step,
            {
                "rotation/blocks/attn/query/kernel": np.array([0.1, 0.2]),
                "rotation/embed/kernel": 0.3,
            },
        )
    order = [
        "embed/kernel",
        "blocks/attn/query/kernel/1",
        "blocks/attn/query/kernel/0",
    ]
    fig = layca_optax.plot_rotation_curves(history, layer_order=order)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == order
    with pytest.raises(
        ValueError,
        match=r"plot_rotation_curves\(layer_order=...\)` names layers the "
        r"history does not have under 'rotation/': \['dense/kernel', 'x/0'\]",
    ):
        layca_optax.plot_rotation_curves(
            history, layer_order=[*order, "dense/kernel", "x/0"]
        )
    with pytest.raises(
        ValueError,
        match=r"rates\(layer_order=...\)` must list every plotted layer .*"
        r"does not list \['blocks/attn/query/kernel/1'\]",
    ):
        rates = layca_optax.RotationHistory()
        rates.append(1, {"track/rate/" + k: 0.1 for k in order})
        layca_optax.plot_rotation_rates(rates, layer_order=order[::2])


# A row of narrow panels (the reproduce study's Fig. 2: 6 panels of 2.9
# inches, legend=False) must stay readable: the depth colour bar with the
# layers' names and a "Depth index" label took half of each panel, and the
# squeezed axes' titles ran over their tick labels.


def _text_boxes(fig, renderer):
    boxes = []
    for ax in fig.axes:
        texts = [
            *ax.get_xticklabels(),
            *ax.get_yticklabels(),
            ax.xaxis.label,
            ax.yaxis.label,
            ax.title,
        ]
        for text in texts:
            if text.get_visible() and text.get_text():
                boxes.append(
                    (text.get_text(), text.get_window_extent(renderer))
                )
    return boxes


@pytest.mark.parametrize(("cols", "names"), [(6, 4), (6, 12), (3, 8)])
def test_narrow_panels_get_a_compact_readable_colour_bar(cols, names):
    from layca_optax.experiments.common.canvas import new_figure

    history, layers = _many(names, unit="epoch")
    width = 2.9 if cols == 6 else 4.2  # reproduce's and lm's panels
    fig = new_figure(width * cols, 3.0)
    axes = fig.subplots(1, cols)
    for ax in axes:
        layca_optax.plot_rotation_curves(
            history,
            layer_order=layers,
            ax=ax,
            title="sgd, lr=3^-3\ntest 90.6 +- 0.4%",
            ylim=(0, 1),
            legend=False,
        )
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = _text_boxes(fig, renderer)
    overlaps = [
        (a, b)
        for i, (a, box) in enumerate(boxes)
        for b, other in boxes[i + 1 :]
        if box.overlaps(other)
    ]
    assert not overlaps
    bars = fig.axes[cols:]
    for ax, bar in zip(axes, bars, strict=True):
        left = ax.get_tightbbox(renderer).x0
        panel = bar.get_tightbbox(renderer).x1 - left
        # The curves keep at least half of the panel (the crowded bar: 31%).
        assert ax.get_window_extent(renderer).width >= 0.5 * panel
        labels = [t.get_text() for t in bar.get_yticklabels()]
        assert labels == ["First layer", "Last layer"]
        assert bar.get_ylabel() == ""
    lines = axes[0].get_lines()  # the colours still follow the depth
    for line, depth in zip(lines, np.linspace(0, 1, names), strict=True):
        np.testing.assert_allclose(
            matplotlib.colors.to_rgba(line.get_color()), VIRIDIS(depth)
        )


class TestMisuse:
    """Bad input to `RotationHistory` and the plots: a ValueError naming
    the call, the argument and the value."""

    def test_append_errors(self):
        history = make_history(steps=[3])
        good = {f"rotation/{k}": 0.0 for k in LAYERS}
        bad = [
            (
                1.5,
                good,
                r"append\(step_or_epoch=...\)` must be an int, got 1.5",
            ),
            (True, good, "must be an int, got True"),
            (3, good, "must increase: got 3 after 3"),
            (4, {}, "non-empty mapping"),
            (4, {"step": 1.0}, "other than 'step'"),
            (4, {1: 1.0}, "other than 'step', got 1"),
            (4, {**good, "x": 1.0}, r"missing \[\], extra \['x'\]"),
            (4, {"rotation/a": 1.0}, r"missing \['rotation/Conv_0/kernel'"),
            (
                4,
                {**good, "rotation/Conv_0/kernel": np.array("x")},
                "real scalar",
            ),
            (
                4,  # an array is split into per-entry keys
                {**good, "rotation/Conv_0/kernel": np.ones(2)},
                r"missing \['rotation/Conv_0/kernel'\], extra "
                r"\['rotation/Conv_0/kernel/0', 'rotation/Conv_0/kernel/1'\]",
            ),
            (4, {"a": np.ones(1), "a/0": 1.0}, "names 'a/0' twice"),
            (4, {"a": np.ones((0, 2))}, "only empty arrays"),
        ]
        for step, metrics, match in bad:
            with pytest.raises(ValueError, match=match):
                history.append(step, metrics)
        assert len(history) == 1  # nothing half-appended
        with pytest.raises(
            ValueError, match=r"as_array\(key=...\)`: no metric 'x'"
        ):
            history.as_array("x")
        with pytest.raises(
            ValueError, match=r"layers\(prefix=...\)`: no key .*'t/'"
        ):
            history.layers("t/")

    def test_empty_history_raises_when_saving_and_plotting(self, tmp_path):
        empty = layca_optax.RotationHistory()
        for call, match in [
            (
                lambda: empty.save_json(tmp_path / "a.json"),
                r"save_json`: the history is empty",
            ),
            (
                lambda: empty.save_csv(tmp_path / "a.csv"),
                r"save_csv`: the history is empty",
            ),
            (
                lambda: layca_optax.plot_rotation_curves(empty),
                r"plot_rotation_curves\(history=...\)`: the history is empty",
            ),
            (
                lambda: layca_optax.plot_rotation_rates(empty),
                r"plot_rotation_rates\(history=...\)`: the history is empty",
            ),
        ]:
            with pytest.raises(ValueError, match=match):
                call()
        assert not os.listdir(tmp_path)

    @pytest.mark.parametrize("name", sorted(BAD_FILES))
    def test_load_errors_name_the_path_and_the_problem(self, tmp_path, name):
        content, match = BAD_FILES[name]
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        load = getattr(
            layca_optax.RotationHistory, f"load_{name.split('.')[1]}"
        )
        with pytest.raises(
            ValueError, match=f"load_.*{re.escape(str(path))}: .*{match}"
        ):
            load(path)

    def test_plot_errors_and_missing_matplotlib(self, monkeypatch):
        history = make_history()
        with pytest.raises(
            ValueError,
            match=r"layers=...\)`: no layer \['Conv_9'\] under 'rotation/'",
        ):
            layca_optax.plot_rotation_curves(
                history, layers=["Conv_0/kernel", "Conv_9"]
            )
        with pytest.raises(
            ValueError, match=r"prefix=...\)`: no key .* 'track/rate/'"
        ):
            layca_optax.plot_rotation_rates(history)
        with pytest.raises(
            ValueError,
            match=r"history=...\)` must be a RotationHistory, got dict",
        ):
            layca_optax.plot_rotation_curves({"rotation/a": [0.1]})
        monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
        with pytest.raises(
            ImportError, match=r"needs matplotlib: pip install matplotlib"
        ):
            layca_optax.plot_rotation_curves(history)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (
                {"ylim": (1, 0)},
                r"plot_rotation_curves\(ylim=...\)` must be .*got \(1, 0\)",
            ),
            (
                {"legend": "yes"},
                r"plot_rotation_curves\(legend=...\)` .*got 'yes'",
            ),
            (
                {"layer_order": ["a"]},
                r"\(layer_order=...\)` must list .*\['b'\]",
            ),
            (
                {"layer_order": "ab"},
                r"\(layer_order=...\)` must be a list .*'ab'",
            ),
            ({"layers": "a"}, r"\(layers=...\)` must be a list .*'a'"),
        ],
        ids=[
            "ylim",
            "legend",
            "layer_order-missing",
            "layer_order-str",
            "layers",
        ],
    )
    def test_plot_arguments_name_the_argument(self, kwargs, match):
        history = layca_optax.RotationHistory()
        history.append(1, {"rotation/a": 0.1, "rotation/b": 0.2})
        with pytest.raises(ValueError, match=match):
            layca_optax.plot_rotation_curves(history, **kwargs)
