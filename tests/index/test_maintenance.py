"""LIRE maintenance: the jobs, their triggers, crashes, concurrency, and streams."""

import io
import json
import threading

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connections, transaction

from tests.indexing import RefusingSearches, build, check, clustered, recall, run_worker, worker
from tests.testapp.models import Streamed
from vectorindex import L2Distance
from vectorindex.index import maintenance
from vectorindex.index.maintenance import lists, sweeping
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import runtime
from vectorindex.models import Head, IndexState, Posting, Snapshot, Version, WalEntry

INDEX = "streamed_embedding"  # posting_limit=64, merge_below=4, defragment_rows=8


def declared():
    return get_declared(INDEX)


def sizes():
    storage, _ = runtime(declared(), "default").open()
    alive = storage.alive_head_ids()
    return {h: n for h, (n, _rows) in storage.posting_sizes().items() if h in alive}


def found_share(rows=None, **approximate) -> float:
    """The share of rows (or of these) that are the first answer for their own vector."""
    rows = rows if rows is not None else list(Streamed.objects.values_list("pk", "embedding"))
    search = Streamed.objects.approximate(**approximate)
    return sum(search.order_by(L2Distance("embedding", v)).first().pk == pk for pk, v in rows) / len(rows)


def all_found(rows=None, **approximate) -> bool:
    """Every row (or these) is the first answer when searching for its own vector."""
    return found_share(rows, **approximate) == 1.0


def top10(queries):
    return [[p.pk for p in Streamed.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]


def exact10(queries):
    return [[p.pk for p in Streamed.objects.order_by(L2Distance("embedding", q)).exact()[:10]] for q in queries]


@pytest.fixture
def small(db):
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)


def crowd_one_head(count=150, seed=9):
    """Insert vectors right on top of one head, so that its list overflows."""
    storage, state = runtime(declared(), "default").open()
    head = runtime(declared(), "default").current(storage, state)
    target = min(head.alive)
    centre = head.vectors(np.array([target]))[0]
    noise = np.random.default_rng(seed).normal(scale=0.05, size=(count, 16)).astype(np.float32)
    Streamed.objects.bulk_create(Streamed(embedding=centre + n) for n in noise)
    return target


# The jobs, one by one ---------------------------------------------------------------


def test_split_replaces_an_oversized_list_with_balanced_ones(small):
    target = crowd_one_head()
    assert sizes()[target] > 64
    outcome = maintenance.split(declared(), target)
    assert "into" in outcome.detail and outcome.follow_up[0][0] == "reassign"
    assert not Head.objects.get(pk=target).alive
    assert Posting.objects.filter(head_id=target).exists()  # kept for the grace period
    now = sizes()
    children = outcome.follow_up[0][1]["new_head_ids"]
    assert target not in now and len(children) >= 2
    assert all(now[h] <= 64 for h in children)
    assert WalEntry.objects.filter(op=WalEntry.Op.REMOVE, head_id=target).exists()
    assert maintenance.split(declared(), target).detail.endswith("retired already")  # idempotent
    name, arguments = outcome.follow_up[0]
    maintenance.run(name, declared(), **arguments)
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()


def test_split_heads_are_vectors_of_the_list_not_centroids(small):
    target = crowd_one_head(200, seed=3)
    entries = runtime(declared(), "default").open()[0].read_postings([target])
    children = maintenance.split(declared(), target).follow_up[0][1]["new_head_ids"]
    storage, _ = runtime(declared(), "default").open()
    owners, placed = storage.read_postings_with_owners(children)
    assert sorted(set(placed["id"].tolist())) == sorted(set(entries["id"].tolist()))
    for child, vector in zip(children, storage.head_vectors(children)):
        # Each new head is one of the vectors its own list holds.
        assert (storage.payload.vectors(placed[owners == child]) == vector).all(axis=1).any()


