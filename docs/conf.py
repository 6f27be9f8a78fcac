"""Sphinx configuration: MyST pages executed with myst-nb, API from autodoc.

Build (warnings are errors; every code cell of every page runs):

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

The second command runs the ``>>>`` examples of the docstrings shown in the
API reference. ``make docs`` runs both.
"""

from __future__ import annotations

import os
import sys


sys.path.insert(0, os.path.abspath("_ext"))
sys.path.insert(0, os.path.abspath(".."))

import layca_optax  # noqa: E402


project = "layca_optax"
author = "layca_optax developers"
copyright = "2026, layca_optax developers"
release = version = layca_optax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "offline_math",  # MathJax served with the site: formulas render offline
    "myst_nb",
    "coverage_check",
    "type_alias_docs",
    "optional_toctree",
]

# Pages: Markdown (MyST). Pages with a `file_format: mystnb` header are
# notebooks whose code cells run at every build; an error in any cell fails
# the build.
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "jupyter_execute",
    "**/.ipynb_checkpoints",
    "node_modules",  # MathJax (make docs: npm ci --prefix docs)
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 600
nb_merge_streams = True
nb_execution_excludepatterns: list[str] = []

# API reference: Google-style docstrings.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False

# The docstrings' `>>>` examples run in `sphinx-build -b doctest`.
doctest_test_doctest_blocks = "default"

# Offline build: no intersphinx; references to optax and jax stay plain text.
nitpicky = False

html_theme = "furo"
html_title = f"layca_optax {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"


def _escape_bars(app, what, name, obj, options, lines):
    """Workaround: ``TrackRotationState``'s docstring writes ``|radial|``,
    which reST reads as an undefined substitution. Remove once the
    docstring in ``layca_optax/monitor/_tracking.py`` says ``:math:`|r|```."""
    del app, what, obj, options
    if name == "layca_optax.TrackRotationState":
        lines[:] = [line.replace("|radial|", r"\|radial\|") for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _escape_bars)
