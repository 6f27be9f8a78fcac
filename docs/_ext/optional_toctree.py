"""``optional-toctree``: a toctree that lists only the pages that exist.

Some pages are written by other people and may be missing from a checkout
(``reproduce/report``, ``robustness``, ``multihost``). A plain toctree entry
for a missing page fails the build under ``-W``; this directive drops such
entries instead, so the build passes before and after they are added. Use
it only for those pages: a misspelled entry is silently dropped here.
"""

from __future__ import annotations

from typing import Any

from docutils.statemachine import StringList
from sphinx.directives.other import TocTree
from sphinx.util.docutils import SphinxDirective


class OptionalTocTree(TocTree):
    """A ``toctree`` whose entries that name no document are left out."""

    def run(self) -> list[Any]:
        assert isinstance(self, SphinxDirective)
        found = self.env.found_docs
        here = self.env.docname.rpartition("/")[0]
        kept = []
        for line in self.content:
            name = line.strip()
            full = f"{here}/{name}" if here and name else name
            if not name or full in found:
                kept.append(line)
        self.content = StringList(kept)
        return super().run()


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("optional-toctree", OptionalTocTree)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
