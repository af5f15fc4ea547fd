"""The ``modelvault`` command: the only place that prints or exits.

Exit codes: 0 every row reached a final state; 1 finished, but rows are
``failed`` or ``conflict`` (or still waiting), or the run failed (the catalog's
server stopped answering, say); 2 bad input or usage; 130 interrupted by Ctrl-C
or Ctrl-Break, 143 by SIGTERM, 129 by SIGHUP (run the same command again to
continue).

``rich`` is imported here and below only: the library never needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from modelvault.errors import CatalogNotAnsweringError, ModelVaultError

if TYPE_CHECKING:
    from modelvault.cli.output import Ui
    from modelvault.cli.signals import SignalStop

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from modelvault.cli.signals import SignalStop

    # SIGTERM, SIGHUP, Ctrl-Break and a closed console stop the command as Ctrl-C does.
    with SignalStop() as stop:
        return _run(argv, stop)


def _run(argv: Sequence[str] | None, stop: SignalStop) -> int:
    from modelvault.cli.common import EXIT_UNFINISHED, EXIT_USAGE
    from modelvault.cli.interrupt import Unfinished, first_ctrl_c_ends
    from modelvault.cli.output import OutputError, Ui, flush_stdout, tolerant_streams
    from modelvault.cli.parser import UsageError, build_parser, command_names
    from modelvault.cli.signals import exit_code

    tolerant_streams()
    parser = build_parser()
    args: argparse.Namespace | None = None
    ui = Ui()
    try:
        args = parser.parse_args(argv)
        ui = args.ui = Ui(json=args.json, quiet=args.quiet)
        if not getattr(args, "handler", None):
            raise UsageError(
                f"no command given: use one of {', '.join(command_names(parser))} "
                "(see 'modelvault --help')"
            )
        with _log_to_stderr(args.verbose), first_ctrl_c_ends():
            code: int = args.handler(args)
            flush_stdout()  # inside the try: a closed pipe or a full disk is reported here
        return code
    except BrokenPipeError:
        # The reader went away (`modelvault pending --json | head`): nothing left
        # to say.
        _drop_stdout()
        return stop.exit_code or EXIT_UNFINISHED
    except OutputError as exc:
        _drop_stdout()
        _error(ui, f"cannot write the output ({exc}): check where stdout goes (a full disk?)")
        # After SIGHUP the terminal may be gone: the exit code still says why it stopped.
        return stop.exit_code or EXIT_UNFINISHED
    except UsageError as exc:
        _error(ui, str(exc))
        return EXIT_USAGE
    except ModelVaultError as exc:
        # Before the catalog is open, an error is bad input (nothing was written);
        # after, the run itself failed.
        _error(ui, str(exc))
        started = args is not None and getattr(args, "work_started", False)
        # A server that stopped answering is no bad input, whenever it happens.
        unfinished = started or isinstance(exc, CatalogNotAnsweringError)
        return EXIT_UNFINISHED if unfinished else EXIT_USAGE
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or a signal that stops as it does
        said = str(interrupt) if isinstance(interrupt, Unfinished) else ""
        _error(ui, said or "run the same command again to continue", prefix="interrupted")
        return stop.exit_code or exit_code(interrupt)  # the first signal says why


def _error(ui: Ui, message: str, *, prefix: str = "error") -> None:
    """One line on stderr (names and paths in it escaped); a stderr that cannot
    be written either leaves the exit code to tell."""
    from modelvault.cli.escaping import printable

    with contextlib.suppress(OSError):
        ui.err.print(f"modelvault: {prefix}: {printable(message)}")


def _drop_stdout() -> None:
    """Point stdout at devnull, so the interpreter's own flush at exit does not
    fail again on what is still buffered (the recipe of Python's signal module docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def _log_to_stderr(verbose: int) -> Iterator[None]:
    """-v: the library's INFO messages on stderr; -vv: DEBUG too. The library's
    logger is left as it was found once the command ends (``main`` may be called
    in an app's own process)."""
    if not verbose:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("modelvault: %(name)s: %(message)s"))
    logger = logging.getLogger("modelvault")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
