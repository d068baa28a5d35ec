"""Snapshots, WAL replay, recovery, crashes, and the vectorindex command."""

import hashlib
import io
import json
import logging
import re
import signal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from tests.damage import CRAFTED, LOADED, Layout
from tests.indexing import build, check, clustered, run_worker, worker
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.index import maintenance
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import reset_runtimes, runtime
from vectorindex.index.wal import change_heads
from vectorindex.models import Head, IndexState, Snapshot, SnapshotChunk, WalEntry
from vectorindex.storage import SNAPSHOT_CHUNK, Storage


def found_for(queries):
    return [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]


@pytest.fixture
def built(db):
    Point.objects.bulk_create(Point(group=i % 20, embedding=v) for i, v in enumerate(clustered(3000)))
    build("point_embedding")


def command(*args):
    out = io.StringIO()
    call_command("vectorindex", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_status_reports_the_numbers(built):
    report = json.loads(command("status", "point_embedding", "--json"))
    assert report["status"] == "ready"
    assert report["vectors"] == 3000
    assert report["heads"] == 120  # 4% of 3,000 (no list over the limit to split)
    assert report["posting_lists"] == 120
    assert report["posting_entries"] >= 3000
    assert report["wal_entries"] == 0 and report["snapshot_lsn"] == 0
    assert report["head_index_bytes"] > 0 and report["raw_vector_bytes"] == 3000 * 16 * 4
    text = command("status", "point_embedding")
    assert "3,000" in text and "120 alive" in text and "raw vector bytes" in text


def test_commands_refuse_unknown_names_and_unbuilt_indexes(db):
    from vectorindex.index.registry import declared_indexes

    declared = ", ".join(sorted(declared_indexes()))
    assert declared.count(", ") > 5 and "point_embedding" in declared
    with pytest.raises(CommandError, match=re.escape(f"No VectorIndex named 'nope'; declared: {declared}.")):
        command("check", "nope")
    with pytest.raises(CommandError, match="point_embedding: point_embedding is not built"):
        command("check", "point_embedding")
    with pytest.raises(CommandError, match="Name one or more indexes, or --all"):
        command("check")


def test_check_finds_a_lost_vector(built):
    point = Point.objects.order_by("pk")[5]
    declared = get_declared("point_embedding")
    storage, _state = runtime(declared, "default").open()
    with connection.cursor() as cursor:  # damage the index behind its back
        cursor.execute(
            "UPDATE vectorindex_version SET version = version + 7 WHERE index_id = %s AND vector_id = %s",
            [storage.index_id, point.pk],
        )
    with pytest.raises(CommandError, match="Invariants violated in: point_embedding"):
        command("check", "point_embedding")
    assert "1 row is in no posting list of an alive head at its current version" in check_output()


def check_output():
    out = io.StringIO()
    try:
        call_command("vectorindex", "check", "point_embedding", stdout=out, stderr=out)
    except CommandError:
        pass
    return out.getvalue()


def test_head_changes_go_through_the_wal_and_are_replayed(built):
    declared = get_declared("point_embedding")
    rt = runtime(declared, "default")
    extra = clustered(5, seed=123) + 40
    with transaction.atomic():
        storage, _ = rt.open()
        state = storage.lock_state(exclusive=True)
        new_ids, lsn = change_heads(storage, state[2], add=extra)
    assert lsn == 5 and WalEntry.objects.count() == 5
    # This process replays the WAL on its next query; so would a new one.
    storage, state = rt.open()
    assert set(new_ids.tolist()) <= rt.current(storage, state).alive
    reset_runtimes()
    storage, state = runtime(declared, "default").open()
    head = runtime(declared, "default").current(storage, state)
    assert set(new_ids.tolist()) <= head.alive and head.lsn == 5
    # Retiring a head removes it everywhere.
    with transaction.atomic():
        state = storage.lock_state(exclusive=True)
        change_heads(storage, state[2], retire=[int(new_ids[0])])
    storage, state = rt.open()
    assert int(new_ids[0]) not in rt.current(storage, state).alive
    assert "point_embedding: ok" in check("point_embedding")
    # A snapshot covers the WAL and truncates it.
    assert "snapshot at LSN 6" in command("snapshot", "point_embedding")
    assert WalEntry.objects.count() == 0 and Snapshot.objects.count() == 1
    assert "point_embedding: ok" in check("point_embedding")


def test_a_process_behind_a_compaction_loads_the_snapshot(built):
    """Another process changed heads and compacted the WAL past this process's
    LSN: the entries it lacks are only in the snapshot now, and it loads it
    rather than replaying what is left (which would miss those changes)."""
    from vectorindex.index.recovery import take_snapshot, verify

    declared = get_declared("point_embedding")
    rt = runtime(declared, "default")
    storage, state = rt.open()
    behind = rt.current(storage, state)
    lagging = type(behind).from_bytes(behind.to_bytes(), 16, "l2")
    lagging.generation, lagging.lsn = behind.generation, behind.lsn
    retired = sorted(behind.alive)[:3]
    with transaction.atomic():
        state = storage.lock_state(exclusive=True)
        added, _lsn = change_heads(storage, state[2], add=clustered(4, seed=77) + 30, retire=retired)
    take_snapshot(declared)  # the WAL up to here is deleted
    with transaction.atomic():
        state = storage.lock_state(exclusive=True)
        later, _lsn = change_heads(storage, state[2], add=clustered(2, seed=78) - 30)
    assert WalEntry.objects.count() == 2
    rt.head = lagging  # as a process that last looked before all this
    storage, state = rt.open()
    head = rt.current(storage, state)
    assert verify(head, storage) == []
    assert set(added.tolist()) | set(later.tolist()) <= head.alive and not set(retired) & head.alive
    assert head.lsn == state[2]


def test_recover_rebuilds_a_damaged_snapshot_from_the_heads_table(built):
    queries = clustered(20, seed=8)
    before = found_for(queries)
    assert "head index from the snapshot" in command("recover", "point_embedding")
    SnapshotChunk.objects.update(data=b"garbage")
    reset_runtimes()
    with pytest.raises(CommandError):
        command("check", "point_embedding")
    output = command("recover", "point_embedding")
    assert "is incomplete or damaged" in output and "head index from the heads table, 120 heads" in output
    assert "point_embedding: ok" in check("point_embedding")
    reset_runtimes()
    assert found_for(queries) == before


@pytest.mark.django_db(transaction=True)
def test_a_fresh_process_answers_like_the_builder():
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    declared = get_declared("point_embedding")
    storage, state = runtime(declared, "default").open()
    with transaction.atomic():
        state = storage.lock_state(exclusive=True)
        change_heads(storage, state[2], add=clustered(10, seed=31) + 1)  # WAL entries to replay
    queries = clustered(30, seed=5)
    assert run_worker("query", "point_embedding", "5")["found"] == found_for(queries)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("moment", ["hold", "commit"])
def test_a_writer_killed_mid_transaction_or_after_commit_loses_nothing(moment):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(2000))
    build("point_embedding")
    process = worker("write", "200", "61", moment)
    line = process.stdout.readline()
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert line, process.stderr.read()
    report = json.loads(line)
    written = clustered(200, seed=61)
    if moment == "hold":
        assert Point.objects.filter(group=61).count() == 0
        assert not Point.objects.filter(pk__in=report["written"]).exists()
        # Nothing uncommitted is found: each vector's nearest row is an old one.
        assert not {p for v in written[::20] for p in [Point.objects.order_by(L2Distance("embedding", v)).first().pk]} & set(report["written"])
    else:
        pks = report["committed"]
        assert Point.objects.filter(pk__in=pks).count() == 200
        for vector, pk in zip(written, pks):
            assert Point.objects.order_by(L2Distance("embedding", vector)).first().pk == pk
    assert "point_embedding: ok" in check("point_embedding")
    assert IndexState.objects.get(name="point_embedding").status == "ready"
    heads = Head.objects.filter(alive=True).count()
    # As built (4% of 2,000) when nothing committed; committed writes may have split a list.
    assert heads == 80 if moment == "hold" else heads >= 80


