"""Several Celery worker processes on one index (each its own head index, as on hosts of their own), and a worker killed mid-job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from tests.indexing import ROOT, build, check, clustered, database_url, recall
from tests.test_tasks import BROKER, wait_for
from tests.testapp.models import Streamed
from vectorindex import L2Distance
from vectorindex.models import Head

RABBITMQ = os.environ.get("VECTORINDEX_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def celery_on(settings):
    """Jobs go to a broker, on a queue of this test's own; yields a function that starts a worker process."""
    from tests.celery_app import app

    started: list[subprocess.Popen] = []
    queue = f"vectorindex-test-{uuid.uuid4().hex[:8]}"

    def use(broker: str):
        settings.CELERY_BROKER_URL = broker
        settings.VECTORINDEX = {"JOBS": "celery"}
        app.conf.broker_url = broker
        app.conf.task_default_queue = queue
        app.set_current()
        app.set_default()

        def worker(name: str, fault: str | None = None) -> subprocess.Popen:
            env = {
                **os.environ,
                "DATABASE_URL": database_url(),
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "CELERY_BROKER_URL": broker,
                "CELERY_TASK_DEFAULT_QUEUE": queue,
            }
            env.pop("VECTORINDEX_FAULT", None)
            if fault:
                env["VECTORINDEX_FAULT"] = fault
            log = open(ROOT / f"test-worker-{queue}-{name}.log", "w+")
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker", "--pool=solo", "-n", f"{name}@%h",
                 "--prefetch-multiplier=1", "--loglevel=INFO", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "-Q", queue],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )
            process.log = log
            started.append(process)
            return process

        return worker

    yield use
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        process.log.close()
        os.unlink(process.log.name)
    app.conf.task_default_queue = "celery"


def output(process: subprocess.Popen) -> str:
    process.log.flush()
    with open(process.log.name) as log:
        return log.read()


def crowd_near(head_id: int, count: int, seed: int) -> None:
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime

    rt = runtime(get_declared("streamed_embedding"), "default")
    head = rt.current(*rt.open())
    centre = head.vectors(np.array([head_id]))[0]
    noise = np.random.default_rng(seed).normal(scale=0.05, size=(count, 16)).astype(np.float32)
    Streamed.objects.bulk_create(Streamed(embedding=centre + n) for n in noise)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_job_leaves_the_job_to_another(celery_on):
    """RabbitMQ hands an unacknowledged job back when its worker's connection drops (acks_late, reject_on_worker_lost)."""
    worker = celery_on(RABBITMQ)
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build("streamed_embedding")
    dying = worker("dying", fault="split:heads")  # SIGKILLs itself inside the split's transaction
    target = min(Head.objects.filter(alive=True).values_list("pk", flat=True))
    crowd_near(target, 150, seed=9)  # commits, and sends the split
    assert wait_for(lambda: dying.poll() is not None, 120), output(dying)[-3000:]
    assert dying.returncode == -9, output(dying)[-3000:]
    assert "vectorindex.split" in output(dying)
    assert Head.objects.get(pk=target).alive  # its transaction rolled back
    survivor = worker("survivor")
    assert wait_for(lambda: not Head.objects.get(pk=target).alive, 120), output(survivor)[-3000:]
    assert wait_for(lambda: "vectorindex.split" in output(survivor) and "succeeded" in output(survivor))
    assert "streamed_embedding: ok" in check("streamed_embedding")


@pytest.mark.django_db(transaction=True)
def test_several_workers_keep_one_index_right_under_a_write_stream(celery_on):
    import redis

    from vectorindex import tasks
    from vectorindex.index import maintenance
    from vectorindex.index.registry import get_declared

    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    worker = celery_on(BROKER)
    base = clustered(1500, seed=4)
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in base)
    build("streamed_embedding")
    workers = [worker(f"w{i}") for i in range(3)]
    rng = np.random.default_rng(5)
    for _round in range(12):
        # New rows as the data has them (the lists they fill split, their
        # neighbours are reassigned, emptied lists merged), a few moved, some deleted.
        near = base[rng.integers(0, len(base), 200)] + rng.normal(scale=0.5, size=(200, 16)).astype(np.float32)
        new = Streamed.objects.bulk_create(Streamed(embedding=v) for v in near)
        for row in new[:5]:
            row.embedding = base[rng.integers(0, len(base))]
            row.save()
        pks = sorted(Streamed.objects.values_list("pk", flat=True))
        Streamed.objects.filter(pk__in=rng.choice(pks, 60, replace=False).tolist()).delete()
    declared = get_declared("streamed_embedding")

    def settled() -> bool:
        """The queue is empty and the scan finds nothing left; what it finds is sent to the workers, as beat does."""
        if any(client.llen(key) for key in client.keys("vectorindex-test-*")):
            return False
        return not tasks.scan(index="streamed_embedding", using="default")

    assert wait_for(lambda: settled() and (time.sleep(3) or settled()), 300), (
        maintenance.scan(declared, "default"),
        {key: client.llen(key) for key in client.keys("vectorindex-test-*")},
    )
    assert "streamed_embedding: ok" in check("streamed_embedding")
    done = [output(w).count("succeeded") for w in workers]
    assert sum(done) >= 12 and sum(1 for d in done if d) >= 2, done  # the jobs were shared out
    vectors = np.array([np.asarray(v) for v in Streamed.objects.values_list("embedding", flat=True)[:50]])
    found = [list(Streamed.objects.order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:10]) for q in vectors]
    truth = [list(Streamed.objects.exact().order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:10]) for q in vectors]
    assert recall(found, truth) >= 0.9
