"""Where jobs run: a broker that is down, the inline safety-net scan, and jobs
that meet a lock another transaction keeps."""

import io
import logging
import os
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction

from tests.index.streamed import crowd_one_head
from tests.indexing import build, check, clustered, worker
from tests.testapp.models import Point, Streamed
from vectorindex.exceptions import JobBusy
from vectorindex.index import broker, jobs, maintenance
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import runtime
from vectorindex.models import Head, Snapshot, Version

INDEX = "streamed_embedding"  # posting_limit=64
BROKER = os.environ.get("VECTORINDEX_TEST_BROKER", "redis://127.0.0.1:6379/15")


def declared(name=INDEX):
    return get_declared(name)


def sizes(name=INDEX):
    storage, _ = runtime(declared(name), "default").open()
    alive = storage.alive_head_ids()
    return {h: n for h, (n, _rows) in storage.posting_sizes().items() if h in alive}


def built(settings):
    """The Streamed index over 600 rows, built with jobs off: nothing is sent while setting up."""
    settings.VECTORINDEX = {"JOBS": "manual"}
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)


def more_rows(count, start=600):
    """Rows from the same blobs as the built ones (enough to take many lists over the limit)."""
    return [Streamed(embedding=v) for v in clustered(start + count, seed=4)[start:]]


@pytest.fixture
def celery(settings):
    """Point the Celery app at a broker URL: jobs go to Celery from then on."""
    from tests.celery_app import app

    def at(url, **vectorindex):
        settings.CELERY_BROKER_URL = url
        settings.VECTORINDEX = {"JOBS": "celery", **vectorindex}
        app.conf.broker_url = url
        app.set_current()
        app.set_default()

    return at


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandIn:
    """A broker's port that the test controls, counting the connections made to it.

    "up" forwards to *upstream*; "hung" accepts and never answers; "down"
    closes each connection at once. A hung stand-in hangs for *hang_for*
    seconds at most, then is down (so that code that waits for ever fails
    the test instead of hanging it).
    """

    def __init__(self, mode: str, upstream: tuple[str, int] | None = None, hang_for: float = 20.0) -> None:
        self.mode, self.upstream, self.connections = mode, upstream, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Timer(hang_for, self._stop_hanging).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            if self.mode == "up":
                server = socket.create_connection(self.upstream)
                self.held += [client, server]
                for source, target in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(source, target), daemon=True).start()
            elif self.mode == "hung":
                self.held.append(client)
            else:
                client.close()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                end.close()

    def _stop_hanging(self) -> None:
        if self.mode == "hung":
            self.set("down")

    def set(self, mode: str) -> None:
        """Switch to *mode*; open connections are dropped."""
        self.mode = mode
        held, self.held = self.held, []
        for end in held:
            end.close()

    def close(self) -> None:
        self.set("down")
        self.listener.close()


