"""The app's output files, each written atomically: an interrupted run
never leaves half a file (readers see the old file or the new one)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]
) -> None:
    """Writes ``path`` through ``write(file)`` into a temporary file of its
    folder (which must exist), flushed to disk, then renamed over ``path``;
    the temporary file is removed if ``write`` fails."""
    target = Path(path).absolute()
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it readable by its owner only
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Writes UTF-8 ``text``, atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    """Writes ``results`` as indented JSON, atomically."""
    write_text(path, json.dumps(results, indent=2, allow_nan=False) + "\n")


def write_png(path: Path, fig: Any, dpi: int) -> None:
    """Writes a matplotlib figure as a PNG, atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
