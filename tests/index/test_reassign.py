"""Reassign (vectorindex.index.maintenance.reassignment): after a split, the vectors whose nearest head changed move."""

import io

import numpy as np
from django.core.management import call_command

from tests.index.streamed import INDEX, crowd_one_head, declared
from tests.indexing import check
from vectorindex.index import maintenance
from vectorindex.index.runtime import runtime
from vectorindex.models import Head


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


def test_a_vector_in_a_neighbouring_list_that_is_nearest_a_new_head_moves_there(small, settings, monkeypatch):
    """The reassign's own case: a vector that only a farther head's list holds moves to the new head it is nearest."""
    from tests.index.test_writes import entry_owners
    from tests.testapp.models import Streamed
    from vectorindex.engine import routing

    settings.VECTORINDEX = {"JOBS": "manual"}
    rt = runtime(declared(), "default")
    storage, _state = rt.open()
    far, near = sorted(storage.alive_head_ids())[:2]
    [near_vector] = storage.head_vectors([near])
    real_assign = routing.assign

    def only_far(head, vectors, **kwargs):
        members, _owners = real_assign(head, vectors, **kwargs)
        rows = np.unique(members)
        return rows, np.full(len(rows), far, dtype=np.int64)  # every vector to the one list, as if routed long ago

    monkeypatch.setattr(routing, "assign", only_far)
    misplaced = Streamed.objects.create(embedding=near_vector + np.float32(1e-3))
    monkeypatch.undo()
    assert set(entry_owners(storage, misplaced.pk)) == {far}

    outcome = maintenance.reassign(declared(), head_id=far, new_head_ids=[near])
    assert outcome.detail.startswith("moved "), outcome.detail
    assert not outcome.detail.startswith("moved 0 "), outcome.detail
    owners = entry_owners(storage, misplaced.pk)
    assert 2 in owners.get(near, set()), owners  # moved, with a new version
    assert "streamed_embedding: ok" in check(INDEX)
