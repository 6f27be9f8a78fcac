"""The checks of ``results.json`` before the report reads it: every entry
the report reads is present, of its type and shape; the first one that is
not is named in a one-line :class:`MalformedResults`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from layca_optax.experiments.modular import (
    report as modular_report,
    settings as modular,
)
from layca_optax.experiments.reproduce.figures import FIGURES
from layca_optax.experiments.reproduce.report import reinit_studies


class MalformedResults(ValueError):
    """``results.json`` lacks what the report reads, or holds the wrong
    type there; the message says where (``experiments.fig1.configs[0]``)."""


_EXPERIMENTS = tuple(
    k for k in FIGURES if k not in ("reinit", "rotation_reinit")
)
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
    "str?": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "int": ("an integer", _is_int),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "number": ("a number", _is_number),
    "number?": ("a number or null", lambda v: v is None or _is_number(v)),
    "dict": ("an object", lambda v: isinstance(v, dict)),
    "dict?": ("an object or null", lambda v: v is None or isinstance(v, dict)),
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
    _field(settings, "validation_seed", "int", where)
    test2 = _field(settings, "test2", "dict?", where)
    for key in ("n", "data_seed") if test2 is not None else ():
        _field(test2, key, "int", f"{where}.test2")
    layers = {}
    for task in _TASKS:
        block = _field(settings, task, "dict", where)
        at = _where(where, task)
        _field(block, "description", "str", at)
        for key in ("epochs", "batch_size", "n_train", "n_validation"):
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
    for key in ("train_accuracy", "validation_accuracy", "test_accuracy"):
        _field(run, key, "number?", where)
    for key in ("test2_accuracy", "rotation_mean", "rotation_min"):
        _field(run, key, "number?", where)
    final = _field(run, "final_rotation", "dict", where)
    curves = _field(run, "rotation_curves", "dict", where)
    reset = _field(run, "reset_accuracy", "dict", where)
    for layer in layers:
        _field(final, layer, "number?", _where(where, "final_rotation"))
        _field(reset, layer, "number?", _where(where, "reset_accuracy"))
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
        for key in ("claim", "verdict", "evidence", "verdict_picked_on_test"):
            _field(claim, key, "str", at)
        for key in ("verdict_test2", "evidence_test2"):
            _field(claim, key, "str?", at)
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
    if "modular" in results:
        _check_modular(results["modular"])


def _check_modular(block: Any) -> None:
    """The modular-arithmetic study's block: each family's best
    configuration and curves (what its figures read), its claims, and a
    section that can be written from it."""
    _check(block, "dict", "modular")
    _field(block, "setup", "dict", "modular")
    families = _field(block, "families", "dict", "modular")
    if sorted(families) != sorted(modular.FAMILIES):
        raise MalformedResults(
            f"modular.families holds {sorted(families)}, not "
            f"{list(modular.FAMILIES)}"
        )
    for name, family in families.items():
        at = f"modular.families.{name}"
        _check(family, "dict", at)
        _field(family, "best", "dict", at)
        curves = _field(family, "curves", "dict", at)
        lengths = {
            _numbers(_field(curves, key, "list", f"{at}.curves"), "number?",
                     f"{at}.curves.{key}")
            for key in ("steps", "train", "val", "test")
        }  # fmt: skip
        rotation = _field(curves, "rotation", "dict", f"{at}.curves")
        per_seed = _field(curves, "test_per_seed", "list", f"{at}.curves")
        for key, curve in [*rotation.items(), *enumerate(per_seed)]:
            lengths.add(_numbers(curve, "number?", f"{at}.curves[{key!r}]"))
        if len(lengths) != 1:
            raise MalformedResults(f"{at}.curves differ in length: {lengths}")
    for at, claim in _items(block, "claims", "modular", empty=True):
        _check(claim, "dict", at)
        for key in ("claim", "verdict", "evidence"):
            _field(claim, key, "str", at)
    try:
        modular_report.markdown_section(block, modular.FIGURE_NAMES)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise MalformedResults(
            f"modular: its section cannot be written ({type(e).__name__}: {e})"
        ) from None