def test_a_snapshot_of_a_graph_full_of_retired_heads_is_rebuilt_from_the_alive_ones(built):
    from vectorindex.index.recovery import take_snapshot

    declared = get_declared("point_embedding")
    rt = runtime(declared, "default")
    storage, state = rt.open()
    head = rt.current(storage, state)
    retire = sorted(head.alive)[:40]  # 40 of 120 retired, none added: their slots stay in the graph
    with transaction.atomic():
        state = storage.lock_state(exclusive=True)
        change_heads(storage, state[2], retire=retire)
    head = rt.current(*rt.open())
    assert (len(head), head.elements) == (80, 120)
    take_snapshot(declared, "default")
    assert rt.head.elements == 80  # this process's own, rebuilt
    reset_runtimes()
    loaded = runtime(declared, "default").current(*runtime(declared, "default").open())
    assert (len(loaded), loaded.elements) == (80, 80)
    assert Snapshot.objects.get().heads == 80


def test_a_graph_rebuilt_for_a_snapshot_keeps_the_changes_an_older_transaction_views(built):
    """Without them, a query in a transaction older than the snapshot's LSN loads a whole head index as of its own."""
    from vectorindex.index.recovery import take_snapshot

    declared = get_declared("point_embedding")
    rt = runtime(declared, "default")
    storage, state = rt.open()
    before = rt.current(storage, state).lsn
    retire = sorted(rt.head.alive)[:40]
    with transaction.atomic():
        state = storage.lock_state(exclusive=True)
        change_heads(storage, state[2], retire=retire)
    rt.current(*rt.open())
    take_snapshot(declared, "default")
    assert rt.head.elements == 80  # rebuilt
    assert rt.head.changes_since(before) == (set(), set(retire))


