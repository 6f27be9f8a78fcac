"""The docs site works offline: MathJax comes with it and renders.

``docs/_ext/offline_math.py`` serves the ``mathjax`` npm package pinned in
``docs/package-lock.json`` from the site's ``_static/mathjax``. These tests
build a one-page site with that extension and the docs' theme, then check
that its pages load nothing from another host, that headless Chromium,
with every host name but 127.0.0.1 unresolvable, turns each formula into
MathJax's output, and that the served MathJax renders TeX in node. With
``LAYCA_DOCS_SITE`` set to a built site (``make docs`` sets it to
``docs/_build/html``) they check that site too.

Skipped where the docs toolchain is missing (``make test`` installs
``.[test]`` only; ``make docs`` installs ``.[docs]`` and MathJax), and the
browser check where Chromium is missing (Debian: ``apt-get install
chromium``).
"""

from __future__ import annotations

import contextlib
import functools
import html.parser
import http.server
import importlib.util
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator

import pytest


# Builds a site with Sphinx and runs Chromium and node: out of
# `make test-fast`.
pytestmark = pytest.mark.slow

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
MATHJAX = DOCS / "node_modules" / "mathjax"
FORMULA = r"\arctan(\rho\, m_l)"  # the front page's
COSINE = r"\cos\theta_l = \frac{\langle w_l, w^0_l\rangle}{\|w_l\| \|w^0_l\|}"
PAGE = f"""# Math

The angle ${FORMULA}$ of each layer, and its cosine:

$$
{COSINE}
$$
"""
CONF = f"""import sys
sys.path.insert(0, {str(DOCS / "_ext")!r})
project = "offline"
extensions = ["myst_parser", "offline_math"]
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "furo"
"""
CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None
)
needs_mathjax = pytest.mark.skipif(
    not (MATHJAX / "es5" / "tex-mml-chtml.js").is_file(),
    reason="MathJax is not installed: `npm ci --prefix docs` (make docs)",
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no headless Chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A one-page site built with the docs' math setup and theme."""
    for module in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the docs toolchain is not installed (no {module})")
    if not (MATHJAX / "es5" / "tex-mml-chtml.js").is_file():
        pytest.skip("MathJax is not installed: `npm ci --prefix docs`")
    root = tmp_path_factory.mktemp("site")
    (root / "src").mkdir()
    (root / "src" / "conf.py").write_text(CONF)
    (root / "src" / "index.md").write_text(PAGE)
    command = [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html"]
    run = subprocess.run(
        [*command, str(root / "src"), str(root / "html")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return root / "html"


class _Assets(html.parser.HTMLParser):
    """The addresses of what a page loads: scripts, styles, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        if tag in ("script", "img", "iframe") and found.get("src"):
            self.urls.append(found["src"])
        rel = (found.get("rel") or "").split()
        loaded = {"stylesheet", "preload", "icon", "modulepreload"}
        if tag == "link" and set(rel) & loaded and found.get("href"):
            self.urls.append(found["href"])


def check_local_assets(root: pathlib.Path) -> int:
    """Every page of ``root`` loads files of the site only, all present.

    Returns:
      The number of pages.
    """
    pages = sorted(root.rglob("*.html"))
    for page in pages:
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            parts = urllib.parse.urlsplit(url)
            assert not (parts.scheme or parts.netloc), f"{page}: loads {url}"
            target = page.parent / urllib.parse.unquote(parts.path)
            assert target.is_file(), f"{page}: {url} is not in the site"
    return len(pages)


@contextlib.contextmanager
def serve(root: pathlib.Path) -> Iterator[str]:
    """``root`` over HTTP on 127.0.0.1 (fonts do not load from file://)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            del args

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def render(url: str, profile: pathlib.Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium that
    resolves no host name (a CDN would fail as on a machine offline)."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000",
        "--dump-dom",
        url,
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out.decode("utf-8", errors="replace")


def check_rendered(root: pathlib.Path, page: str, profile: pathlib.Path):
    """Each formula of ``page`` is MathJax's output in the browser."""
    source = (root / page).read_text(encoding="utf-8")
    formulas = source.count('class="math notranslate')
    assert formulas > 0, f"{page} has no math"
    with serve(root) as url:
        dom = render(f"{url}/{page}", profile)
    rendered = dom.count("<mjx-container")
    assert rendered >= formulas, (
        f"{page}: {rendered} of {formulas} formulas rendered by MathJax"
    )
    return dom


def test_the_site_serves_mathjax_itself(site):
    assert check_local_assets(site) >= 1
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'src="_static/mathjax/tex-mml-chtml.js"' in index
    fonts = site / "_static" / "mathjax" / "output" / "chtml" / "fonts"
    assert any(fonts.rglob("MathJax_Main-Regular.woff"))


@needs_chromium
def test_formulas_render_in_headless_chromium_offline(site, tmp_path):
    dom = check_rendered(site, "index.html", tmp_path)
    assert FORMULA not in dom and "\\(" not in dom  # no raw LaTeX left


@needs_mathjax
@pytest.mark.skipif(shutil.which("node") is None, reason="no node")
def test_the_served_mathjax_renders_tex_in_node():
    script = (
        "const [pkg, tex] = process.argv.slice(1);"
        "require(pkg).init({loader: {load: ['input/tex', 'output/svg']}})"
        ".then((MJ) => console.log(MJ.startup.adaptor.outerHTML("
        "MJ.tex2svg(tex))))"
        ".catch((err) => { console.error(err); process.exit(1); });"
    )
    run = subprocess.run(
        ["node", "-e", script, str(MATHJAX), FORMULA],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "<svg" in run.stdout and 'data-mml-node="mi"' in run.stdout


@pytest.mark.skipif(
    "LAYCA_DOCS_SITE" not in os.environ,
    reason="checks a built site: LAYCA_DOCS_SITE=docs/_build/html (make docs)",
)
def test_the_built_docs_site(tmp_path):
    root = pathlib.Path(os.environ["LAYCA_DOCS_SITE"])
    assert check_local_assets(root) > 10
    if CHROMIUM is None:
        pytest.skip("no headless Chromium (apt-get install chromium)")
    for page in ("index.html", "algorithm.html"):
        check_rendered(root, page, tmp_path / page)
