"""Where jobs run: jobs that meet a lock another transaction keeps."""

import logging
import threading
import time

import numpy as np
import pytest
from django.db import connection, connections

from tests.indexing import build, check, clustered, worker
from tests.testapp.models import Point
from vectorindex import jobs, maintenance
from vectorindex.exceptions import JobBusy
from vectorindex.models import Head, Snapshot
from vectorindex.registry import get_declared, runtime

INDEX = "streamed_embedding"  # posting_limit=64


def declared(name=INDEX):
    return get_declared(name)


def sizes(name=INDEX):
    storage, _ = runtime(declared(name), "default").open()
    alive = storage.alive_head_ids()
    return {h: n for h, (n, _rows) in storage.posting_sizes().items() if h in alive}


# Jobs that meet a lock another transaction keeps ---------------------------------------


def timed(call, limit=60):
    """(what call() returned or raised, the seconds it took), run on a thread; it must end within *limit*."""
    box = {}

    def target():
        started = time.monotonic()
        try:
            box["result"] = call()
        except Exception as error:  # noqa: BLE001 - handed to the test
            box["result"] = error
        finally:
            box["seconds"] = time.monotonic() - started
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit} s"
    return box["result"], box["seconds"]


def point_head(vector):
    """The Point index's nearest head to *vector* (where a write of it appends first)."""
    rt = runtime(declared("point_embedding"), "default")
    head = rt.current(*rt.open())
    return int(head.search(vector[None, :], 1)[0][0, 0]), head


def crowd_point_head(head_id, head, count=250):
    centre = head.vectors(np.array([head_id]))[0]
    noise = np.random.default_rng(3).normal(scale=0.05, size=(count, 16)).astype(np.float32)
    Point.objects.bulk_create(Point(embedding=centre + n) for n in noise)


class Writer:
    """A process that saves 2 points (the second in the one-round-trip batch) and keeps its transaction open."""

    def __init__(self) -> None:
        self.process = worker("write", "2", "5", "wait")
        assert "written" in self.process.stdout.readline(), self.process.stderr.read()

    def commit(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert "committed" in self.process.stdout.readline()


@pytest.fixture
def writer():
    made = []
    yield lambda: made.append(Writer()) or made[-1]
    for each in made:
        each.process.kill()
        each.process.wait(30)


@pytest.fixture
def points(settings):
    """The Point index, built, with one list over its limit (posting_limit=200): the one the writer appends to."""
    settings.VECTORINDEX = {"JOBS": "manual", "JOB_LOCK_TIMEOUT": 1, "WAL_SNAPSHOT_ENTRIES": 1}
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(600, seed=4))
    build("point_embedding")
    target, head = point_head(clustered(2, seed=5)[1])
    crowd_point_head(target, head)
    return target


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_does_not_wait_for_a_writers_open_transaction(points, writer):
    maintenance.split(declared("point_embedding"), points)  # something for the WAL: compact takes a snapshot
    holding = writer()
    result, seconds = timed(lambda: maintenance.run("compact", declared("point_embedding")))
    if connection.vendor == "mysql":
        # The one-round-trip write used to read the state row with a shared
        # lock, and a snapshot (which locks it exclusively) waited for the commit.
        assert "snapshot at LSN" in getattr(result, "detail", repr(result))
        assert seconds < 10, seconds
    else:
        # SQLite has one writer at a time: the snapshot gives up after JOB_LOCK_TIMEOUT (1 s).
        assert isinstance(result, JobBusy), repr(result)
        assert seconds < 10, seconds
        holding.commit()
        assert "snapshot at LSN" in maintenance.run("compact", declared("point_embedding")).detail
    assert Snapshot.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_split_gives_up_on_a_head_a_writer_holds_and_runs_after_the_commit(points, writer, caplog):
    assert sizes("point_embedding")[points] > 200
    holding = writer()
    result, seconds = timed(lambda: maintenance.run("split", declared("point_embedding"), head_id=points))
    assert isinstance(result, JobBusy), repr(result)
    assert "JOB_LOCK_TIMEOUT" in str(result)
    assert seconds < 10, seconds  # JOB_LOCK_TIMEOUT is 1 s; InnoDB's own is 50 s
    # Inline, the job gives up the same way, with a warning and no traceback.
    caplog.set_level(logging.WARNING, logger="vectorindex")
    result, seconds = timed(lambda: jobs.run_inline("split", "point_embedding", "default", head_id=points))
    assert result is None and seconds < 10, (result, seconds)
    assert [r.exc_info for r in caplog.records] == [None]
    # maintain reports it, and does not try it again in every round.
    outcomes, seconds = timed(lambda: maintenance.maintain(declared("point_embedding")))
    gave_up = [o.detail for o in outcomes if o.detail.startswith(f"split(head_id={points})")]
    assert len(gave_up) == 1 and "JOB_LOCK_TIMEOUT" in gave_up[0], [o.detail for o in outcomes]
    assert Head.objects.get(pk=points).alive
    holding.commit()
    # The scan finds the split again, and now it runs.
    assert ("split", {"head_id": points}) in maintenance.scan(declared("point_embedding"))
    assert "new heads" in maintenance.run("split", declared("point_embedding"), head_id=points).detail
    assert not Head.objects.get(pk=points).alive
    assert "point_embedding: ok" in check("point_embedding")