def test_probes_of_every_alive_head_after_a_split_give_the_exact_answer(small, monkeypatch):
    """approximate(probes=N) with N at or past the alive heads reads every list
    (no ε cut-off), also where hnswlib, holding retired heads, cannot return
    that many; one fewer is a normal approximate query."""
    outcome = maintenance.split(declared(), crowd_one_head())
    name, arguments = outcome.follow_up[0]
    maintenance.run(name, declared(), **arguments)
    # A merge retires a head and adds none: its element stays in hnswlib's
    # graph (the split's new heads took the slot of the one it retired).
    smallest = min(sizes(), key=sizes().get)
    storage, _ = runtime(declared(), "default").open()
    Streamed.objects.filter(pk__in=storage.read_postings([smallest])["id"].tolist()[1:]).delete()
    assert "moved" in maintenance.merge(declared(), smallest).detail
    rt = runtime(declared(), "default")
    head = rt.current(*rt.open())
    assert len(head.labels()) > len(head)  # the retired head is still in hnswlib's graph
    alive = len(head)
    # Heads' own vectors: the (1 + ε) rule keeps only the head itself. Not the
    # split's: in the crowd its rows are nearer each other than the int8
    # payload's estimates can rank, a matter of rerank, not of probing.
    queries = head.vectors(np.array(sorted(head.alive - set(arguments["new_head_ids"]))))

    def answers(probes):
        search = Streamed.objects.approximate(probes=probes)
        return [[p.pk for p in search.order_by(L2Distance("embedding", q))[:10]] for q in queries]

    truth = [[p.pk for p in Streamed.objects.exact().order_by(L2Distance("embedding", q))[:10]] for q in queries]
    for refusing in (False, True):
        if refusing:
            monkeypatch.setattr(head, "_index", RefusingSearches(head._index))
        for probes in (alive, alive + 1, 10**4):
            assert answers(probes) == truth, (refusing, probes)
        fewer = answers(alive - 1)
        assert all(len(rows) == 10 for rows in fewer) and recall(fewer, truth) >= 0.7
    assert rt.current(*rt.open()) is head  # the searches above were all on the refusing copy


@pytest.mark.django_db(transaction=True)
def test_a_list_of_one_repeated_vector_is_split_inline_and_stops():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(200, seed=5))
    build(INDEX)
    Streamed.objects.bulk_create(Streamed(embedding=np.full(16, 0.5, dtype=np.float32)) for _ in range(300))
    assert max(sizes().values()) <= 64
    assert "streamed_embedding: ok" in check(INDEX)
    assert all(name != "split" for name, _ in maintenance.scan(declared()))


def test_a_list_of_mostly_stale_entries_is_cleaned_not_split(small):
    target = crowd_one_head(100)
    Streamed.objects.filter(pk__in=list(Streamed.objects.order_by("-pk").values_list("pk", flat=True)[:90])).delete()
    outcome = maintenance.split(declared(), target)
    assert "within the limit after dropping" in outcome.detail
    assert Head.objects.get(pk=target).alive and sizes()[target] <= 64
    assert "streamed_embedding: ok" in check(INDEX)


def test_merge_and_defragment(small):
    storage, _ = runtime(declared(), "default").open()
    smallest = min(sizes(), key=sizes().get)
    members = [pk for pk, in Streamed.objects.values_list("pk")]
    # Empty that list by deleting its vectors, then merge it away.
    entries = storage.read_postings([smallest])
    Streamed.objects.filter(pk__in=entries["id"].tolist()[1:]).delete()
    outcome = maintenance.merge(declared(), smallest)
    assert "moved to other heads" in outcome.detail and not Head.objects.get(pk=smallest).alive
    assert "streamed_embedding: ok" in check(INDEX)
    # Many single-row saves make a list of many rows; defragment packs it.
    target = crowd_one_head(0)
    centre = runtime(declared(), "default").current(*runtime(declared(), "default").open()).vectors(np.array([target]))[0]
    for i in range(12):
        Streamed.objects.create(embedding=centre + 0.01 * (i + 1))  # not the head row's own vector
    rows_before = Posting.objects.filter(head_id=target).count()
    assert rows_before > 8
    # Asked for by a trigger whose threshold the list does not pass: left alone.
    outcome = maintenance.defragment(declared(), target, above_rows=rows_before)
    assert outcome.detail == f"head {target}: {rows_before} rows, packed already"
    assert Posting.objects.filter(head_id=target).count() == rows_before
    maintenance.defragment(declared(), target, above_rows=8)
    assert Posting.objects.filter(head_id=target).count() == 1
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()
    del members


