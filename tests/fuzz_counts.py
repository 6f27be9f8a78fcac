"""A pytest plugin for ``make fuzz``: inputs tried and failures per category.

Loaded with ``-p tests.fuzz_counts``. Each test case is one input, except
a hypothesis test, which counts the examples it ran (passing + failing, from
hypothesis's own statistics). The categories are the test files' subjects
(:data:`CATEGORIES`); at the end of the run a table is printed and, with
``--fuzz-counts FILE``, written as JSON. Works with ``-n`` (pytest-xdist):
the counts travel in each report's ``user_properties``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


CATEGORIES = {
    "numerics": (
        "core/test_fuzz.py",
        "core/test_fuzz_edges.py",
        "core/test_numeric_range.py",
        "core/test_stated_range.py",
        "core/test_nonfinite.py",
        "core/test_mixed_precision.py",
        "core/test_zero_init.py",
    ),
    "API misuse": (
        "core/test_checks.py",
        "core/test_layca_misuse.py",
        "core/test_primitives.py::TestMisuse",
        "core/test_variants.py::TestMisuse",
        "core/test_rotation_family.py::TestMisuse",
        "monitor/test_metrics.py::TestMisuse",
        "monitor/test_tracking_misuse.py",
        "monitor/test_history_plots.py::TestMisuse",
        "analysis/test_reinit.py::TestMisuse",
        "analysis/test_adaptive.py::TestMisuse",
        "analysis/test_adaptcopy.py::TestMisuse",
        "analysis/test_equilibrium.py::TestMisuse",
        "sharding/test_sharding_misuse.py",
        "experiments/test_training.py",
        "experiments/test_datasets.py::TestMisuse",
    ),
    "crafted files": (
        "io/test_hostile_files.py",
        "experiments/test_datasets.py",
        "experiments/test_cifar_safety.py",
        "io/test_bounded_loaders.py",
    ),
    "command line": ("experiments/test_cli_hostile.py",),
    "signals": (
        "experiments/test_interrupts.py",
        "experiments/test_interrupt_module.py",
        "experiments/test_early_interrupts.py",
    ),
}
"""Category: the test files (or ``file::TestMisuse`` classes, where the
misuse tests sit beside a module's other tests) whose cases are its inputs.
A case belongs to the first category that names its file or class."""

_NAMES = [name for names in CATEGORIES.values() for name in names]
FILES = [
    f"tests/{name}"
    for name in _NAMES
    if "::" not in name or name.split("::")[0] not in _NAMES
]
"""Every file and class of :data:`CATEGORIES` (a class left out where its
whole file is listed), for the command line."""

_EXAMPLES = re.compile(r"(\d+) passing, (\d+) failing")
_KEY = "fuzz_inputs"


def _category(nodeid: str) -> str | None:
    path, _, rest = nodeid.partition("::")
    name = Path(path).as_posix().removeprefix("tests/")
    within = f"{name}::{rest}"
    for category, names in CATEGORIES.items():
        if any(n == name or within.startswith(f"{n}::") for n in names):
            return category
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-counts", metavar="FILE", help="write the counts as JSON"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    found = _EXAMPLES.findall(getattr(item, "hypothesis_statistics", ""))
    inputs = sum(int(p) + int(f) for p, f in found) if found else 1
    report.user_properties.append((_KEY, inputs))


class _Counts:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, int]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        category = _category(report.nodeid)
        if category is None or report.when not in ("setup", "call"):
            return
        if report.when == "setup" and not report.failed and not report.skipped:
            return
        row = self.rows.setdefault(
            category, {"tests": 0, "inputs": 0, "failed": 0, "skipped": 0}
        )
        inputs = dict(report.user_properties).get(_KEY, 1)
        row["tests"] += 1
        row["inputs"] += 0 if report.skipped else inputs
        row["failed"] += report.failed
        row["skipped"] += report.skipped

    def pytest_terminal_summary(self, terminalreporter, config) -> None:
        write = terminalreporter.write_line
        write("")
        write(f"{'category':<16}{'tests':>7}{'inputs':>8}{'failed':>8}")
        for category in CATEGORIES:
            row = self.rows.get(category)
            if row:
                write(
                    f"{category:<16}{row['tests']:>7}{row['inputs']:>8}"
                    f"{row['failed']:>8}"
                )
        path = config.getoption("--fuzz-counts")
        if path:
            Path(path).write_text(json.dumps(self.rows, indent=2) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or no xdist)
        config.pluginmanager.register(_Counts(), "fuzz-counts")
