"""Reassign: after a split, move the vectors whose nearest head changed (SPFresh's filter)."""

from __future__ import annotations

import math

import numpy as np

from ...engine.head import prepare
from ...engine.partition import REASSIGN_NEIGHBOURS, head_distance
from ...storage import StateRow, Storage, job_transaction
from ...wording import counted
from ..jobs import Outcome, runner
from ..registry import Declared
from ..runtime import Runtime, open_index
from . import lists
from .steps import NOT_READY, fault

# The search breadth a reassign looks for each candidate's nearest head with:
# routing's own (engine.routing.assign).
REASSIGN_EF = 64
# How much nearer a head found must be than the heads that hold a vector for
# the vector to move: hnswlib measures in float32 and this job in float64, so
# the same head's two distances differ by rounding.
ROUNDING = 1e-6


@runner("reassign")
def reassign(declared: Declared, head_id: int, new_head_ids: list[int], using: str = "default") -> Outcome:
    """After a split, move the vectors whose nearest head changed (SPFresh's filter).

    Candidates are the vectors of the new lists that are farther from their new
    head than from the old one, and the vectors of the old head's neighbouring
    lists that are nearer to a new head than to their own. A candidate moves only
    if its nearest head's list does not hold it already (a replica is not
    misplaced for being a replica); a moved vector gets a new version and is
    routed again, replicas and all. The same transaction notes on the old head
    that its reassign has run (until then the scan finds it, if this job is lost).
    """
    with job_transaction(using):
        opened = open_index(declared, using)
        if not opened.ready:
            return Outcome("reassign", NOT_READY)
        rt, storage, state = opened
        outcome = _reassign(declared, head_id, new_head_ids, using, rt, storage, state)
        storage.reassigned(head_id)
    return outcome


def _reassign(
    declared: Declared, head_id: int, new_head_ids: list[int], using: str, rt: Runtime, storage: Storage, state: StateRow
) -> Outcome:
    metric = declared.metric
    head = rt.current(storage, state)
    new_ids = [h for h in new_head_ids if h in head.alive]
    old = storage.head_vector(head_id)
    if not new_ids or old is None:
        return Outcome("reassign", "nothing to do: the split's heads are gone")
    new_vectors = prepare(storage.head_vectors(new_ids), metric)
    # Nearby lists: the heads nearest to the old head and to each new one.
    nearby = head.search(np.vstack([prepare(old[None, :], metric), new_vectors]), REASSIGN_NEIGHBOURS)[0]
    neighbours = sorted({int(h) for h in nearby.ravel()} - set(new_ids))
    owners_all, entries_all = storage.read_postings_with_owners(new_ids + neighbours)
    if not len(entries_all):
        return Outcome("reassign", "nothing to do: empty lists")
    live_mask = lists.current(storage, entries_all)
    owners_all, entries_all = owners_all[live_mask], entries_all[live_mask]
    vectors = storage.payload.vectors(entries_all)
    own = np.array([np.nan] * len(entries_all))
    owner_ids = sorted(set(owners_all.tolist()))
    owner_vectors = dict(zip(owner_ids, storage.head_vectors(owner_ids)))
    for h in owner_ids:
        mask = owners_all == h
        own[mask] = head_distance(metric, vectors[mask], owner_vectors[h])[:, 0]
    to_old = head_distance(metric, vectors, prepare(old[None, :], metric))[:, 0]
    to_new = head_distance(metric, vectors, new_vectors).min(axis=1)
    in_new = np.isin(owners_all, new_ids)
    candidate = (in_new & (own > to_old)) | (~in_new & (to_new < own))
    if not candidate.any():
        return Outcome("reassign", "no vector changed its nearest head")
    found, found_distance = head.search(vectors[candidate], 1, ef=REASSIGN_EF)
    best, nearer = found[:, 0], found_distance[:, 0]
    # A vector its nearest head's list holds already stays where it is, and
    # one from a neighbouring list moves only to a new head: its nearest
    # head may be a list not read here, which holds it. Nor does a vector
    # move unless the head found is nearer than every head here that holds
    # it: the graph search can miss a head (one equal to the vector, say),
    # and moving away from it would leave the vector where no query for it
    # looks.
    held = set(zip(entries_all["id"].tolist(), owners_all.tolist()))
    holding: dict[int, float] = {}
    for vector_id, distance in zip(entries_all["id"].tolist(), own.tolist()):
        holding[vector_id] = min(holding.get(vector_id, math.inf), distance)
    moves = np.array(
        [(int(i), int(b)) not in held and (new or int(b) in new_ids) and d < holding[int(i)] - ROUNDING
         for i, b, new, d in zip(entries_all["id"][candidate], best, in_new[candidate], nearer.tolist())],
        dtype=bool,
    )
    moving = entries_all[candidate][moves]
    if not len(moving):
        return Outcome("reassign", "no vector changed its nearest head")
    # Only vectors still at the version read, and not deleted, may move: a
    # user's update since then has appended the newer vector itself. A row
    # another transaction holds is not in the answer: it is being written.
    locked = storage.lock_versions(moving["id"].tolist())
    still = np.array([locked.get(int(i)) == (int(v), False) for i, v in zip(moving["id"], moving["version"])], bool)
    moving = moving[still]
    _, first = np.unique(moving["id"], return_index=True)
    moving = moving[first]
    storage.bump_versions(moving["id"].tolist())
    fault("reassign", "versions")
    lists.route_and_append(rt, storage, moving, moving["version"] + 1, using)
    fault("reassign", "appended")
    return Outcome("reassign", f"moved {counted(len(moving), 'vector')} after splitting head {head_id}")