def test_defragment_of_a_list_over_the_limit_asks_for_its_split(small, settings):
    settings.VECTORINDEX = {"JOBS": "manual"}  # the split the crossing asked for is lost
    target = crowd_one_head(100)
    outcome = maintenance.defragment(declared(), target)
    assert sizes()[target] > 64
    assert outcome.follow_up == [("split", {"head_id": target})]
    assert maintenance.defragment(declared(), min(h for h in sizes() if h != target)).follow_up == []


def test_scan_maintain_compact_and_collect(small, settings):
    settings.VECTORINDEX = {"WAL_SNAPSHOT_ENTRIES": 5, "RETIRED_GRACE": 0}
    crowd_one_head(300)
    jobs = {name for name, _ in maintenance.scan(declared())}
    assert "split" in jobs
    out = io.StringIO()
    call_command("vectorindex", "maintain", INDEX, stdout=out)
    assert "split" in out.getvalue()
    assert maintenance.scan(declared()) == []
    assert max(sizes().values()) <= 64
    assert "compact" in out.getvalue()
    assert WalEntry.objects.count() < 5  # what the last jobs logged since, below the threshold
    assert Snapshot.objects.latest().lsn > 0
    assert not Head.objects.filter(alive=False).exists()  # collected
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()


def test_a_lost_reassign_is_found_by_the_scan_and_its_head_kept_until_it_runs(small, settings):
    settings.VECTORINDEX = {"JOBS": "manual", "RETIRED_GRACE": 0}
    target = crowd_one_head()
    outcome = maintenance.split(declared(), target)  # its follow-up, the reassign, is never sent
    [(job, arguments)] = outcome.follow_up
    assert Head.objects.get(pk=target).split_into == arguments["new_head_ids"]
    found = maintenance.scan(declared())
    assert (job, arguments) == ("reassign", {"head_id": target, "new_head_ids": arguments["new_head_ids"]})
    assert (job, arguments) in found
    assert ("collect", {}) not in found  # the retired head stays until its reassign has run
    settings.VECTORINDEX = {"JOBS": "manual"}  # with the grace period, a reassign may still be queued
    assert (job, arguments) not in maintenance.scan(declared())
    assert (job, arguments) in maintenance.scan(declared(), lost_after=0)
    out = io.StringIO()
    call_command("vectorindex", "maintain", INDEX, verbosity=2, stdout=out)
    # It ran (whether or not it moved a vector: that depends on the split's random sample).
    assert "  reassign: " in out.getvalue(), out.getvalue()
    assert Head.objects.get(pk=target).split_into is None
    assert not any(name == "reassign" for name, _ in maintenance.scan(declared(), lost_after=0))
    assert "streamed_embedding: ok" in check(INDEX)


def status():
    out = io.StringIO()
    call_command("vectorindex", "status", INDEX, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_deleting_half_the_rows_leaves_no_garbage_once_maintained(db, settings):
    settings.VECTORINDEX = {"JOBS": "manual", "RETIRED_GRACE": 0}
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(2000, seed=7))
    build(INDEX)
    built = status()
    per_vector = built["posting_entries"] / built["vectors"]
    pks = list(Streamed.objects.values_list("pk", flat=True))
    gone = set(np.random.default_rng(7).choice(pks, size=1000, replace=False).tolist())
    Streamed.objects.filter(pk__in=gone).delete()
    assert ("sweep", {}) in maintenance.scan(declared())
    out = io.StringIO()
    call_command("vectorindex", "maintain", INDEX, stdout=out)
    assert "sweep" in out.getvalue()
    after = status()
    assert after["vectors"] == 1000 and after["deleted_versions"] == 0
    assert after["posting_entries"] <= 1000 * per_vector * 1.1, (after["posting_entries"], per_vector)
    assert maintenance.scan(declared()) == []  # and nothing left to do
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()
    # A deleted vector's primary key used again starts at version 1: no entry
    # of the old vector is left to pass for it.
    [reused] = sorted(gone)[:1]
    old = clustered(2000, seed=7)[pks.index(reused)]
    Streamed.objects.create(pk=reused, embedding=old + 30)
    assert Version.objects.get(vector_id=reused).version == 1
    assert Streamed.objects.order_by(L2Distance("embedding", old + 30)).first().pk == reused
    nearest = Streamed.objects.approximate(probes=10_000, epsilon=1e9).order_by(L2Distance("embedding", old)).first()
    assert nearest.pk != reused