# Damaged and crafted snapshots -------------------------------------------------


def snapshot_bytes() -> tuple[Snapshot, bytes]:
    snapshot = Snapshot.objects.get()
    chunks = SnapshotChunk.objects.filter(snapshot_id=snapshot.pk).order_by("number").values_list("data", flat=True)
    return snapshot, b"".join(bytes(chunk) for chunk in chunks)


def flip_a_byte() -> Snapshot:
    """One bit of the stored snapshot changed, as a bad disk or a bad hand would: its checksum no longer matches."""
    snapshot, data = snapshot_bytes()
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x10
    SnapshotChunk.objects.filter(snapshot_id=snapshot.pk, number=0).update(data=bytes(damaged[:SNAPSHOT_CHUNK]))
    return snapshot


def store_crafted(snapshot: Snapshot, data: bytes) -> None:
    """*data* in place of the snapshot's bytes, with a checksum that matches them."""
    SnapshotChunk.objects.filter(snapshot_id=snapshot.pk).delete()
    chunks = [data[start : start + SNAPSHOT_CHUNK] for start in range(0, len(data), SNAPSHOT_CHUNK)]
    for number, chunk in enumerate(chunks):
        SnapshotChunk.objects.create(snapshot_id=snapshot.pk, number=number, data=chunk)
    Snapshot.objects.filter(pk=snapshot.pk).update(
        size=len(data), chunks=len(chunks), checksum=hashlib.sha256(data).hexdigest()
    )


def fallback_warnings(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == "vectorindex" and r.levelno == logging.WARNING]


