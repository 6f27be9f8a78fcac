"""``layca-optax --help`` and ``--version`` import none of JAX, Optax, Flax.

The console script imports ``layca_optax.experiments.cli``, which first
runs ``layca_optax/__init__.py``. The experiments' side is checked with that
parent package stubbed out (its ``__init__`` not run): the parser, its
defaults and the commands' module import nothing heavy. The whole command
is checked as users run it: ``layca_optax/__init__.py`` loads its names
on first use (a module-level ``__getattr__``).
"""

import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("jax", "jaxlib", "optax", "flax", "numpy", "matplotlib", "sklearn")

_RUN = """
import sys
from layca_optax.experiments.cli import main

for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print("imported:" + ",".join(heavy), file=sys.stderr)
"""

_STUB = """
import sys, types
parent = types.ModuleType("layca_optax")
parent.__path__ = [{package!r}]
parent.__version__ = "0+stub"
sys.modules["layca_optax"] = parent  # its __init__ is not run
"""


def _imported(argvs, *, stub_parent):
    """The heavy modules imported by ``main(argv)`` for each of ``argvs``."""
    code = _RUN.format(argvs=argvs, heavy=HEAVY)
    if stub_parent:
        code = _STUB.format(package=str(ROOT / "layca_optax")) + code
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("imported")]
    return [m for m in line.removeprefix("imported:").split(",") if m]


def test_the_parser_and_commands_import_nothing_heavy():
    argvs = [
        ["--version"],
        ["--help"],
        ["demo", "--help"],
        ["reproduce", "--help"],
        ["report", "--help"],
        ["modular", "--help"],
    ]
    assert _imported(argvs, stub_parent=True) == []


def test_version_and_help_do_not_import_jax():
    assert _imported([["--version"], ["--help"]], stub_parent=False) == []


def test_the_package_loads_each_public_name_on_first_use():
    code = (
        "import sys, layca_optax as lo\n"
        "assert 'jax' not in sys.modules\n"
        "assert all(getattr(lo, n) is not None for n in lo.__all__)\n"
        "assert sorted(lo._HOME) == sorted(lo.__all__)\n"
        "assert set(lo.__all__) <= set(dir(lo)) and lo.monitor.__name__\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
