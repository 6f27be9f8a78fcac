"""The reproduction's report: its figures and ``report.md``, written from
``results.json`` alone (so ``layca-optax report`` redraws them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from layca_optax._io import atomic_write_text
from layca_optax.experiments import _repro_figures as figures
from layca_optax.experiments._claims import MATCH_POINTS, T_THRESHOLD, table
from layca_optax.experiments._format import number
from layca_optax.experiments._report import write_png


REPORT_NAME = "report.md"


def write_report(results: Mapping[str, Any], out: str | Path) -> None:
    """Draws the figures and writes them and ``report.md`` into ``out``
    (everything drawn before the first file is written)."""
    out = Path(out)
    drawn = draw_figures(results)
    text = markdown(results, [figures.FIGURES[k] for k in drawn])
    _write_pngs(drawn, out)
    atomic_write_text(out / REPORT_NAME, text)


def _layers(results: Mapping[str, Any], experiment: str) -> list[str]:
    task = results["experiments"][experiment]["task"]
    return results["settings"][task]["layers"]


def write_figures(results: Mapping[str, Any], out: Path) -> list[str]:
    """Draws every figure into ``out`` (atomically); returns their names."""
    return _write_pngs(draw_figures(results), out)


def _write_pngs(drawn: Mapping[str, Any], out: Path) -> list[str]:
    """Writes the figures :func:`draw_figures` drew; returns their names."""
    for key, fig in drawn.items():
        write_png(out / figures.FIGURES[key], fig, dpi=90)
    return [figures.FIGURES[k] for k in drawn]


def draw_figures(results: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure, ``{key of FIGURES: matplotlib Figure}``."""
    exps = results["experiments"]
    return {
        "fig1": figures.fig1(exps["fig1"]["configs"], _layers(results, "fig1")),
        "fig2": figures.curves_figure(
            exps["fig2"]["configs"],
            _layers(results, "fig2"),
            "Fig. 2: SGD without weight decay, by learning rate",
        ),
        "fig3": figures.curves_figure(
            exps["fig3"]["configs"],
            _layers(results, "fig3"),
            f"Fig. 3: {exps['fig3']['title']}, by learning rate",
        ),
        "fig6": figures.fig6(exps["fig6"]["configs"], _layers(results, "fig6")),
        "fig8": figures.fig8(exps["fig8"]["configs"], _layers(results, "fig8")),
        "reinit": figures.reinit(reinit_studies(results)),
    }


def reinit_studies(results: Mapping[str, Any]) -> dict[str, list]:
    """``{"<model>, <configuration>": its seeds' reinit studies}``."""
    studies: dict[str, list] = {}
    for e in results["experiments"].values():
        for c in e["configs"]:
            entries = [r["reinit"] for r in c["runs"] if "reinit" in r]
            if entries:
                model = "CNN" if e["task"] == "cnn" else "MLP"
                studies[f"{model}, {c['label']}"] = entries
    return studies


def _row(s: Mapping[str, Any]) -> str:
    return (
        f"| {s['label']} | {number(s['test_mean'], scale=100)} +- "
        f"{number(s['test_std'], scale=100)} | "
        f"{number(s['train_mean'], scale=100)} | "
        f"{number(s['rotation_mean'], '.3f')} | "
        f"{number(s['rotation_min'], '.3f')} |"
    )


def _table_md(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "| configuration | test acc. % (mean +- sd) | train acc. % | "
        "rotation, mean of layers | rotation, least rotated layer |\n"
        "| --- | --- | --- | --- | --- |"
    )
    return "\n".join([head, *map(_row, rows)])


def markdown(results: Mapping[str, Any], images: Sequence[str]) -> str:
    """The report: the verdicts, then each experiment's table and figure.

    Args:
      results: the content of ``results.json``.
      images: the figures' file names, as :func:`write_figures` returns
        them.
    """
    keys = list(figures.FIGURES)
    lines = [*_head(results), *_verdicts(results["claims"])]
    lines += _experiments(results, images)
    lines += _reinit_section(results)
    lines += ["", f"![reinit]({images[keys.index('reinit')]})", ""]
    return "\n".join(lines)


