"""How the command line says it was used wrongly: ``UsageError``, exit code 2."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(Exception):
    """A bad option or argument: reported in one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, whose complaints are a ``UsageError`` (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)