def test_a_damaged_snapshot_falls_back_to_the_heads_table_once(built, caplog):
    queries = clustered(20, seed=8)
    before = found_for(queries)
    flip_a_byte()
    reset_runtimes()
    with caplog.at_level(logging.WARNING, logger="vectorindex"):
        assert found_for(queries) == before
        rt = runtime(get_declared("point_embedding"), "default")
        head = rt.head
        assert found_for(queries) == before  # the rebuilt head index is kept, not rebuilt per query
        point = Point.objects.create(embedding=clustered(1, seed=9)[0] + 0.5)
        assert Point.objects.order_by(L2Distance("embedding", point.embedding)).first() == point
    assert rt.head is head and len(head) == 120
    (warning,) = fallback_warnings(caplog.records)
    assert "point_embedding: the head index is rebuilt from the heads table" in warning
    assert "is incomplete or damaged" in warning


def test_the_rebuilt_head_index_replays_what_committed_while_the_heads_were_read(built, monkeypatch):
    """The rebuilt head index is labelled with an LSN read before the heads: a
    split that commits after the heads were read is in the WAL after that LSN,
    and replaying it brings the head index to the heads table exactly."""
    from vectorindex.index.recovery import verify

    flip_a_byte()
    reset_runtimes()
    read_heads = Storage.alive_heads
    changed = []

    def heads_then_a_split(storage):
        heads = read_heads(storage)
        if not changed:
            state = storage.lock_state(exclusive=True)
            new_ids, lsn = change_heads(storage, state[2], add=clustered(3, seed=90) + 25, retire=[int(heads[0][0])])
            changed.append((new_ids, lsn, int(heads[0][0])))
        return heads

    monkeypatch.setattr(Storage, "alive_heads", heads_then_a_split)
    rt = runtime(get_declared("point_embedding"), "default")
    storage, state = rt.open()
    head = rt.current(storage, state)
    monkeypatch.undo()
    new_ids, lsn, retired = changed[0]
    assert head.lsn == lsn == 4
    assert set(new_ids.tolist()) <= head.alive and retired not in head.alive
    assert verify(head, storage) == []


def test_the_scan_replaces_a_damaged_snapshot_no_process_has_loaded(built):
    declared = get_declared("point_embedding")
    damaged = flip_a_byte()
    reset_runtimes()
    assert ("compact", {"damaged": damaged.pk}) in maintenance.scan(declared)
    outcomes = maintenance.maintain(declared).outcomes
    (compacted,) = [o.detail for o in outcomes if o.job == "compact"]
    assert re.fullmatch(rf"snapshot at LSN \d+ in place of damaged snapshot {damaged.pk}; \d+ WAL entries dropped", compacted)
    assert not Snapshot.objects.filter(pk=damaged.pk).exists()
    assert maintenance.scan(declared) == []
    assert "point_embedding: ok" in check("point_embedding")


def test_a_crafted_snapshot_is_reported_and_recovered(built):
    snapshot, data = snapshot_bytes()
    mutate, message = CRAFTED["upper neighbour too low"]
    store_crafted(snapshot, mutate(data))
    reset_runtimes()
    output = check_output()
    assert "the head index cannot be loaded: the saved hnswlib index links to element" in output
    output = command("recover", "point_embedding")
    assert re.search(message, output) and "head index from the heads table, 120 heads" in output
    assert "point_embedding: ok" in check("point_embedding")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("order", ["query,write", "write,query"])
def test_a_fresh_process_works_on_a_damaged_snapshot_and_it_is_replaced(order):
    """A flipped byte: a new process queries and writes as if nothing happened,
    warns once, and a new snapshot replaces the damaged one — asked for by the
    write's transaction, or found by the maintenance scan."""
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    before = found_for(clustered(30, seed=5))
    damaged = flip_a_byte()
    report = run_worker("use", "point_embedding", "5", order)
    assert report["found"] == before
    assert report["nearest"] == report["written"]
    (warning,) = report["warnings"]
    assert "rebuilt from the heads table" in warning and "is incomplete or damaged" in warning
    if order == "write,query":
        assert not Snapshot.objects.filter(pk=damaged.pk).exists()  # the write asked, its commit ran it
    else:
        assert Snapshot.objects.filter(pk=damaged.pk).exists()  # a read alone writes nothing
        command("maintain", "point_embedding")
    assert Snapshot.objects.exclude(pk=damaged.pk).count() == 1
    again = run_worker("query", "point_embedding", "5")
    assert again["warnings"] == [] and again["found"] == before
    assert "point_embedding: ok" in check("point_embedding")