@pytest.fixture
def stand_in():
    made = []

    def make(mode, **kwargs):
        made.append(StandIn(mode, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


def problems(caplog):
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


# A broker that is down ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_write_with_the_broker_down_waits_once_warns_once_and_leaves_the_splits_to_the_scan(settings, celery, caplog):
    built(settings)
    celery(f"redis://127.0.0.1:{closed_port()}/0")
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    Streamed.objects.bulk_create(more_rows(800))  # takes many lists over the limit: a split each
    seconds = time.monotonic() - started
    # Each send used to try the broker for 0.6 s and log a traceback: 6–7 s.
    assert seconds < 3, seconds
    assert len(problems(caplog)) == 1, [r.getMessage() for r in problems(caplog)]
    assert "could not send split on streamed_embedding to the broker" in problems(caplog)[0].getMessage()
    assert problems(caplog)[0].exc_info is None
    # The splits that were not sent are the scan's to find, and maintain's to do.
    over = [arguments["head_id"] for name, arguments in maintenance.scan(declared()) if name == "split"]
    assert len(over) >= 2
    call_command("vectorindex", "maintain", INDEX, stdout=open(os.devnull, "w"))
    assert max(sizes().values()) <= 64
    assert "streamed_embedding: ok" in check(INDEX)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_broker_that_does_not_answer_costs_a_write_one_short_timeout(scheme, settings, celery, stand_in, caplog):
    built(settings)
    hung = stand_in("hung")
    url = f"redis://127.0.0.1:{hung.port}/0" if scheme == "redis" else f"amqp://guest:guest@127.0.0.1:{hung.port}//"
    celery(url, ENQUEUE_TIMEOUT=1)
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    Streamed.objects.bulk_create(more_rows(800))
    seconds = time.monotonic() - started
    assert seconds < 4, seconds  # the write, and one wait of ENQUEUE_TIMEOUT (it used to hang)
    assert hung.connections == 1  # the later splits of that commit did not try again
    Streamed.objects.bulk_create(more_rows(300, start=1400))
    assert hung.connections == 1  # nor does the next request, while the broker stays down
    assert len(problems(caplog)) == 1, [r.getMessage() for r in problems(caplog)]


def test_one_warning_per_outage_and_a_note_when_the_broker_is_back(settings, celery, stand_in, caplog, monkeypatch):
    import redis

    upstream = urlsplit(BROKER)
    client = redis.Redis.from_url(BROKER)
    client.ping()
    gate = stand_in("down", upstream=(upstream.hostname, upstream.port or 6379))
    celery(f"redis://127.0.0.1:{gate.port}{upstream.path}")
    monkeypatch.setattr(broker, "BROKER_RETRY", 0)  # every send tries the broker
    caplog.set_level(logging.INFO, logger="vectorindex")
    try:
        assert not broker.send("split", INDEX, "default", head_id=1)
        assert not broker.send("split", INDEX, "default", head_id=2)
        assert gate.connections == 2
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        gate.set("up")
        assert broker.send("split", INDEX, "default", head_id=3)
        assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
        assert "reachable again" in caplog.records[-1].getMessage()
        assert broker.send("split", INDEX, "default", head_id=4)
        gate.set("down")
        assert not broker.send("split", INDEX, "default", head_id=5)
        assert [r.levelname for r in caplog.records] == ["WARNING", "INFO", "WARNING"]
    finally:
        client.flushdb()


# The inline safety-net scan -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_inline_a_write_runs_the_scan_once_SCAN_INTERVAL_has_passed(settings, monkeypatch):
    built(settings)
    target = crowd_one_head()  # its split is lost: jobs are off
    assert ("split", {"head_id": target}) in maintenance.scan(declared())
    scans = []
    scan = jobs.RUNNERS["scan"]  # what the inline scan runs
    monkeypatch.setitem(jobs.RUNNERS, "scan", lambda *args, **kwargs: scans.append(args) or scan(*args, **kwargs))
    new = iter(clustered(3, seed=8))

    settings.VECTORINDEX = {"JOBS": "inline", "SCAN_INTERVAL": 3600}
    Streamed.objects.create(embedding=next(new))
    assert scans == [] and Head.objects.get(pk=target).alive

    settings.VECTORINDEX = {"JOBS": "inline", "SCAN_INTERVAL": 1}
    time.sleep(1.1)
    Streamed.objects.create(embedding=next(new))
    assert len(scans) == 1
    assert not Head.objects.get(pk=target).alive  # the scan found the split, and it ran
    assert max(sizes().values()) <= 64

    settings.VECTORINDEX = {"JOBS": "inline", "SCAN_INTERVAL": 3600}
    Streamed.objects.create(embedding=next(new))
    assert len(scans) == 1  # within the interval, a write is one time check
    assert "streamed_embedding: ok" in check(INDEX)


@pytest.mark.django_db(transaction=True)
def test_inline_a_write_that_rolls_back_leaves_the_scan_due_for_the_next_commit(settings, monkeypatch):
    built(settings)
    scans = []
    monkeypatch.setattr(jobs, "scan_inline", lambda index, using: scans.append(index))
    settings.VECTORINDEX = {"JOBS": "inline", "SCAN_INTERVAL": 1}
    time.sleep(1.1)
    new = iter(clustered(4, seed=8))
    with pytest.raises(RuntimeError, match="rolled back"), transaction.atomic():
        Streamed.objects.create(embedding=next(new))
        raise RuntimeError("rolled back")
    assert scans == []
    with transaction.atomic():
        Streamed.objects.create(embedding=next(new))
        Streamed.objects.create(embedding=next(new))
        assert scans == []
    assert scans == [INDEX]  # once, when the transaction committed
    Streamed.objects.create(embedding=next(new))
    assert scans == [INDEX]


@pytest.mark.django_db(transaction=True)
def test_a_build_puts_off_the_scan_only_once_it_commits(settings, monkeypatch):
    from vectorindex.index.build import build as build_index
    from vectorindex.storage import Storage

    built(settings)
    key = (INDEX, "default")
    monkeypatch.setitem(jobs._scanned, key, 0.0)

    def fail(self):
        raise RuntimeError("the build broke off")

    with monkeypatch.context() as patched:
        patched.setattr(Storage, "posting_sizes", fail)  # read last, inside the build's transaction
        with pytest.raises(RuntimeError, match="the build broke off"):
            build_index(declared(), seed=1)
    assert jobs._scanned[key] == 0.0  # still due
    build_index(declared(), seed=1)
    assert jobs._scanned[key] > 0.0
    assert "streamed_embedding: ok" in check(INDEX)


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
    run, seconds = timed(lambda: maintenance.maintain(declared("point_embedding")))
    gave_up = [o for o in run.outcomes if o.detail.startswith(f"split(head_id={points})")]
    assert len(gave_up) == 1 and "JOB_LOCK_TIMEOUT" in gave_up[0].detail, [o.detail for o in run.outcomes]
    # (On SQLite the writer holds the whole database: every job gives up.)
    assert gave_up[0].busy and not run.finished and ("split", {"head_id": points}) in run.busy
    # The command says so, and fails: the list is still over its limit.
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="Maintenance did not finish for: point_embedding"):
        call_command("vectorindex", "maintain", "point_embedding", stdout=out, stderr=err)
    assert "NOT FINISHED: " in err.getvalue() and "1 split left undone" in err.getvalue(), err.getvalue()
    assert f"split(head_id={points})" in err.getvalue() and out.getvalue() == ""
    assert Head.objects.get(pk=points).alive
    holding.commit()
    # The scan finds the split again, and now it runs.
    assert ("split", {"head_id": points}) in maintenance.scan(declared("point_embedding"))
    assert "new heads" in maintenance.run("split", declared("point_embedding"), head_id=points).detail
    assert not Head.objects.get(pk=points).alive
    assert "point_embedding: ok" in check("point_embedding")


@pytest.mark.django_db(transaction=True)
def test_a_sweep_removes_version_rows_while_a_writer_holds_other_vectors(points, writer):
    """The sweep locks the version rows it removes, not every row of the index
    (and so not the rows an open transaction wrote)."""
    if connection.vendor != "mysql":
        pytest.skip("SQLite has one writer at a time: the writer holds the whole database")
    victims = list(Point.objects.order_by("pk").values_list("pk", flat=True)[:100])
    Point.objects.filter(pk__in=victims).delete()
    holding = writer()
    result, seconds = timed(lambda: maintenance.run("sweep", declared("point_embedding")))
    assert not isinstance(result, Exception), repr(result)
    assert seconds < 10, seconds
    removed = int(re.search(r"(\d+) version rows? of deleted vectors removed", result.detail)[1])
    # The victims in the lists the writer appended to stay named: the sweep leaves those lists.
    assert removed >= 20, result.detail
    assert Version.objects.filter(vector_id__in=victims).count() == 100 - removed
    holding.commit()
    assert "point_embedding: ok" in check("point_embedding")
