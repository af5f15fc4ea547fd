"""The ``modelvault`` command: the only place that prints or exits.

Exit codes: 0 every row reached a final state; 1 finished, but rows are
``failed`` or ``conflict`` (or still waiting); 2 bad input or usage;
130 interrupted (run the same command again to continue).

``rich`` is imported here and below only: the library never needs it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from modelvault.errors import ModelVaultError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from modelvault.cli.commands import EXIT_INTERRUPTED, EXIT_UNFINISHED, EXIT_USAGE
    from modelvault.cli.output import Ui
    from modelvault.cli.parser import UsageError, build_parser, command_names

    parser = build_parser()
    args: argparse.Namespace | None = None
    ui = Ui()
    try:
        args = parser.parse_args(argv)
        ui = args.ui = Ui(json=args.json, quiet=args.quiet)
        _log_to_stderr(args.verbose)
        if not getattr(args, "handler", None):
            raise UsageError(
                f"no command given: use one of {', '.join(command_names(parser))} "
                "(see 'modelvault --help')"
            )
        code: int = args.handler(args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here
        return code
    except BrokenPipeError:
        # The reader went away (`modelvault pending --json | head`): nothing left
        # to say. Point stdout at devnull so the interpreter's own flush at exit
        # does not fail again (the recipe of Python's signal module docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_UNFINISHED
    except UsageError as exc:
        ui.err.print(f"modelvault: error: {exc}")
        return EXIT_USAGE
    except ModelVaultError as exc:
        # Before the catalog is open, an error is bad input (nothing was written);
        # after, the run itself failed.
        ui.err.print(f"modelvault: error: {exc}")
        started = args is not None and getattr(args, "work_started", False)
        return EXIT_UNFINISHED if started else EXIT_USAGE
    except KeyboardInterrupt:
        ui.err.print("modelvault: interrupted: run the same command again to continue")
        return EXIT_INTERRUPTED


def _log_to_stderr(verbose: int) -> None:
    """-v: the library's INFO messages on stderr; -vv: DEBUG too."""
    if not verbose:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("modelvault: %(name)s: %(message)s"))
    logger = logging.getLogger("modelvault")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
