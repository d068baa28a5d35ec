"""Celery tasks: thin wrappers over :mod:`vectorindex.index.maintenance`.

Each takes primitive ids and is idempotent; ``acks_late`` returns a task whose
worker died to the queue, and running it again is safe. A job that gave up
waiting for a lock another transaction kept is retried with a countdown, twice
as long each time, up to ``BUSY_RETRIES`` times; after that the maintenance
scan finds its work. Run eagerly (``task_always_eager``), a busy job is not
retried: Celery would run it again at once, ignoring the countdown, each try
waiting ``JOB_LOCK_TIMEOUT`` inside the caller's commit; it is left for the
scan instead.

Follow-up jobs, and the jobs a scan finds, go through :func:`vectorindex.index.broker.send`: one
bounded attempt that never raises (Celery's ``delay`` retries a publish for
seconds, then raises in a job whose work has already committed). A send that
fails leaves its work for the next scan.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_task, shared_task

from .conf import vectorindex_settings
from .exceptions import JobBusy
from .index import broker, maintenance
from .index.registry import declared_indexes, get_declared, index_databases

logger = logging.getLogger("vectorindex.tasks")

OPTIONS = {"acks_late": True, "ignore_result": True, "reject_on_worker_lost": True}
BUSY_RETRIES = 5


def _run(job: str, index: str, using: str, **arguments: Any) -> str:
    try:
        outcome = maintenance.run(job, get_declared(index), using, **arguments)
    except JobBusy as busy:
        if current_task.request.is_eager:
            logger.warning("vectorindex %s; left for the maintenance scan (eager tasks are not retried)", busy)
            return str(busy)
        countdown = vectorindex_settings.JOB_LOCK_TIMEOUT * 2**current_task.request.retries
        raise current_task.retry(exc=busy, countdown=countdown, max_retries=BUSY_RETRIES) from busy
    for name, follow_up in outcome.follow_up:
        broker.send(name, index, using, **follow_up)
    return outcome.detail


@broker.celery_task
@shared_task(name="vectorindex.split", **OPTIONS)
def split(index: str, head_id: int, using: str = "default") -> str:
    return _run("split", index, using, head_id=head_id)


@broker.celery_task
@shared_task(name="vectorindex.reassign", **OPTIONS)
def reassign(index: str, head_id: int, new_head_ids: list[int], using: str = "default") -> str:
    return _run("reassign", index, using, head_id=head_id, new_head_ids=new_head_ids)


@broker.celery_task
@shared_task(name="vectorindex.merge", **OPTIONS)
def merge(index: str, head_id: int, using: str = "default") -> str:
    return _run("merge", index, using, head_id=head_id)


@broker.celery_task
@shared_task(name="vectorindex.defragment", **OPTIONS)
def defragment(index: str, head_id: int, using: str = "default", above_rows: int = 0) -> str:
    return _run("defragment", index, using, head_id=head_id, above_rows=above_rows)


@broker.celery_task
@shared_task(name="vectorindex.compact", **OPTIONS)
def compact(index: str, using: str = "default", damaged: int | None = None) -> str:
    return _run("compact", index, using, damaged=damaged)


@broker.celery_task
@shared_task(name="vectorindex.collect", **OPTIONS)
def collect(index: str, using: str = "default") -> str:
    return _run("collect", index, using)


@broker.celery_task
@shared_task(name="vectorindex.sweep", **OPTIONS)
def sweep(index: str, using: str = "default") -> str:
    return _run("sweep", index, using)


@broker.celery_task
@shared_task(name="vectorindex.calibrate", **OPTIONS)
def calibrate(index: str, using: str = "default") -> str:
    return _run("calibrate", index, using)


@broker.celery_task
@shared_task(name="vectorindex.scan", **OPTIONS)
def scan(index: str | None = None, using: str | None = None) -> int:
    """Enqueue what every index (or one) needs on *using*, or on every database that holds the index's tables
    and takes writes (replicas are their primary's to maintain): the beat schedule's job."""
    if index and using:
        return _scan(index, using)
    sent = 0
    for alias in [using] if using else index_databases(migrated=True, writable=True):
        for name in [index] if index else sorted(declared_indexes()):
            try:
                sent += _scan(name, alias)
            except Exception:  # noqa: BLE001 - one index's trouble (not migrated, say) does not stop the others' scans
                logger.exception("vectorindex: the scan of %s on %r failed", name, alias)
    return sent


def _scan(name: str, using: str) -> int:
    """Send the jobs *name* needs; how many were sent."""
    found = maintenance.scan(get_declared(name), using)
    return sum(broker.send(job, name, using, **arguments) for job, arguments in found)
