"""Where maintenance jobs run: Celery workers, or inline after the commit.

``enqueue`` is called inside the transaction that found the job necessary; the
job is sent only when that transaction commits (``transaction.on_commit``), so
a rolled-back write triggers nothing. With Celery (``VECTORINDEX["JOBS"]`` is
"celery", or "auto" with ``CELERY_BROKER_URL`` set) the task goes to the
broker; otherwise the job runs right there, in the process that committed —
the embedded default, which needs nothing else installed. In "manual" mode
nothing is sent: ``manage.py vectorindex maintain`` does the work when run. A
lost enqueue is caught by the periodic maintenance scan.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import transaction

from .conf import vectorindex_settings
from .exceptions import JobBusy

logger = logging.getLogger("vectorindex.jobs")


def mode() -> str:
    configured = vectorindex_settings.JOBS
    if configured != "auto":
        return configured
    return "celery" if getattr(settings, "CELERY_BROKER_URL", None) else "inline"


# (job, index, using, arguments) -> when this process last sent it. Queries
# that keep reading the same fragmented list ask for its defragment again and
# again; within DEDUPLICATE seconds one request is enough.
DEDUPLICATE = 10.0
_recent: dict[tuple, float] = {}
_recent_lock = threading.Lock()


def _first_request(key: tuple) -> bool:
    now = time.monotonic()
    with _recent_lock:
        if now - _recent.get(key, -DEDUPLICATE) < DEDUPLICATE:
            return False
        if len(_recent) > 10_000:
            _recent.clear()
        _recent[key] = now
        return True


def enqueue(job: str, index: str, using: str, *, dedupe: bool = False, **arguments: Any) -> None:
    """Run *job* on *index* once the current transaction commits.

    *dedupe* drops a request this process made within the last few seconds
    (for jobs that reads ask for, which can repeat many times a second).
    """
    if mode() == "manual":
        return  # the scan of `manage.py vectorindex maintain` will find it
    if dedupe and not _first_request((job, index, using, tuple(sorted(arguments.items())))):
        return
    transaction.on_commit(lambda: dispatch(job, index, using, **arguments), using=using, robust=True)


def dispatch(job: str, index: str, using: str, **arguments: Any) -> None:
    if mode() == "celery":
        from . import tasks

        getattr(tasks, job).delay(index=index, using=using, **arguments)
        return
    run_inline(job, index, using, **arguments)


def run_inline(job: str, index: str, using: str, **arguments: Any) -> None:
    """Run a job and its follow-ups here; a failure is logged, never raised into the caller."""
    from . import maintenance
    from .registry import get_declared

    queue = [(job, arguments)]
    while queue:
        name, kwargs = queue.pop(0)
        try:
            outcome = maintenance.run(name, get_declared(index), using, **kwargs)
        except JobBusy as busy:
            logger.warning("vectorindex %s", busy)  # the scan finds it again
            continue
        except Exception:  # noqa: BLE001 - the scan will find the work again
            logger.exception("vectorindex job %s on %s failed", name, index)
            continue
        logger.debug("vectorindex %s on %s: %s", name, index, outcome.detail)
        queue.extend(outcome.follow_up)
