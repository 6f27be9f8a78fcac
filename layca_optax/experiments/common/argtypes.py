"""The argument types of the ``layca-optax`` parser (integers and floats in
a range, paths) and its one-line errors. Imports nothing heavy."""

from __future__ import annotations

import argparse
import importlib.metadata
import math
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import layca_optax


def version() -> str:
    """The installed distribution's version (``layca_optax.__version__``
    when it is not installed, e.g. run from a source tree)."""
    try:
        return importlib.metadata.version("layca-optax")
    except importlib.metadata.PackageNotFoundError:
        return layca_optax.__version__


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted, shortened to about ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            digits = text.strip().lstrip("+-").replace("_", "")
            if not digits.isdigit():
                raise argparse.ArgumentTypeError(
                    f"not an integer: {shown(text)}"
                ) from None
            value = low - 1 if text.strip().startswith("-") else high + 1
        if value < low:
            raise argparse.ArgumentTypeError(
                f"must be at least {low}, got {shown(text)}"
            )
        if value > high:
            raise argparse.ArgumentTypeError(
                f"must be at most {high}, got {shown(text)}"
            )
        return value

    return parse


def positive_float(high: float = math.inf) -> Callable[[str], float]:
    """An argparse ``type``: a finite number above 0, at most ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a number: {shown(text)}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"must be a finite number, got {shown(text)}"
            )
        if not value > 0:
            raise argparse.ArgumentTypeError(
                f"must be positive, got {shown(text)}"
            )
        if value > high:
            raise argparse.ArgumentTypeError(
                f"must be at most {high:g}, got {shown(text)}"
            )
        return value

    return parse


def path(text: str) -> Path:
    """An argparse ``type``: a path, not empty (that would be the current
    folder) and without NUL characters."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"a NUL character in {shown(text)}")
    return Path(text)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (status 2):
    ``layca-optax demo: error: argument --epochs: must be at least 1, got
    '0'``, newlines shown as ``\\n`` and a very long message shortened."""

    def error(self, message: str) -> NoReturn:
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        if message.startswith("the following arguments are required"):
            message += f" (see {self.prog} --help)"
        if len(message) > MAX_MESSAGE:
            half = MAX_MESSAGE // 2
            message = f"{message[:half]}...{message[-half:]}"
        self.exit(2, f"{self.prog}: error: {message}\n")


MAX_MESSAGE = 600
"""The longest error message printed whole (a hostile path can be long)."""
