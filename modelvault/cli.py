"""The ``modelvault`` command: the only place that prints or exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modelvault import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelvault",
        description="Catalog AI model files by content and migrate the legacy catalog.",
    )
    parser.add_argument("--version", action="version", version=f"modelvault {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