def test_the_scan_asks_for_a_sweep_once_a_tenth_of_the_live_vectors_were_deleted(db, settings, monkeypatch):
    """SWEEP_SHARE of the live vectors, SWEEP_MIN at least; the live ones are
    counted only as far as that answer needs."""
    from vectorindex.storage import Storage

    settings.VECTORINDEX = {"JOBS": "manual"}
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(1000, seed=4))
    build(INDEX)
    pks = list(Streamed.objects.order_by("pk").values_list("pk", flat=True))
    counted_up_to = []
    live_count = Storage.live_count

    def counting(self, at_most):
        counted_up_to.append(at_most)
        return live_count(self, at_most)

    monkeypatch.setattr(Storage, "live_count", counting)

    def due(deleted):
        Streamed.objects.filter(pk__in=pks[:deleted]).delete()
        return ("sweep", {}) in maintenance.scan(declared())

    assert not due(63) and counted_up_to == []  # under SWEEP_MIN: nothing else is read
    assert not due(90)  # 90 < 0.1 × 910
    assert counted_up_to == [902]  # 10 × 90, and 2 for the division: fewer than the 910 live
    assert due(91)  # 91 ≥ 0.1 × 909
    IndexState.objects.filter(name=INDEX).update(swept_deleted=40)  # left by the last sweep
    assert not due(91)


def test_a_sweep_keeps_the_version_rows_entries_still_name(small, settings):
    settings.VECTORINDEX = {"JOBS": "manual"}
    victims = list(Streamed.objects.order_by("pk").values_list("pk", flat=True)[:100])
    Streamed.objects.filter(pk__in=victims).delete()
    storage, _state = runtime(declared(), "default").open()
    busy = int(storage.read_postings_with_owners(sorted(storage.alive_head_ids()))[0][0])
    # A list the sweep cannot lock keeps its dead entries, and their vectors their version rows.
    original = storage.lock_head

    def lock_head(self, head_id, skip_locked=False):
        return None if head_id == busy else original(head_id, skip_locked)

    from vectorindex.storage import Storage

    Storage.lock_head, saved = lock_head, Storage.lock_head
    try:
        outcome = maintenance.sweep(declared())
    finally:
        Storage.lock_head = saved
    named = set(storage.read_postings([busy])["id"].tolist()) & set(victims)
    assert named and f"{len(named)} still named" in outcome.detail
    assert set(Version.objects.filter(deleted=True).values_list("vector_id", flat=True)) == named
    assert ("sweep", {}) not in maintenance.scan(declared())  # those do not ask for another sweep
    assert "sweep" in maintenance.sweep(declared()).job
    assert not Version.objects.filter(deleted=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_deleted_vector_saved_again_while_the_sweep_reads_the_lists_keeps_its_version_row(settings, monkeypatch):
    """A save of a deleted vector's key does not wait for the sweep's read of
    every list; the sweep, which found no entry of it there, then leaves its
    row: the save wrote entries the sweep did not read."""
    from vectorindex.storage import Storage
    from vectorindex.storage.backends import lock_timeout

    settings.VECTORINDEX = {"JOBS": "manual"}
    vectors = clustered(600, seed=4)
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in vectors)
    build(INDEX)
    pks = list(Streamed.objects.order_by("pk").values_list("pk", flat=True))
    Streamed.objects.filter(pk__in=pks[:100]).delete()
    back, again = pks[0], pks[1]  # saved again; saved again and deleted
    read = Storage.referenced_ids
    saved = []

    def save() -> None:
        try:
            with lock_timeout(connections["default"], 3):
                Streamed.objects.create(pk=back, embedding=vectors[0] + 30)
                Streamed.objects.create(pk=again, embedding=vectors[1] + 30)
                Streamed.objects.filter(pk=again).delete()
            saved.append(True)
        finally:
            connections.close_all()

    def referenced_ids(self):
        named = read(self)
        thread = threading.Thread(target=save)
        thread.start()
        thread.join(60)
        return named

    monkeypatch.setattr(Storage, "referenced_ids", referenced_ids)
    outcome = maintenance.sweep(declared())
    monkeypatch.undo()
    assert saved, "the save waited for the sweep"
    assert "98 version rows of deleted vectors removed" in outcome.detail, outcome.detail
    assert Version.objects.get(vector_id=back).version == 2
    assert Version.objects.filter(vector_id=again, deleted=True, version=2).exists()
    assert not Version.objects.filter(vector_id__in=pks[2:100]).exists()
    assert Streamed.objects.order_by(L2Distance("embedding", vectors[0] + 30)).first().pk == back
    assert "streamed_embedding: ok" in check(INDEX)


