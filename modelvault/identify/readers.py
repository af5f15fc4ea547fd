"""Reading the headers of many files at once, for ``identify.refresh``.

Reading a small header from the page cache costs well under a millisecond, most
of it Python parsing and identifying the header, so threads (which share one
interpreter lock) help only where the reads wait on a disk or a network. From
``PROCESSES_FROM`` files on, on a machine with more than one core, the files are
read in worker processes instead, a chunk of ``CHUNK`` paths per task, each
worker answering with what ``found_in_file`` gives (a small dict) or why the file
could not be read. Workers ignore Ctrl-C, which is the caller's to act on; a
worker that dies ends the run with one sentence (``IdentifyError``), never a hang.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any

from modelvault.errors import IdentifyError
from modelvault.identify.catalog import found_in_file

__all__ = ["CHUNK", "PROCESSES_FROM", "Read", "Readers", "read_file", "read_files"]

log = logging.getLogger(__name__)

CHUNK = 64  # paths per task: a worker's answer comes back every ~50 ms
PROCESSES_FROM = 300  # fewer files are read before worker processes would have started

Read = dict[str, Any] | str  # what the header says, or why the file could not be read


def read_file(path: str) -> Read:
    """What the file's header says, or why it could not be read."""
    try:
        return found_in_file(path)
    except OSError as exc:
        return str(exc.strerror or exc)
    except Exception as exc:  # a bug must cost one model, not the run
        log.warning("reading the header of %s failed", path, exc_info=True)
        return str(exc)


def read_files(paths: Sequence[str]) -> list[Read]:
    """``read_file`` of each path: one task of a worker process."""
    return [read_file(path) for path in paths]


def _ignore_interrupts() -> None:
    """A worker's start: Ctrl-C reaches the whole process group, but is the caller's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Readers:
    """Reads chunks of paths in a pool: worker processes (``processes`` > 1), else threads.

    ``start(paths)`` hands the paths to the pool at once; ``results`` waits for them.
    Used as a context manager: leaving it drops the tasks not yet begun.
    """

    def __init__(self, *, processes: int, threads: int) -> None:
        self.processes = processes
        self._pool: Executor
        if processes > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=processes,
                mp_context=_context(),
                initializer=_ignore_interrupts,
            )
        else:
            self._pool = ThreadPoolExecutor(
                max_workers=max(1, threads), thread_name_prefix="identify"
            )

    @classmethod
    def for_files(cls, count: int, *, threads: int, processes: int | None) -> Readers:
        """The pool for ``count`` files: ``processes`` None chooses by their number and
        the cores; 0 or 1 reads in threads."""
        if processes is None:
            cores = os.cpu_count() or 1
            processes = cores if count >= PROCESSES_FROM and cores > 1 else 0
        return cls(processes=processes, threads=threads)

    def start(self, paths: Sequence[str]) -> list[Future[list[Read]]]:
        return [
            self._pool.submit(read_files, paths[at : at + CHUNK])
            for at in range(0, len(paths), CHUNK)
        ]

    def results(self, tasks: Sequence[Future[list[Read]]]) -> list[Read]:
        """What the tasks read, in order; ``IdentifyError`` if a worker process died."""
        found: list[Read] = []
        try:
            for task in tasks:
                found += task.result()
        except BrokenProcessPool as exc:
            raise IdentifyError(
                f"A process reading model headers ended unexpectedly ({exc}): what was "
                "identified before is kept; run the command again to go on."
            ) from exc
        return found

    def __enter__(self) -> Readers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _context() -> multiprocessing.context.BaseContext:
    """A fresh interpreter per worker, started from a clean server where the system has
    one: a fork of this process would copy its threads' locks mid-use."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
