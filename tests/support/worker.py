"""What the worker tests share: real files and staging rows, event collectors, a
deadline around runs that would hang, and worker processes to talk to."""

from __future__ import annotations

import hashlib
import json
import os
import queue as queue_module
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from modelvault import DatabaseManager
from modelvault.db.models import PendingImport
from modelvault.migration.worker import WorkerEvent, WorkerReport

from . import wait_for

REPO = Path(__file__).resolve().parent.parent.parent
DEADLINE = 30.0  # seconds; only reached when something blocks


def make_file(folder: Path, name: str, data: bytes) -> tuple[str, str]:
    """A real file; returns its path and SHA-256."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


def stage(db: DatabaseManager, path: str, **fields: Any) -> int:
    return db.add_pending_import({"path": path, **fields}).id


def staging(db: DatabaseManager) -> dict[str, PendingImport]:
    with db.session_scope() as s:
        return {row.path: row for row in s.scalars(select(PendingImport))}


class Events:
    """Collects worker events (list.append is atomic: safe from worker threads)."""

    def __init__(self) -> None:
        self.items: list[WorkerEvent] = []

    def __call__(self, event: WorkerEvent) -> None:
        self.items.append(event)

    def of(self, kind: str, path: str | None = None) -> list[WorkerEvent]:
        return [e for e in self.items if e.kind == kind and (path is None or e.path == path)]


class MidHash(Events):
    """Events that also run ``action`` once, at the first progress event: mid-hash,
    in the worker's thread, while the hash waits for the callback to return."""

    def __init__(self, action: Callable[[], object]) -> None:
        super().__init__()
        self.action = action
        self.done = threading.Event()

    def __call__(self, event: WorkerEvent) -> None:
        super().__call__(event)
        if event.kind == "progress" and not self.done.is_set():
            self.done.set()
            self.action()


def run_with_deadline(work: Callable[[], WorkerReport]) -> WorkerReport:
    """Run ``work`` in a daemon thread; fail (never hang) if it does not end in time."""
    result: list[WorkerReport] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: not thread.is_alive(), "the workers to end (something blocked)", DEADLINE)
    if errors:
        raise errors[0]
    return result[0]


class Child:
    """A worker process whose output lines can be awaited with a deadline."""

    def __init__(self, script: Path, url: str, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url, str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue_module.Queue[str | None] = queue_module.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self, timeout: float = 60.0) -> str | None:
        """The next line printed, or None once the process has closed its output."""
        try:
            return self.lines.get(timeout=timeout)
        except queue_module.Empty:
            self.proc.kill()
            raise AssertionError(f"no output from the worker process in {timeout} s") from None

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def report(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for a normal end and return its WorkerReport."""
        line = self.next_line(timeout)
        assert line is not None, "the worker process ended without a report"
        assert self.proc.wait(30) == 0
        data: dict[str, Any] = json.loads(line)
        return data
