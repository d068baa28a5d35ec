"""Maintenance on a real Celery worker, with Redis as the broker."""

import os
import subprocess
import sys
import threading
import time

import pytest

from tests.indexing import ROOT, build, check, clustered, database_url
from tests.testapp.models import Point, Streamed
from vectorindex.models import Head

BROKER = os.environ.get("VECTORINDEX_TEST_BROKER", "redis://127.0.0.1:6379/15")


def crowd(count=150):
    from tests.index.streamed import crowd_one_head

    return crowd_one_head(count)


@pytest.fixture
def broker(settings):
    import redis

    client = redis.Redis.from_url(BROKER)
    client.ping()  # CI starts Redis; a test that cannot reach it fails, it does not skip
    client.flushdb()
    settings.CELERY_BROKER_URL = BROKER
    settings.VECTORINDEX = {"JOBS": "celery"}
    from tests.celery_app import app

    app.conf.broker_url = BROKER
    app.set_current()
    app.set_default()
    yield client
    client.flushdb()


@pytest.fixture
def worker_process(broker):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CELERY_BROKER_URL": BROKER,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker", "--pool=solo",
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield process
    process.terminate()
    process.wait(30)


def wait_for(condition, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_the_split_a_write_triggered(worker_process):
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build("streamed_embedding")
    target = crowd()  # commits, and sends vectorindex.split to the broker
    assert wait_for(lambda: not Head.objects.get(pk=target).alive), "the worker did not split the head"
    # The split's follow-up (reassign) goes through the broker too; let it finish.
    time.sleep(2)
    worker_process.terminate()
    output, _ = worker_process.communicate(timeout=30)
    assert "vectorindex.split" in output and "succeeded" in output, output[-3000:]
    assert "vectorindex.reassign" in output, output[-3000:]
    assert "streamed_embedding: ok" in check("streamed_embedding")


@pytest.mark.django_db(transaction=True)
def test_the_scan_task_enqueues_what_the_index_needs(worker_process, settings):
    from vectorindex import tasks

    settings.VECTORINDEX = {"JOBS": "manual"}  # writes trigger nothing; the scan must find it
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build("streamed_embedding")
    target = crowd()
    assert Head.objects.get(pk=target).alive
    tasks.scan.delay(index="streamed_embedding")
    assert wait_for(lambda: not Head.objects.get(pk=target).alive), "the scan's split never ran"
    assert "streamed_embedding: ok" in check("streamed_embedding")


@pytest.mark.django_db(transaction=True)
def test_a_split_that_meets_a_writers_lock_is_retried_with_a_countdown(worker_process, settings):
    """The worker's split gives up after JOB_LOCK_TIMEOUT (5 s by default) and
    is retried later, rather than holding the worker for the database's own
    lock wait timeout; after the writer commits, the retry does the split."""
    from tests.index.test_jobs import Writer, crowd_point_head, point_head
    from vectorindex import tasks

    settings.VECTORINDEX = {"JOBS": "manual"}  # only the task sent below runs
    output: list[str] = []

    def read() -> None:
        for line in worker_process.stdout:
            output.append(line)

    threading.Thread(target=read, daemon=True).start()
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(600, seed=4))
    build("point_embedding")
    target, head = point_head(clustered(2, seed=5)[1])
    crowd_point_head(target, head)
    holding = Writer()  # appends to the target head, and keeps its transaction open
    try:
        tasks.split.delay(index="point_embedding", head_id=target)
        assert wait_for(lambda: any("retry: Retry in" in line for line in output)), "".join(output)[-3000:]
        assert Head.objects.get(pk=target).alive
        holding.commit()
    finally:
        holding.process.kill()
        holding.process.wait(30)
    assert wait_for(lambda: not Head.objects.get(pk=target).alive), "the retried split never ran"
    # The worker logs "succeeded" only after the split's transaction commits.
    assert wait_for(lambda: any("vectorindex.split" in line and "succeeded" in line for line in output)), "".join(
        output
    )[-3000:]
    assert "point_embedding: ok" in check("point_embedding")


@pytest.mark.django_db(databases=["default", "other"])
def test_the_scan_of_every_index_goes_on_past_one_that_fails(monkeypatch, caplog):
    """Beat's scan, with no arguments: every index on every database that holds vectorindex's tables."""
    from vectorindex import tasks
    from vectorindex.index import maintenance
    from vectorindex.index.registry import declared_indexes

    scanned = []
    first = sorted(declared_indexes())[0]  # scanned first: the others come after it fails

    def scan(declared, using):
        scanned.append((using, declared.name))
        if declared.name == first and using == "default":
            raise RuntimeError("not migrated")
        return []

    monkeypatch.setattr(maintenance, "scan", scan)
    assert tasks.scan() == 0
    names = sorted(declared_indexes())
    assert scanned == [("default", name) for name in names] + [("other", name) for name in names] and len(names) > 1
    assert f"the scan of {first} on 'default' failed" in caplog.text
    with pytest.raises(RuntimeError, match="not migrated"):
        tasks.scan(index=first, using="default")


def test_follow_ups_and_the_jobs_a_scan_finds_go_through_the_bounded_send(monkeypatch):
    """Not Celery's ``delay``, which retries a publish for seconds and then
    raises in a job whose work has already committed."""
    from celery.app.task import Task

    from vectorindex import tasks
    from vectorindex.index import broker as sending
    from vectorindex.index import maintenance

    sent = []
    reassign = ("reassign", {"head_id": 7, "new_head_ids": [8, 9]})
    monkeypatch.setattr(sending, "send", lambda job, index, using, **arguments: sent.append((job, index, using, arguments)) or True)
    monkeypatch.setattr(maintenance, "run", lambda name, declared, using, **arguments: maintenance.Outcome(name, "split", [reassign]))
    monkeypatch.setattr(maintenance, "scan", lambda declared, using: [("merge", {"head_id": 3})])

    def published(*args, **kwargs):
        raise AssertionError("sent with Celery's own publish")

    monkeypatch.setattr(Task, "apply_async", published)
    assert tasks.split.apply(kwargs={"index": "point_embedding", "head_id": 1}).get() == "split"
    assert tasks.scan.apply(kwargs={"index": "point_embedding", "using": "default"}).get() == 1
    assert sent == [
        ("reassign", "point_embedding", "default", {"head_id": 7, "new_head_ids": [8, 9]}),
        ("merge", "point_embedding", "default", {"head_id": 3}),
    ]


def test_an_eager_task_that_meets_a_lock_is_left_for_the_scan_not_retried_at_once(monkeypatch, caplog):
    """Run eagerly, a Celery retry runs the task again at once (the countdown
    ignored), each try waiting JOB_LOCK_TIMEOUT inside the caller's commit."""
    from vectorindex import tasks
    from vectorindex.exceptions import JobBusy
    from vectorindex.index import maintenance

    tries = []

    def run(name, declared, using, **arguments):
        tries.append(name)
        raise JobBusy("split(head_id=1) on point_embedding: a lock stayed held by another transaction")

    monkeypatch.setattr(maintenance, "run", run)
    result = tasks.split.apply(kwargs={"index": "point_embedding", "head_id": 1})
    assert result.successful(), result.traceback
    assert tries == ["split"]
    assert "left for the maintenance scan (eager tasks are not retried)" in caplog.text