@pytest.mark.django_db(transaction=True)
def test_a_write_to_a_list_the_sweep_rewrote_does_not_wait_for_the_rest_of_the_sweep(settings, monkeypatch):
    """Lists are rewritten in short transactions (here one list each): while
    the sweep is about to rewrite its second list, a write to the first one
    goes through (on SQLite too, where a transaction that writes holds the
    whole database)."""
    from contextlib import contextmanager

    from vectorindex.storage import Storage
    from vectorindex.storage.backends import lock_timeout

    settings.VECTORINDEX = {"JOBS": "manual"}
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)
    Streamed.objects.filter(pk__in=list(Streamed.objects.order_by("pk").values_list("pk", flat=True)[:200])).delete()
    locked, transactions, paused, go = [], [], threading.Event(), threading.Event()
    lock_head, job_transaction = Storage.lock_head, sweeping.job_transaction

    def recording(self, head_id, skip_locked=False):
        locked.append(head_id)
        return lock_head(self, head_id, skip_locked)

    @contextmanager
    def pausing(using):
        transactions.append(using)
        if len(transactions) == 2:  # the first list is rewritten
            paused.set()
            go.wait(60)
        with job_transaction(using):
            yield

    monkeypatch.setattr(sweeping, "SWEEP_HOLD", 0)
    monkeypatch.setattr(Storage, "lock_head", recording)
    monkeypatch.setattr(sweeping, "job_transaction", pausing)
    outcome = []

    def sweep() -> None:
        try:
            outcome.append(maintenance.sweep(declared()))
        finally:
            connections.close_all()

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        assert paused.wait(60)
        storage, _state = runtime(declared(), "default").open()
        owners, entries = storage.read_postings_with_owners(sorted(storage.alive_head_ids()))
        to_rewrite = set(owners[~lists.current(storage, entries)].tolist())
        vector = storage.head_vector(locked[0]) + 0.01
        with lock_timeout(connections["default"], 2):
            written = Streamed.objects.create(embedding=vector)
    finally:
        go.set()
        sweeper.join(60)
    assert to_rewrite and locked[0] not in to_rewrite, (locked, to_rewrite)  # one list done, others to do
    assert outcome and "lists rewritten" in outcome[0].detail
    assert Streamed.objects.order_by(L2Distance("embedding", vector)).first().pk == written.pk
    assert "streamed_embedding: ok" in check(INDEX)