@pytest.mark.django_db(transaction=True)
def test_crafted_snapshots_with_a_valid_checksum_never_crash_a_process():
    """Each crafted snapshot, loaded by a fresh process through a query: it
    answers as before (from the heads table), with one warning naming the fault."""
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    before = found_for(clustered(30, seed=5))
    snapshot, data = snapshot_bytes()
    assert Layout.of(data).header["max_level"] >= 1
    failures = {}
    for name in LOADED:
        mutate, message = CRAFTED[name]
        store_crafted(snapshot, mutate(data))
        process = worker("query", "point_embedding", "5")
        out, err = process.communicate(timeout=120)
        if process.returncode != 0:
            failures[name] = f"exit {process.returncode}: {err[-500:]}"
            continue
        report = json.loads(out.strip().splitlines()[-1])
        warnings = report["warnings"]
        if report["found"] != before or len(warnings) != 1 or not re.search(message, warnings[0]):
            failures[name] = f"found as before: {report['found'] == before}; warnings: {warnings}"
    assert failures == {}


@pytest.mark.django_db(transaction=True)
def test_a_check_that_waited_for_a_build_reads_what_the_build_committed(monkeypatch):
    """The check's snapshot is taken once it holds the state row, not before it waits for it."""
    import threading
    import time

    from django.db import connections

    from vectorindex.index.build import build as build_index
    from vectorindex.index.recovery import check as check_index

    if connection.vendor != "mysql":
        pytest.skip("SQLite has one writer at a time: a transaction that has begun never waits for a build")
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(600))
    build("point_embedding")
    declared = get_declared("point_embedding")
    results, check_connection = {}, []
    check_at_lock, check_go, build_paused, build_go = (threading.Event() for _ in range(4))
    lock_state = Storage.lock_state

    def pausing_lock_state(self, exclusive):
        if threading.current_thread().name == "check" and not check_at_lock.is_set():
            check_connection.append(self.connection.connection.thread_id())
            check_at_lock.set()
            check_go.wait(60)
        return lock_state(self, exclusive)

    def pausing_progress(stage, done, total):
        if not build_paused.is_set():  # the build holds the state row from its start
            build_paused.set()
            build_go.wait(60)

    def start(name, work):
        def target():
            try:
                results[name] = work()
            except Exception as error:  # noqa: BLE001 - handed to the test
                results[name] = error
            finally:
                connections.close_all()

        thread = threading.Thread(target=target, name=name)
        thread.start()
        return thread

    monkeypatch.setattr(Storage, "lock_state", pausing_lock_state)
    checking = start("check", lambda: check_index(declared))
    assert check_at_lock.wait(60)
    building = start("build", lambda: build_index(declared, progress=pausing_progress))
    try:
        assert build_paused.wait(60)
        check_go.set()
        # Until the check waits for the state row. (A lock wait in the
        # optimizer's read of one row by primary key shows in the process
        # list, not as a LOCK WAIT in INNODB_TRX.)
        waiting = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s AND INFO LIKE %s"
        for _attempt in range(200):
            with connection.cursor() as cursor:
                cursor.execute(waiting, [check_connection[0], "%LOCK IN SHARE MODE"])
                if cursor.fetchone()[0]:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the check did not wait for the build")
    finally:
        check_go.set()
        build_go.set()
        building.join(60)
        checking.join(60)
    assert not isinstance(results["build"], Exception), repr(results["build"])
    assert results["check"] == ([], []), results["check"]