def _head(results: Mapping[str, Any]) -> list[str]:
    """The title, the command and the settings."""
    s = results["settings"]
    seeds = ", ".join(map(str, s["seeds"]))
    return [
        "# Layer rotation: the paper's findings, reproduced offline",
        "",
        f"Command: `{results.get('command') or 'layca-optax reproduce'}` "
        f"({results['jobs']} job(s), {results['wall_seconds']:.0f} s wall, "
        f"{s['cpu_count']} CPUs, {s['backend']}; layca_optax "
        f"{s['layca_optax_version']}, jax {s['jax_version']}, Python "
        f"{s['python']}). Seeds: {seeds}"
        + (" (**--quick**: reduced grids, a smoke test)" if s["quick"] else "")
        + ".",
        "",
        f"- CNN experiments: {s['cnn']['description']}; {s['cnn']['epochs']} "
        f"epochs, batch {s['cnn']['batch_size']}, learning rate x"
        f"{s['cnn']['decay_factor']:g} at {s['cnn']['decay_at']} of the run.",
        f"- MLP experiment: {s['mlp']['description']}; "
        f"{s['mlp']['epochs']} epochs, batch {s['mlp']['batch_size']}.",
        "- Rotation = cosine distance of each layer's kernel to its initial "
        "value at the end of training. Test accuracy after the last epoch.",
    ]


def _verdicts(claims: Sequence[Mapping[str, Any]]) -> list[str]:
    """The claims' table."""
    lines = [
        "",
        "## Verdicts",
        "",
        f"Welch's t over seeds; |t| >= {T_THRESHOLD:g} counts as a "
        f"difference, a match is within {MATCH_POINTS} points or |t| < "
        f"{T_THRESHOLD:g}. Best rates are picked on test accuracy (no "
        "validation split), which favours the tuned baselines.",
        "",
        "| claim | verdict | evidence |",
        "| --- | --- | --- |",
    ]
    for c in claims:
        lines.append(f"| {c['claim']} | **{c['verdict']}** | {c['evidence']} |")
    return lines


def _experiments(
    results: Mapping[str, Any], images: Sequence[str]
) -> list[str]:
    """Each experiment's table of configurations and its figure."""
    lines = []
    rows, keys = table(results), list(figures.FIGURES)
    for name, e in results["experiments"].items():
        image = images[keys.index(name)]
        lines += [
            "",
            f"## {name}: {e['title']}",
            "",
            _table_md(rows[name]),
            "",
            f"![{name}]({image})",
        ]
    return lines


def _reinit_section(results: Mapping[str, Any]) -> list[str]:
    """The re-initialization study's tables, one per probed model."""
    lines = [
        "",
        "## Re-initialization robustness (Zhang, Bengio & Singer, 2022)",
        "",
        "Test accuracy with one layer reset to its value at a checkpoint "
        "(init, then epochs), or re-drawn from its initial distribution "
        "(`rerandom`), the other layers trained; mean over seeds. A layer is "
        "*robust* when resetting it to init costs at most 1 point.",
    ]
    for label, entries in reinit_studies(results).items():
        result = figures.mean_reinit(entries)
        lines += ["", f"### {label}", "", result.to_markdown(digits=3)]
    return lines


# ------------------------------------------------- what the report reads


class MalformedResults(ValueError):
    """``results.json`` lacks what the report reads, or holds the wrong
    type there; the message says where (``experiments.fig1.configs[0]``)."""


_EXPERIMENTS = tuple(k for k in figures.FIGURES if k != "reinit")
_TASKS = ("cnn", "mlp")


