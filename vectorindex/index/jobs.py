"""Where maintenance jobs run: Celery workers, or inline after the commit.

``enqueue`` is called inside the transaction that found the job necessary; the
job is sent only when that transaction commits (``transaction.on_commit``), so
a rolled-back write triggers nothing. With Celery (``VECTORINDEX["JOBS"]`` is
"celery", or "auto" with ``CELERY_BROKER_URL`` set) the task goes to the
broker; otherwise the job runs right there, in the process that committed —
the embedded default, which needs nothing else installed. In "manual" mode
nothing is sent: ``manage.py vectorindex maintain`` does the work when run. A
lost enqueue is caught by the periodic maintenance scan: Celery beat's, or
inline, one that writing processes run every ``SCAN_INTERVAL`` seconds.

A broker that is down costs a commit one attempt of about ``ENQUEUE_TIMEOUT``
seconds and one warning per outage: while it stays down, jobs are not sent at
all (the scan finds their work), and it is tried again every ``BROKER_RETRY``
seconds.

What each job does is registered here by name (:func:`runner`), by
:mod:`vectorindex.index.maintenance`, which the app's ``ready()`` imports: the
write path imports this module, and the jobs import the write path, so this
module runs them without importing them. :func:`run` runs one as every caller
does (a lock timeout, retries after a deadlock), and :func:`follow_through`
runs the jobs each one asks for next.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import OperationalError, connections, router, transaction

from ..conf import vectorindex_settings
from ..exceptions import JobBusy
from ..storage import dialect_for, lock_timeout, read_only
from . import broker

if TYPE_CHECKING:
    from .registry import Declared

logger = logging.getLogger("vectorindex.jobs")

Job = tuple[str, dict[str, Any]]  # (name, keyword arguments): a job as a scan or an outcome asks for it
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Outcome:
    """What a job did, and the jobs it asks for next."""

    job: str
    detail: str
    follow_up: list[Job] = field(default_factory=list)
    busy: bool = False  # it gave up on a lock and did nothing (JobBusy)


# Job name -> what does it: (declared, using=..., **arguments) -> Outcome; and
# "scan" -> the maintenance scan: (declared, using) -> the jobs it finds. The
# names are the Celery tasks' (vectorindex.tasks), without "vectorindex.".
RUNNERS: dict[str, Callable[..., Any]] = {}


def runner(name: str) -> Callable[[F], F]:
    """Register the decorated function as what does the job *name* (or the scan, for "scan")."""

    def register(function: F) -> F:
        RUNNERS[name] = function
        return function

    return register


# Tries a job gets when the database breaks its transaction off (a deadlock),
# the first one included; between tries it waits RETRY_PAUSE seconds, then
# twice that, then four times (each up to twice as long again, at random, so
# that two jobs that deadlocked do not meet again): under a second in all.
RETRIES = 4
RETRY_PAUSE = 0.05
# MySQL/MariaDB's error numbers: ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT.
def run(name: str, declared: Declared, using: str = "default", **arguments: Any) -> Outcome:
    """Run one job, waiting at most ``JOB_LOCK_TIMEOUT`` seconds for each lock.

    A transaction the database broke off for a deadlock is run again at once:
    jobs are idempotent, and a broken-off transaction left nothing behind. A
    lock held longer than that (a user's transaction that stays open, on
    SQLite any writer's) raises :class:`JobBusy` instead: the job runs again
    later (a Celery retry, the scan), rather than hold its worker and the
    locks it took first for the database's own timeout, 50 s on InnoDB.
    """
    seconds = vectorindex_settings.JOB_LOCK_TIMEOUT
    dialect = dialect_for(connections[using])
    with lock_timeout(connections[using], seconds):
        for attempt in range(RETRIES):
            started = time.monotonic()
            try:
                outcome = RUNNERS[name](declared, using=using, **arguments)
                if isinstance(outcome, Outcome) and not outcome.busy:
                    remember(declared, using, outcome)
                return outcome
            except OperationalError as error:
                busy = dialect.lock_wait_ran_out(error)
                # SQLite says "locked" at once, without waiting, where a wait
                # would deadlock: that one is a deadlock, and runs again too.
                if busy and (time.monotonic() - started >= seconds or attempt == RETRIES - 1):
                    given = ", ".join(f"{key}={value}" for key, value in arguments.items())
                    raise JobBusy(
                        f"{name}({given}) on {declared.name}: a lock stayed held by another transaction "
                        f"for over {seconds} s (JOB_LOCK_TIMEOUT); left to run again later"
                    ) from error
                if not (busy or dialect.deadlocked(error)) or attempt == RETRIES - 1:
                    raise
                time.sleep(RETRY_PAUSE * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


# Job runs an index keeps for its admin page: the newest, the others deleted.
RUNS_KEPT = 20


def remember(declared: Declared, using: str, outcome: Outcome) -> None:
    """Keep what a job did among its index's last :data:`RUNS_KEPT` runs (after its transaction, or in the caller's)."""
    from django.utils import timezone

    from ..models import IndexState, JobRun

    index_id = IndexState.objects.using(using).filter(name=declared.name).values_list("pk", flat=True).first()
    if index_id is None:
        return
    runs = JobRun.objects.using(using)
    runs.create(index_id=index_id, job=outcome.job[:20], detail=outcome.detail[:500], finished_at=timezone.now())
    oldest_kept = runs.filter(index_id=index_id).order_by("-pk").values_list("pk", flat=True)[RUNS_KEPT - 1 : RUNS_KEPT]
    runs.filter(index_id=index_id, pk__lt=oldest_kept.first() or 0).delete()


def follow_through(first: Iterable[Job], attempt: Callable[[str, dict[str, Any]], Outcome | None]) -> Iterator[Outcome]:
    """Run the jobs *first*, then those each one asks for next, in turn; their outcomes, as each is done.

    *attempt* runs one job (name, arguments), and answers None for one that
    failed: what it would have asked for is then the scan's to find.
    """
    queue = deque(first)
    while queue:
        name, arguments = queue.popleft()
        outcome = attempt(name, arguments)
        if outcome is not None:
            queue.extend(outcome.follow_up)
            yield outcome


def mode() -> str:
    configured = vectorindex_settings.JOBS
    if configured != "auto":
        return configured
    return "celery" if getattr(settings, "CELERY_BROKER_URL", None) else "inline"


# (job, index, using, arguments) -> when this process last sent it. Queries
# that keep reading the same fragmented list ask for its defragment again and
# again; within DEDUPLICATE seconds one request is enough.
DEDUPLICATE = 10.0
# Requests remembered at most; past that the memory starts again (a request
# then sent twice costs a job that finds nothing to do).
REMEMBERED = 10_000
_recent: dict[tuple, float] = {}
_recent_lock = threading.Lock()


def _first_request(key: tuple) -> bool:
    now = time.monotonic()
    with _recent_lock:
        if now - _recent.get(key, -DEDUPLICATE) < DEDUPLICATE:
            return False
        if len(_recent) > REMEMBERED:
            _recent.clear()
        _recent[key] = now
        return True


def enqueue(
    job: str, index: str, using: str, *, dedupe: bool = False, on_commit_of: str | None = None, **arguments: Any
) -> None:
    """Run *job* on *index* on database *using* once the current transaction commits.

    *dedupe* drops a request this process made within the last few seconds
    (for jobs that reads ask for, which can repeat many times a second).
    *on_commit_of*: the database whose transaction found the job necessary,
    where that is not *using* (a read on a replica, :func:`enqueue_for_read`).
    """
    if mode() == "manual":
        return  # the scan of `manage.py vectorindex maintain` will find it
    if dedupe and not _first_request((job, index, using, tuple(sorted(arguments.items())))):
        return
    transaction.on_commit(
        lambda: dispatch(job, index, using, **arguments), using=on_commit_of or using, robust=True
    )


def enqueue_for_read(job: str, index: str, using: str, **arguments: Any) -> None:
    """:func:`enqueue`, for a job a read on *using* found necessary (deduplicated).

    A replica (:func:`~vectorindex.storage.read_only`) takes no writes: the
    job goes to the database the routers send the model's writes to, the
    primary the replica copies, whose lists and heads are the replica's
    (or newer: a job there finds what is left to do). Where that one takes
    no writes either, nothing is asked: the scan of the primary finds the work.
    """
    target = writer_for(index, using)
    if target is None:
        logger.debug("vectorindex %s on %s not asked for: %r takes no writes", job, index, using)
        return
    enqueue(job, index, target, dedupe=True, on_commit_of=using, **arguments)


def writer_for(index: str, using: str) -> str | None:
    """The database a job asked for on *using* runs on: *using*, or for a replica its primary; None where none takes writes."""
    if not read_only(using):
        return using
    from .registry import get_declared

    target = router.db_for_write(get_declared(index).model)
    if target != using and not read_only(target):
        return target
    return None


def dispatch(job: str, index: str, using: str, **arguments: Any) -> None:
    if mode() == "celery":
        broker.send(job, index, using, **arguments)
        return
    run_inline(job, index, using, **arguments)


def run_inline(job: str, index: str, using: str, **arguments: Any) -> None:
    """Run a job and its follow-ups here; a failure is logged, never raised into the caller."""
    from .registry import get_declared

    def attempt(name: str, kwargs: dict[str, Any]) -> Outcome | None:
        try:
            return run(name, get_declared(index), using, **kwargs)
        except JobBusy as busy:
            logger.warning("vectorindex %s", busy)  # the scan finds it again
        except Exception:  # noqa: BLE001 - the scan will find the work again
            logger.exception("vectorindex job %s on %s failed", name, index)
        return None

    for outcome in follow_through([(job, arguments)], attempt):
        logger.debug("vectorindex %s on %s: %s", outcome.job, index, outcome.detail)


# Inline safety-net scans ------------------------------------------------------

# (index, using) -> when this process last scanned that index, or first wrote
# to it, or built it.
_scanned: dict[tuple[str, str], float] = {}
_scanned_lock = threading.Lock()


def wrote(index: str, using: str) -> None:
    """A write to *index*: inline, it is scanned after the commit when ``SCAN_INTERVAL`` has passed.

    The scan finds what lost jobs left undone (a process killed between
    its commit and its job, a job that gave up on a lock); Celery beat runs
    it when jobs go to Celery. A time check per write while none is due.
    """
    key = (index, using)
    now = time.monotonic()
    if now - _scanned.setdefault(key, now) < vectorindex_settings.SCAN_INTERVAL or mode() != "inline":
        return
    # The scan is claimed when the commit runs it, not here: a transaction
    # that rolls back leaves it due for the next write. Until then, one scan
    # per transaction: Django drops a rolled-back transaction's (or
    # savepoint's) callbacks from this list, so what is in it will run.
    pending = transaction.get_connection(using).run_on_commit
    if any(getattr(callback, "vectorindex_scan", None) == key for _ids, callback, _robust in pending):
        return

    def scan_after_commit() -> None:
        if _claim(key):
            scan_inline(index, using)

    scan_after_commit.vectorindex_scan = key  # type: ignore[attr-defined]
    transaction.on_commit(scan_after_commit, using=using, robust=True)


def _claim(key: tuple[str, str]) -> bool:
    """Is the scan of *key* due? If so it is this caller's: the next one is ``SCAN_INTERVAL`` seconds away."""
    now = time.monotonic()
    with _scanned_lock:
        if now - _scanned.get(key, now) < vectorindex_settings.SCAN_INTERVAL:
            return False  # another thread's commit took this one
        _scanned[key] = now
        return True


def scanned(index: str, using: str) -> None:
    """*index* needs no safety-net scan for ``SCAN_INTERVAL`` seconds once this transaction commits (it was just built)."""

    def stamp() -> None:
        _scanned[(index, using)] = time.monotonic()

    transaction.on_commit(stamp, using=using)


def scan_inline(index: str, using: str) -> None:
    """Run the maintenance scan of *index* and the jobs it finds, here."""
    from .registry import get_declared

    try:
        found = RUNNERS["scan"](get_declared(index), using)
    except Exception:  # noqa: BLE001 - the next scan tries again
        logger.exception("vectorindex scan of %s failed", index)
        return
    for job, arguments in found:
        run_inline(job, index, using, **arguments)
