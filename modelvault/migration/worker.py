"""Stage 2: workers that hash the staged files and move them into the catalog.

A ``MigrationWorker`` is a thread that loops: claim a small batch of staging
rows under a lease (``modelvault.queue``), hash each file with no
transaction open, then settle the hashed files in the catalog and close their
staging rows in one transaction that only commits for rows whose lease is
still its own (and claims the next batch in it). Each row's model, tags, links
and staging row change together or not at all; many tiny files share a
commit, a big file gets one of its own. While a long file is read, the lease
is renewed every quarter of its length, paused or not.

``process_pending`` runs a pool of such workers until nothing is left to claim
and returns a ``WorkerReport``. One ``HashControl`` pauses, resumes or stops the
whole pool; ``on_event`` receives ``WorkerEvent``s from the worker threads, for
progress bars, rates and ETAs.

What becomes of a row (DESIGN.md, "The pipeline and its guarantees"):

=========================  =====================================================
file hashed, settled       model imported / merged / moved; staging row deleted
same content, live path    staging row ``duplicate`` (sha256 set, tags merged)
path holds other content   staging row ``conflict`` (sha256 and reason kept)
file not found             staging row ``missing`` (attempts counted)
I/O error, stale handle,   back to ``pending`` after a doubling back-off, then
file changed or replaced,  ``failed`` after ``max_attempts``, with the last error
permission denied, a drive (never ``missing``: see ``modelvault.presence``)
or share that is not there
folder, FIFO, socket,      ``failed`` at once with the reason (no retry can cure
device, name too long,     it, see ``classify_os_error``); a FIFO or device is
symlink loop, relative     never opened for reading, so nothing blocks on one
path, ENOTDIR
tags that cannot be stored ``failed`` at once (no retry can cure them)
stop, or lease lost        handed back untouched / left to the new owner
=========================  =====================================================
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable

from modelvault.config import Settings, check_conflict_policy
from modelvault.database import DatabaseManager
from modelvault.errors import (
    CatalogNotAnsweringError,
    ConfigError,
    MigrationError,
    ModelVaultError,
)
from modelvault.hashing import HashControl
from modelvault.migration.worker_batch import Settler
from modelvault.migration.worker_events import (
    EVENT_KINDS,
    Accounts,
    EventCallback,
    WorkerEvent,
    WorkerReport,
)
from modelvault.migration.worker_lane import QueueSignal
from modelvault.migration.worker_leases import LeaseKeeper
from modelvault.migration.worker_rows import RowHasher, Stopping
from modelvault.queue import leases, overview, owner
from modelvault.queue.connection import HeldConnection
from modelvault.queue.rows import ClaimedRow

log = logging.getLogger(__name__)

__all__ = [
    "EVENT_KINDS",
    "MigrationWorker",
    "WorkerEvent",
    "WorkerReport",
    "process_pending",
    "retry_pending",
]

# How often a paused or stopping worker looks at its flags, and how often the
# hashing loop calls back while paused (to renew leases and notice a stop).
HEARTBEAT_SECONDS = 0.1
# How often an idle worker looks for new work when rows are leased by others or
# waiting out a back-off (it wakes earlier when one is due, or at once on stop).
POLL_SECONDS = 0.5
MIN_IDLE_SECONDS = 0.02
# A batch whose files add up to less than this is light: hashing it takes less
# than cataloguing it, so a second worker on it would only wait for the first
# (see QueueSignal). Above it, hashing in parallel pays: measured on batches of
# 32 files, two workers took 0.99-1.10x the time of one on 2 MiB batches,
# 0.85-0.92x on 4 MiB ones and 0.60-0.64x on 8 MiB ones (bench/hash_bench.py, the mixes).
LIGHT_BATCH_BYTES = 4 * 1024 * 1024
# How often a worker waiting for leased rows checks whether their owner died.
ORPHAN_CHECK_SECONDS = 5.0

_worker_numbers = itertools.count(1)


class MigrationWorker(threading.Thread):
    """A thread that hashes staged files until the queue is empty or it is stopped.

    ``control`` pauses, resumes and stops it (share one with other workers to
    control them together); ``stop_event`` stops only the workers that share it.
    With ``exit_when_idle=False`` the worker keeps polling for new rows until
    stopped (for an app that keeps staging files while it runs).

    After ``join()``, ``report`` says what it did and ``error`` holds the
    exception that ended it early, if any (its rows were handed back first).

    The loop is here; the row in hand is a ``RowHasher``'s, the rows it holds and
    their leases a ``LeaseKeeper``'s, the hashed rows waiting to be settled a
    ``Settler``'s, its report and events ``Accounts``', the light lane a
    ``QueueSignal``'s.
    """

    def __init__(
        self,
        db: DatabaseManager,
        *,
        settings: Settings | None = None,
        policy: str | None = None,
        control: HashControl | None = None,
        on_event: EventCallback | None = None,
        stop_event: threading.Event | None = None,
        name: str | None = None,
        exit_when_idle: bool = True,
        signal: QueueSignal | None = None,
    ) -> None:
        super().__init__(name=name or f"modelvault-worker-{next(_worker_numbers)}", daemon=True)
        self.db = db
        self.settings = settings or db.settings
        self.policy = check_conflict_policy(policy or self.settings.conflict_policy)
        self.control = control or HashControl()
        self.stop_event = stop_event or threading.Event()
        self.on_event = on_event
        self.exit_when_idle = exit_when_idle
        self.signal = signal or QueueSignal()
        # Unique per thread and run: a restarted worker never mistakes a dead
        # predecessor's leases for its own.
        self.owner = owner.new_owner(self.name)
        self.error: BaseException | None = None
        self.done = threading.Event()  # set last thing in run(), after the rows went back
        self._accounts = Accounts(self.name, on_event)
        self.report: WorkerReport = self._accounts.report
        self._connection = HeldConnection(db)  # claims, finishes, renewals, failures
        renew_every = max(self.settings.lease_seconds / 4, HEARTBEAT_SECONDS)
        self._leases = LeaseKeeper(
            db,
            self.owner,
            self.settings.lease_seconds,
            renew_every,
            self._connection,
            self._accounts,
        )
        self._settler = Settler(
            db,
            self.owner,
            self.policy,
            self._connection,
            self._leases,
            self._accounts,
            lambda row, message: self._rows.give_up(row, message, final=True),
        )
        self._rows = RowHasher(
            db,
            self.owner,
            self.settings,
            self.control,
            self.stop_event,
            (self._connection, self._leases, self._accounts, self._settler),
            HEARTBEAT_SECONDS,
        )
        self._next_batch: list[ClaimedRow] = []  # claimed with the last commit, not started
        self._next_orphan_check = 0.0
        self._lane_refused = False  # the last claim took only a heavy batch, or nothing

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop soon; the rows it holds go back to the queue."""
        self.stop_event.set()
        self.signal.wake_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the worker is done (its rows handed back); False on timeout.

        Prefer this to ``join()`` where Ctrl-C may strike: in CPython 3.11 a
        KeyboardInterrupt that lands in ``join(timeout)`` marks a thread that
        is still running as finished, so the next ``join()`` returns at once and
        the process may exit while the worker is still handing its rows back.
        """
        return self.done.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set() or self.control.stopped

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        owner.running(self.owner)
        try:
            self._take_over_orphans()
            self._loop()
        except Stopping:
            pass
        except Exception as exc:  # recorded for the pool; the rows are handed back below
            self.error = exc
            log.exception("worker %s failed", self.name)
        finally:
            try:
                self._settler.settle_quietly(self.name)
                self._connection.close()
                self._leases.release_all("stopped")
            finally:  # whatever happened, wait() must return
                self.signal.leave_lane(self)
                owner.stopped(self.owner)
                self.report.seconds = time.monotonic() - started
                self.signal.notify()
                self.done.set()

    def _loop(self) -> None:
        while not self.stopping:
            if self.control.paused:
                self._hold_while_paused()
                continue
            generation = self.signal.generation
            batch, self._next_batch = self._next_batch, []
            if not batch:
                claim = self._claim_wanted()
                batch = leases.claim_batch(
                    self.db,
                    self.owner,
                    limit=claim.limit,
                    lease_seconds=claim.lease_seconds,
                    min_bytes=claim.min_bytes,
                    held=self._connection,
                )
                self._claimed(batch)
            if batch:
                self._run_batch(batch)
                self.signal.notify()
                continue
            if not self._wait_for_work(generation):
                return

    def _wait_for_work(self, generation: int) -> bool:
        """Nothing was claimed: wait for rows that may become claimable; False if none
        will (and the worker exits when idle)."""
        state = overview.queue_state(self.db)
        if state.wait_seconds is None and self.exit_when_idle:
            return False
        if state.retry_files:
            self._accounts.waiting(state.retry_files, state.retry_seconds)
        if state.wait_seconds == 0 and self._lane_refused:
            # Small files are left and a peer is on them. Look again once it leaves
            # the lane, or after a while: heavy rows may come up meanwhile.
            self._wait_for_lane()
            return True
        check = bool(state.wait_seconds) and time.monotonic() >= self._next_orphan_check
        if check and self._take_over_orphans():  # rows of a worker that died meanwhile
            return True
        due = POLL_SECONDS if state.wait_seconds is None else state.wait_seconds
        # Never spin: a row that looks claimable may be in another worker's claim.
        self._idle(min(max(due, MIN_IDLE_SECONDS), POLL_SECONDS), generation)
        return True

    def _take_over_orphans(self) -> int:
        """Hand back the rows of workers on this host that provably died (see ``owner``)."""
        self._next_orphan_check = time.monotonic() + ORPHAN_CHECK_SECONDS
        return leases.take_over_orphans(self.db, owner.owner_prefix(), owner.provably_dead)

    def _claim_wanted(self) -> leases.Claim:
        """The next claim: anything in the light lane, only a heavy batch outside it."""
        in_lane = self.signal.enter_lane(self)
        self._lane_refused = not in_lane
        return leases.Claim(
            self.settings.worker_batch_size,
            self.settings.lease_seconds,
            min_bytes=0 if in_lane else LIGHT_BATCH_BYTES,
        )

    def _claimed(self, batch: list[ClaimedRow]) -> None:
        """Leave the light lane unless the batch just claimed is light."""
        if not batch:
            self.signal.leave_lane(self)
        elif leases.batch_bytes(batch) >= LIGHT_BATCH_BYTES:
            self.signal.leave_lane(self)
            self.signal.heavy_work()

    def _wait_for_lane(self) -> None:
        """Wait until the light lane is free, a stop, or ``POLL_SECONDS``.

        In heartbeats: ``control.stop()`` wakes nobody, it is looked for."""
        deadline = time.monotonic() + POLL_SECONDS
        while not self.stopping:
            left = deadline - time.monotonic()
            heartbeat = min(left, HEARTBEAT_SECONDS)
            if left <= 0 or self.signal.wait_for_lane(heartbeat, lambda: self.stopping):
                return

    def _idle(self, seconds: float, generation: int) -> None:
        """Wait ``seconds``, or less if a peer changes the queue or a stop arrives."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0 or self.signal.wait(generation, min(left, HEARTBEAT_SECONDS)):
                return

    def _hold_while_paused(self) -> None:
        """Paused between files: keep the leases of the batch alive, do nothing else."""
        while self.control.paused and not self.stopping:
            self._accounts.announce_pause()
            self._leases.maybe_renew()
            self.control.wait_until_running(HEARTBEAT_SECONDS)  # wakes at once on resume
        self._accounts.pause_over()

    def _run_batch(self, batch: list[ClaimedRow]) -> None:
        """Hash the rows of a batch, and settle the hashed ones in few transactions."""
        self._leases.hold(batch, renew_from_now=True)
        for row in batch:
            if self.control.paused:
                self._settler.settle()  # commit what is done before holding still
                self._hold_while_paused()
            if self.stopping:
                raise Stopping  # run() commits what is hashed and hands the rest back
            if self._leases.holds(row):  # not lost while an earlier file was hashed
                self._rows.hash(row)
            now = time.monotonic()
            if self._settler.due(now):
                self._settler.settle()
            self._leases.maybe_renew(now)
        if not self._settler.waiting:
            return
        claim = None
        if not self.stopping and not self.control.paused:
            claim = self._claim_wanted()
        claimed = self._settler.settle(claim)
        if claimed is not None:
            self._next_batch = claimed
            if claim is not None:
                self._claimed(claimed)