def _where(where: str, key: str | int) -> str:
    """The path of ``key`` in ``where`` ("" is the top level)."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _name(where: str) -> str:
    return where or "the top level"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", _is_int),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "number": ("a number", _is_number),
    "number?": ("a number or null", lambda v: v is None or _is_number(v)),
    "dict": ("an object", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
}
"""Each kind of JSON value checked: its description and its test."""


def _check(value: Any, kind: str, where: str) -> Any:
    expected, test = _CHECKS[kind]
    if not test(value):
        raise MalformedResults(
            f"{_name(where)} is {_kind(value)}, not {expected}"
        )
    return value


def _field(node: Mapping[str, Any], key: str, kind: str, where: str) -> Any:
    if key not in node:
        raise MalformedResults(f"{_name(where)} has no {key!r}")
    return _check(node[key], kind, _where(where, key))


def _items(
    node: Mapping[str, Any], key: str, where: str, *, empty: bool = False
) -> list[tuple[str, Any]]:
    """``node[key]``, a list (not empty unless ``empty``): ``(where, item)``
    for each item."""
    items = _field(node, key, "list", where)
    where = _where(where, key)
    if not items and not empty:
        raise MalformedResults(f"{where} is empty")
    return [(_where(where, i), item) for i, item in enumerate(items)]


def _numbers(value: Any, kind: str, where: str) -> int:
    """Checks a list of ``kind`` ("number" or "number?"); its length."""
    _check(value, "list", where)
    for i, v in enumerate(value):
        _check(v, kind, _where(where, i))
    return len(value)


def _array(value: Any, ndim: int, where: str) -> tuple[int, ...]:
    """Checks nested lists of numbers, ``ndim`` deep and rectangular;
    returns their shape."""
    if ndim == 0:
        _check(value, "number", where)
        return ()
    _check(value, "list", where)
    shapes = {
        _array(v, ndim - 1, _where(where, i)) for i, v in enumerate(value)
    }
    if len(shapes) > 1:
        raise MalformedResults(f"{where} is ragged: rows of shapes {shapes}")
    return (len(value), *(shapes.pop() if shapes else (0,) * (ndim - 1)))


def _check_settings(settings: Mapping[str, Any]) -> dict[str, list[str]]:
    """The ``settings`` block; returns each task's layers."""
    where = "settings"
    for i, seed in enumerate(_field(settings, "seeds", "list", where)):
        _check(seed, "int", f"{where}.seeds[{i}]")
    _field(settings, "quick", "bool", where)
    for key in ("backend", "layca_optax_version", "jax_version", "python"):
        _field(settings, key, "str", where)
    if settings.get("cpu_count") is not None:
        _field(settings, "cpu_count", "int", where)
    layers = {}
    for task in _TASKS:
        block = _field(settings, task, "dict", where)
        at = _where(where, task)
        _field(block, "description", "str", at)
        for key in ("epochs", "batch_size"):
            _field(block, key, "int", at)
        _field(block, "decay_factor", "number", at)
        _numbers(_field(block, "decay_at", "list", at), "number", at)
        names = _items(block, "layers", at)
        layers[task] = [_check(v, "str", w) for w, v in names]
    return layers


def _check_run(run: Any, layers: list[str], where: str) -> None:
    """One run's entry (what the tables, the curves and fig. 8 read)."""
    _check(run, "dict", where)
    _field(run, "seed", "int", where)
    for key in ("train_accuracy", "test_accuracy"):
        _field(run, key, "number?", where)
    for key in ("rotation_mean", "rotation_min"):
        _field(run, key, "number?", where)
    final = _field(run, "final_rotation", "dict", where)
    curves = _field(run, "rotation_curves", "dict", where)
    for layer in layers:
        _field(final, layer, "number?", _where(where, "final_rotation"))
        if layer not in curves:
            raise MalformedResults(f"{where}.rotation_curves has no {layer!r}")
    lengths = {
        _numbers(v, "number?", f"{where}.rotation_curves[{k!r}]")
        for k, v in curves.items()
    }
    for key in ("train_loss", "test_accuracy_curve"):
        curve = _field(run, key, "list", where)
        lengths.add(_numbers(curve, "number?", _where(where, key)))
    if len(lengths) != 1 or 0 in lengths:
        raise MalformedResults(
            f"{where}: its per-epoch curves have {sorted(lengths)} epochs, "
            "not one positive number"
        )


