"""Sphinx extension: MathJax served with the site, not from a CDN.

``sphinx.ext.mathjax`` loads MathJax from a CDN by default, so that on a
machine without internet every formula stays raw LaTeX. ``make docs``
installs the ``mathjax`` npm package pinned in ``docs/package.json`` (with
its checksum in ``docs/package-lock.json``: ``npm ci --prefix docs``) into
``docs/node_modules``; this extension points ``mathjax_path`` at
``_static/mathjax/tex-mml-chtml.js`` and copies there the combined file and
the parts MathJax loads on demand (TeX extensions, CHTML fonts, the menu,
accessibility). Without the package the build stops and says how to
install it.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

from sphinx.errors import ExtensionError


MATHJAX = pathlib.Path(__file__).resolve().parents[1] / "node_modules"
MATHJAX = MATHJAX / "mathjax" / "es5"
COMBINED = "tex-mml-chtml.js"  # TeX and MathML in, HTML-CSS (CHTML) out
ON_DEMAND = ("input", "output/chtml", "ui", "a11y", "sre", "adaptors")
TARGET = "mathjax"  # the folder under _static


def _check(app: Any, config: Any) -> None:
    """Fails the build without MathJax; points ``mathjax_path`` at the
    served copy (relative paths are relative to ``_static``)."""
    del app
    if not (MATHJAX / COMBINED).is_file():
        raise ExtensionError(
            f"MathJax is not installed ({MATHJAX / COMBINED} is missing): "
            "run `npm ci --prefix docs` (make docs does) to install the "
            "version pinned in docs/package-lock.json."
        )
    config.mathjax_path = f"{TARGET}/{COMBINED}"


def _copy(app: Any, exception: BaseException | None) -> None:
    """Copies MathJax into the built site's ``_static/mathjax``."""
    if exception is not None or app.builder.format != "html":
        return
    target = pathlib.Path(app.outdir) / "_static" / TARGET
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(MATHJAX / COMBINED, target / COMBINED)
    for part in ON_DEMAND:
        shutil.copytree(MATHJAX / part, target / part, dirs_exist_ok=True)
    shutil.copy2(MATHJAX.parent / "LICENSE", target / "LICENSE")


def setup(app: Any) -> dict[str, Any]:
    """Registers the hooks (after ``sphinx.ext.mathjax``)."""
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", _check)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