def process_pending(
    db: DatabaseManager | None = None,
    *,
    workers: int | None = None,
    settings: Settings | None = None,
    policy: str | None = None,
    control: HashControl | None = None,
    on_event: EventCallback | None = None,
) -> WorkerReport:
    """Hash everything in the staging queue with a pool of workers, then return.

    Returns when no row is pending or claimed any more (rows in back-off are
    waited for), or soon after ``control.stop()``, with the rows not finished
    handed back. ``db`` defaults to the catalog named by ``settings`` (migrated
    to the newest schema first); ``workers`` to ``settings.workers``; ``policy``
    to ``settings.conflict_policy``. If a worker fails (e.g. the catalog becomes
    unreachable), the others stop too and ``MigrationError`` is raised.
    """
    own_db = db is None
    if db is None:
        db = DatabaseManager(settings=settings)
        db.init_db()
    try:
        return _run_pool(db, workers, settings or db.settings, policy, control, on_event)
    finally:
        if own_db:
            db.dispose()


def _run_pool(
    db: DatabaseManager,
    workers: int | None,
    settings: Settings,
    policy: str | None,
    control: HashControl | None,
    on_event: EventCallback | None,
) -> WorkerReport:
    count = settings.workers if workers is None else workers
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"workers {count!r} is not valid: use a whole number of at least 1.")
    control = control or HashControl()
    stop = threading.Event()
    reserve = _Reserve()
    signal = QueueSignal(on_heavy_work=reserve.start)
    pool = [
        MigrationWorker(
            db,
            settings=settings,
            policy=policy,
            control=control,
            on_event=on_event,
            stop_event=stop,
            name=f"modelvault-worker-{i + 1}",
            signal=signal,
        )
        for i in range(count)
    ]
    overview.refresh_statistics(db)
    started = time.monotonic()
    reserve.hold(pool[1:])
    pool[0].start()
    try:
        _wait_all(pool, reserve)
    except BaseException:  # e.g. KeyboardInterrupt: hand the rows back before leaving
        pool[0].stop()  # they share the stop event
        _wait_all(pool, reserve)
        raise
    report = WorkerReport.combine((w.report for w in pool), seconds=time.monotonic() - started)
    errors = [w.error for w in pool if w.error is not None]
    if errors:
        raise _stopped_by(errors[0], report.abandoned) from errors[0]
    return report


