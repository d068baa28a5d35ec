"""Sweep (vectorindex.index.maintenance.sweeping): dead entries leave every list, deleted vectors' version rows go."""

import io
import threading

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connections

from tests.index.streamed import INDEX, all_found, crowd_one_head, declared, status
from tests.indexing import build, check, clustered
from tests.testapp.models import Streamed
from vectorindex import L2Distance
from vectorindex.index import maintenance
from vectorindex.index.maintenance import lists, sweeping
from vectorindex.index.runtime import runtime
from vectorindex.models import IndexState, Version


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