def test_a_collect_leaves_the_next_sweep_to_the_deletes_since_the_last(small, settings):
    """A collect removes version rows that nothing names any more; the deletes
    since the last sweep, still named by alive lists, still ask for a sweep."""
    settings.VECTORINDEX = {"JOBS": "manual", "RETIRED_GRACE": 0}
    IndexState.objects.filter(name=INDEX).update(swept_deleted=3)  # as a sweep that had to leave 3
    live = Streamed.objects.count()
    victims = list(Streamed.objects.order_by("pk").values_list("pk", flat=True)[: max(64, live // 5)])
    Streamed.objects.filter(pk__in=victims).delete()
    assert ("sweep", {}) in maintenance.scan(declared())
    target = crowd_one_head()
    [(job, arguments)] = maintenance.split(declared(), target).follow_up
    maintenance.reassign(declared(), **arguments)
    assert "1 retired head deleted" in maintenance.collect(declared()).detail
    assert IndexState.objects.get(name=INDEX).swept_deleted <= 3
    assert ("sweep", {}) in maintenance.scan(declared())
    maintenance.sweep(declared())
    assert ("sweep", {}) not in maintenance.scan(declared())
    assert not Version.objects.filter(deleted=True).exists()


# Triggers and inline jobs -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_write_that_overflows_a_list_triggers_a_split_inline():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)
    before = sizes()  # a build does not split: some lists may start over the limit
    with transaction.atomic():
        target = crowd_one_head()
        assert Head.objects.get(pk=target).alive  # nothing runs before the commit
    assert not Head.objects.get(pk=target).alive
    # No list grew past the limit: every one that crossed it was split.
    assert all(size <= max(64, before.get(head, 0)) for head, size in sizes().items())
    assert "streamed_embedding: ok" in check(INDEX)


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_write_triggers_nothing():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)  # lists the build left over the limit are split as it commits
    retired = Head.objects.filter(alive=False).count()
    with pytest.raises(RuntimeError), transaction.atomic():
        crowd_one_head()
        raise RuntimeError
    assert Head.objects.filter(alive=False).count() == retired


@pytest.mark.django_db(transaction=True)
def test_stream_of_inserts_and_deletes_keeps_recall_flat():
    """Build on 10 %, insert the other 90 % in small transactions while deleting
    20 % of all rows, with maintenance running inline; compare with a fresh build."""
    vectors = clustered(4000, seed=12)
    rng = np.random.default_rng(12)
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in vectors[:400])
    build(INDEX)
    alive = list(Streamed.objects.values_list("pk", flat=True))
    for start in range(400, 4000, 40):
        with transaction.atomic():
            alive += [s.pk for s in Streamed.objects.bulk_create(Streamed(embedding=v) for v in vectors[start : start + 40])]
        victims = set(rng.choice(alive, size=9, replace=False).tolist())  # 90 × 9 ≈ 20 % of 4,000
        Streamed.objects.filter(pk__in=victims).delete()
        alive = [pk for pk in alive if pk not in victims]
    call_command("vectorindex", "maintain", INDEX, stdout=io.StringIO())
    assert max(sizes().values()) <= 64
    assert "streamed_embedding: ok" in check(INDEX)
    queries = clustered(100, seed=13)
    truth = exact10(queries)
    streamed = recall(top10(queries), truth)
    build(INDEX)
    fresh = recall(top10(queries), truth)
    assert streamed >= fresh - 0.02, (streamed, fresh)


# Crashes ---------------------------------------------------------------------------------


def misplaced_in_a_neighbour(old_head, new_head):
    """A row at a split's new head whose only entry is in a list beside the old head: its reassign moves it."""
    rt = runtime(declared(), "default")
    storage, state = rt.open()
    head = rt.current(storage, state)
    vector = storage.head_vector(new_head)
    nearby = head.search(storage.head_vector(old_head), 9)[0][0].tolist()
    beside = next(h for h in nearby if h not in (old_head, new_head) and h in head.alive and h != new_head)
    row = Streamed.objects.create(embedding=vector)
    version = storage.next_versions([row.pk])  # the entries its save wrote are stale now
    ((count, data),) = storage.payload.pack(np.array([row.pk]), version, vector[None, :])
    storage.append([(beside, count, data)])

STEPS = [
    "split:locked", "split:heads", "split:postings", "merge:retired", "merge:appended", "defragment:rewritten",
    "reassign:versions", "reassign:appended", "sweep:rewritten", "sweep:batch",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("step", STEPS)
def test_a_job_killed_at_any_step_can_run_again(step, settings):
    settings.VECTORINDEX = {"JOBS": "manual"}  # the job under test runs only when the test says
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)
    target = crowd_one_head()
    queries = clustered(30, seed=21)
    before = recall(top10(queries), exact10(queries))
    job = step.split(":")[0]
    if job == "merge":  # make a small list to merge
        target = min(sizes(), key=sizes().get)
        storage, _ = runtime(declared(), "default").open()
        Streamed.objects.filter(pk__in=storage.read_postings([target])["id"].tolist()[1:]).delete()
    if job == "defragment":
        centre = runtime(declared(), "default").current(*runtime(declared(), "default").open()).vectors(np.array([target]))[0]
        for i in range(3):
            Streamed.objects.create(embedding=centre + 0.01 * (i + 1))  # not the head row's own vector
    arguments = [str(target)]
    if job == "sweep":  # deleted rows' entries to drop
        Streamed.objects.filter(pk__in=list(Streamed.objects.order_by("pk").values_list("pk", flat=True)[:200])).delete()
        arguments = []
    if job == "reassign":  # a split first, committed; the reassign that follows is killed
        outcome = maintenance.split(declared(), target)
        new_heads = outcome.follow_up[0][1]["new_head_ids"]
        arguments = [str(target), ",".join(str(h) for h in new_heads)]
        misplaced_in_a_neighbour(target, new_heads[0])
    process = worker("job", job, INDEX, *arguments, fault=step)
    process.wait(60)
    assert process.returncode == -9, process.stderr.read()
    if job == "reassign":  # the scan finds the killed reassign's work
        assert ("reassign", {"head_id": target, "new_head_ids": [int(h) for h in arguments[1].split(",")]}) in (
            maintenance.scan(declared(), lost_after=0)
        )
    report = run_worker("job", job, INDEX, *arguments)  # again, to the end
    assert report["detail"]
    assert not Head.objects.filter(split_into__isnull=False).exists() or job != "reassign"
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()
    assert recall(top10(queries), exact10(queries)) >= before - 0.02


# Concurrency -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_inserts_from_threads_while_splits_run():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(300, seed=4))
    build(INDEX)
    inserted: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(3)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def insert(slot: int) -> None:
        try:
            for batch in range(15):
                vectors = clustered(20, seed=100 * slot + batch)
                with transaction.atomic():
                    made = [Streamed.objects.create(embedding=v) for v in vectors]
                inserted[slot].extend((m.pk, v) for m, v in zip(made, vectors))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    def maintain() -> None:
        try:
            while not stop.is_set():
                maintenance.maintain(declared(), rounds=2)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(3)]
    maintainer = threading.Thread(target=maintain)
    maintainer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    maintainer.join()
    import traceback

    assert errors == [], "".join(traceback.format_exception(errors[0]))
    assert Head.objects.filter(alive=False).exists()  # splits did run meanwhile
    assert "streamed_embedding: ok" in check(INDEX)
    rows = [row for slot in inserted for row in slot]
    assert len(rows) == 900
    # No row is lost: with every list read, each is the first answer for its
    # own vector. With the default probes nearly all are: a split that ran
    # beside the inserts may leave a row only in a list that the probe's
    # distance cut-off skips for it, until a reassign or a later split moves
    # it (seen twice in many CI runs; recall is approximate, not this).
    assert all_found(rows, probes=10_000, epsilon=1e9)
    assert found_share(rows) >= 0.99


def test_a_reassign_does_not_move_a_vector_away_from_a_head_the_search_missed(small, settings, monkeypatch):
    settings.VECTORINDEX = {"JOBS": "manual"}
    outcome = maintenance.split(declared(), crowd_one_head())
    [(_name, arguments)] = outcome.follow_up
    rt = runtime(declared(), "default")
    head = rt.current(*rt.open())
    search = head.search

    def missing_the_nearest(queries, k, ef=None):
        if k != 1:
            return search(queries, k, ef)
        labels, distances = search(queries, len(head), ef=len(head) * 2)
        return labels[:, -1:], distances[:, -1:]  # the farthest head, as a worn graph might answer

    monkeypatch.setattr(head, "search", missing_the_nearest)
    assert maintenance.reassign(declared(), **arguments).detail == "no vector changed its nearest head"
    monkeypatch.undo()
    assert "streamed_embedding: ok" in check(INDEX)