def _check_reinit(study: Any, where: str) -> tuple[int, ...]:
    """A run's re-initialization study; returns its shapes."""
    _check(study, "dict", where)
    paths = [_check(v, "str", w) for w, v in _items(study, "paths", where)]
    labels = [
        _check(v, "str", w)
        for w, v in _items(study, "checkpoint_labels", where)
    ]
    _field(study, "baseline", "number", where)
    shapes = {}
    for key in ("reinit", "rerandom"):
        _field(study, key, "list", where)
        shapes[key] = _array(study[key], 2, _where(where, key))
    reinit, rerandom = shapes["reinit"], shapes["rerandom"]
    if reinit != (len(paths), len(labels)) or rerandom[0] != len(paths):
        raise MalformedResults(
            f"{where}: reinit {list(reinit)} and rerandom {list(rerandom)} do "
            f"not match {len(paths)} paths x {len(labels)} checkpoints"
        )
    return (*reinit, *rerandom)


def _check_experiment(
    name: str, experiment: Any, layers: dict[str, list[str]]
) -> None:
    where = f"experiments.{name}"
    _check(experiment, "dict", where)
    _field(experiment, "title", "str", where)
    task = _field(experiment, "task", "str", where)
    if task not in _TASKS:
        raise MalformedResults(f"{where}.task is {task!r}, not cnn or mlp")
    for at, config in _items(experiment, "configs", where):
        _check(config, "dict", at)
        _field(config, "label", "str", at)
        _field(config, "kind", "str", at)
        hparams = _field(config, "hparams", "dict", at)
        needed = ["alpha", "learning_rate"] if name == "fig1" else []
        for key in [*needed, *hparams]:  # fig. 1 sorts by alpha and rate
            _field(hparams, key, "number", f"{at}.hparams")
        shapes = set()
        for run_at, run in _items(config, "runs", at):
            _check_run(run, layers[task], run_at)
            if "reinit" in run:
                shapes.add(_check_reinit(run["reinit"], f"{run_at}.reinit"))
        if len(shapes) > 1:
            raise MalformedResults(f"{at}: its runs' reinit studies differ")
        if name == "fig8":  # its first run's features and rotation
            run, first = config["runs"][0], f"{at}.runs[0]"
            _field(run, "features", "list", first)
            shape = _array(run["features"], 3, f"{first}.features")
            if 0 in shape:
                raise MalformedResults(
                    f"{first}.features has shape {list(shape)}"
                )


def _check_fig6(configs: list[Mapping[str, Any]]) -> None:
    kinds = {c["kind"] for c in configs}
    plain = [k for k in kinds if not k.endswith("-layca")]
    if not plain:
        raise MalformedResults("experiments.fig6 has no plain adaptive method")
    for kind in plain:
        if f"{kind}-layca" not in kinds:
            raise MalformedResults(
                f"experiments.fig6 has {kind} but no {kind}-layca"
            )


def check_results(results: Any) -> None:
    """Checks that ``results`` (read from ``results.json``) holds what the
    report reads, with the right types and shapes.

    Raises:
      MalformedResults: naming the first entry that is missing or wrong.
    """
    _check(results, "dict", "")
    if results.get("command") is not None:
        _field(results, "command", "str", "")
    _field(results, "jobs", "int", "")
    _field(results, "wall_seconds", "number", "")
    layers = _check_settings(_field(results, "settings", "dict", ""))
    for at, claim in _items(results, "claims", "", empty=True):
        _check(claim, "dict", at)
        for key in ("claim", "verdict", "evidence"):
            _field(claim, key, "str", at)
    experiments = _field(results, "experiments", "dict", "")
    if sorted(experiments) != sorted(_EXPERIMENTS):
        raise MalformedResults(
            f"experiments holds {sorted(experiments)}, not {list(_EXPERIMENTS)}"
        )
    for name in _EXPERIMENTS:
        _check_experiment(name, experiments[name], layers)
    _check_fig6(experiments["fig6"]["configs"])
    if not reinit_studies(results):
        raise MalformedResults("no run holds a re-initialization study")
