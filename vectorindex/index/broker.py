"""Sending a job to Celery: one bounded attempt, and a broker that failed is left alone a while.

A send never raises and never holds its caller for long: a broker that is
down costs about one ``ENQUEUE_TIMEOUT``, is logged once per outage, and the
jobs not sent meanwhile are the maintenance scan's to find. The tasks
themselves (vectorindex.tasks) register here, so that nothing in the index
layer imports the Celery skin.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..conf import vectorindex_settings

logger = logging.getLogger("vectorindex.jobs")


# A broker that failed a send is left alone this many seconds (the jobs not
# sent meanwhile are the scan's to find), then one send tries it again.
BROKER_RETRY = 30.0


@dataclass
class _Outage:
    """A broker that failed a send: when to try it again, and what was not sent meanwhile."""

    retry_at: float
    skipped: int = 0


# Broker URL -> its outage, while it lasts (a URL of its own per broker:
# settings or tests may point the app at another).
_outages: dict[str, _Outage] = {}
_outages_lock = threading.Lock()


# Job name -> its Celery task: vectorindex.tasks registers them (the app's
# ready() imports it when Celery is installed), so that this module, which
# tasks.py imports, does not import it back.
TASKS: dict[str, Any] = {}


def celery_task(task: Any) -> Any:
    """Register a Celery task of vectorindex.tasks as what :func:`send` sends for its job."""
    TASKS[task.name.removeprefix("vectorindex.")] = task
    return task


def send(job: str, index: str, using: str, **arguments: Any) -> bool:
    """Send *job* to the broker; was it sent?

    Never raises, and makes one attempt in which each step waits at most
    ``ENQUEUE_TIMEOUT``: a connection from the pool (all of them busy sending
    on other threads), connecting, and each reply. A broker that is down or
    does not answer costs about one ``ENQUEUE_TIMEOUT``; one that is slow at
    every step, a few (three or more: a Redis connection's set-up takes
    replies of its own). A failed send is logged (a warning for the first
    failure of an outage, not for each job), and the job's work is left for
    the maintenance scan.
    """
    import kombu.pools

    task = TASKS.get(job)
    if task is None:  # Celery is not installed: the system checks say so in "celery" mode
        logger.warning(
            "vectorindex could not send %s on %s: there is no Celery task for it (is Celery installed?); "
            "the maintenance scan finds its work.",
            job, index,
        )
        return False
    kwargs = {"index": index, "using": using, **arguments}
    if task.app.conf.task_always_eager:
        task.apply_async(kwargs=kwargs)  # runs here: no broker
        return True
    connection = _bounded_connection(task.app)
    url = connection.as_uri()
    now = time.monotonic()
    with _outages_lock:
        outage = _outages.get(url)
        if outage is not None and now < outage.retry_at:
            outage.skipped += 1
            return False
    try:
        with kombu.pools.connections[connection].acquire(block=True, timeout=vectorindex_settings.ENQUEUE_TIMEOUT) as pooled:
            try:
                task.apply_async(kwargs=kwargs, connection=pooled, retry=False)
            except Exception:
                pooled.collect()  # a fresh connection next time, without talking to the broker
                raise
    except Exception as error:  # noqa: BLE001 - any failure to send is the scan's to make up for
        _failed(url, job, index, error)
        return False
    _sent(url)
    return True


def _bounded_connection(app: Any) -> Any:
    """A connection to *app*'s broker on which each step of a send waits at most ``ENQUEUE_TIMEOUT`` seconds.

    Celery's own producer pool would not do: kombu connects in a loop that
    sleeps between attempts until ``broker_connection_timeout`` (4 s) has
    passed, a publish with ``retry`` does that up to 3 more times, and the
    Redis transport waits for a reply for ever by default (a broker that
    accepts connections but does not answer hangs the commit). Here a send
    makes one attempt (``max_retries`` 0 stops the connect loop; the publish
    has no retry), and every step has the timeout: connecting
    (``connect_timeout``; Redis: ``socket_connect_timeout``) and each reply
    (Redis: ``socket_timeout``; RabbitMQ: ``read_timeout``/``write_timeout``).
    Each transport ignores the options of the others.
    """
    timeout = vectorindex_settings.ENQUEUE_TIMEOUT
    options = {
        **app.conf.broker_transport_options,
        "max_retries": 0,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "read_timeout": timeout,
        "write_timeout": timeout,
    }
    return app.connection_for_write(connect_timeout=timeout, transport_options=options)


def _failed(url: str, job: str, index: str, error: Exception) -> None:
    with _outages_lock:
        new = url not in _outages
        outage = _outages.setdefault(url, _Outage(0.0))
        outage.retry_at = time.monotonic() + BROKER_RETRY
    if new:
        logger.warning(
            "vectorindex could not send %s on %s to the broker (%s: %s); until it is reachable again, "
            "jobs are not sent and the maintenance scan finds their work.",
            job, index, type(error).__name__, error,
        )
    else:
        logger.debug("vectorindex: the broker is still unreachable (%s)", error)


def _sent(url: str) -> None:
    with _outages_lock:
        outage = _outages.pop(url, None)
    if outage is not None:
        logger.info(
            "vectorindex: the broker is reachable again; %d jobs not sent meanwhile are left for the maintenance scan.",
            outage.skipped,
        )