def _stopped_by(error: BaseException, abandoned: int) -> ModelVaultError:
    """One sentence: what stopped the pool, where the rows went, what to do."""
    rows, them = ("1 row", "it") if abandoned == 1 else (f"{abandoned} rows", "them")
    where = (
        "the rows it held are back in the queue"
        if not abandoned
        else f"{rows} could not be handed back: the next run on this host takes {them} over "
        "at once, other hosts after the lease runs out"
    )
    if isinstance(error, CatalogNotAnsweringError):  # no "failed: ..." of a driver to quote
        then = f"{where}; check that the server runs and can be reached, then run the workers again"
        return CatalogNotAnsweringError(error.catalog, error.seconds, then)
    return MigrationError(
        f"a worker stopped on an error: {error}; {where}: fix the cause and run the workers again."
    )


class _Reserve:
    """The workers of a pool beyond the first, started only once one of them claims
    a batch worth hashing in parallel: on small files a pool is one worker (see
    ``QueueSignal``), and the others would only cost their start. Once the first
    worker is done, those never started are done too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[MigrationWorker] = []

    def hold(self, workers: list[MigrationWorker]) -> None:
        self._held = list(workers)

    def start(self) -> None:
        with self._lock:
            held, self._held = self._held, []
            for worker in held:
                worker.start()

    def close(self) -> None:
        """No start any more: the workers held back are done (they never ran)."""
        with self._lock:
            held, self._held = self._held, []
            for worker in held:
                worker.done.set()


def _wait_all(pool: list[MigrationWorker], reserve: _Reserve) -> None:
    """Wait for every worker to be done; the first one that fails stops the others."""
    alive = list(pool)
    while alive:
        for worker in list(alive):
            if worker.ident is None and not worker.done.is_set():
                continue  # held back, not started (yet)
            if worker.wait(HEARTBEAT_SECONDS):
                alive.remove(worker)
                if worker is pool[0]:
                    reserve.close()  # the first one alone starts the others: it is done
                if worker.error is not None:
                    worker.stop()  # the others share its stop event


def retry_pending(db: DatabaseManager, statuses: Iterable[str] = ("failed", "missing")) -> int:
    """Put rows with these final statuses back in the queue (attempts from zero)."""
    return overview.retry_pending(db, statuses)
