"""Calibrating how many lists a query reads, for the index's recall target (``VectorIndex(recall=…)``).

A build calibrates once it commits; the maintenance scan asks again when the
number of alive heads has changed by ``RECALIBRATE_SHARE`` since (the index
grew, shrank or churned: splits and merges follow the data), or when the
calibration is of another build.

1. A sample of ``CALIBRATION_QUERIES`` live vectors (seeded by the build's generation) is
   read, and the exact ``K`` nearest rows of each, excluding itself, are
   found by one streamed pass over the model's table.
2. Each sample query ranks the heads as a search does, and the lists of its
   nearest heads are read (only the sample's neighbours are kept from them):
   the curve says, for each number of probes, the share of neighbours a
   search that reads that many lists can find (:mod:`vectorindex.engine.calibration`).
3. The fewest probes whose share meets the target are checked with real
   queries through the ORM; while their recall falls short (the estimates
   and the re-rank lose a little), more probes are tried. The probes found,
   the recall measured and the curve go into the state row; queries read them
   with the state row they read anyway.

The pass reads every row of the table and many lists: it is a maintenance
job (Celery's, or inline after a build and after the scan), never a query's.
"""

from __future__ import annotations

import math

import numpy as np
from django.utils import timezone

from ...conf import vectorindex_settings
from ...engine import routing
from ...engine.calibration import (
    Calibration,
    K,
    Neighbours,
    as_near,
    curve,
    first_reach,
    ladder,
)
from ...storage import Storage
from ...wording import counted
from ..jobs import Outcome, runner
from ..registry import Declared
from ..rows import Progress, model_vectors, stream_vectors
from ..runtime import open_index

# The curve is followed up to this share, or the target if higher, so that
# `.approximate(recall=…)` has a point for the recalls asked for most.
CURVE_TOP = 0.99
# Rankings are this deep at first and four times deeper each round the curve
# has not reached its top; a round reads only the lists it adds.
FIRST_DEPTH = 64
DEPTH_GROWTH = 4
# Real queries short of the target: the next try reads this many times as many lists (one more at least).
PROBE_STEP = 1.25
# Tries at most, from the curve's point: 1.25⁸ ≈ 6 times its probes.
TRIES = 8
# Alive heads changed by this share since the calibration: the scan asks for another.
RECALIBRATE_SHARE = 0.2
# Heads whose lists are read at once.
LISTS_PER_READ = 200


@runner("calibrate")
def calibrate(declared: Declared, using: str = "default") -> Outcome:
    """Measure the probes that meet the index's recall target, and keep them in its state row."""
    found = calibration(declared, using)
    if found is None:
        return Outcome("calibrate", "not calibrated: the index is not ready, or CALIBRATION_QUERIES is 0")
    if not found.queries:
        return Outcome("calibrate", f"{counted(found.heads, 'head')}: every list is read")
    return Outcome("calibrate", found.describe())


def calibration(
    declared: Declared, using: str = "default", progress: Progress | None = None, *, queries: int | None = None
) -> Calibration | None:
    """Calibrate the index now on *queries* of its vectors (``CALIBRATION_QUERIES`` unless given).

    None when it is not ready, or calibration is off (0 queries).
    """
    queries = vectorindex_settings.CALIBRATION_QUERIES if queries is None else queries
    opened = open_index(declared, using)
    if not opened.ready or not queries:
        return None
    rt, storage, state = opened
    head = rt.current(storage, state)
    target = declared.options["recall"]
    live = _live(storage)
    ids = _sample(live, queries, state.generation)
    now = timezone.now().isoformat()
    if len(head) < 2 or len(ids) <= K:
        # Every list is read: recall is whatever the lists hold.
        every = max(len(head), 1)
        found = Calibration(target, every, 1.0, 0, len(live), len(head), state.generation, 1.0, [(every, 1.0)], now)
        _keep(storage, found)
        return found
    stored = model_vectors(declared, using, ids.tolist(), storage)
    ids = np.array([i for i in ids.tolist() if i in stored], dtype=np.int64)
    sample = np.stack([stored[i] for i in ids.tolist()])
    neighbours = Neighbours(declared.metric, sample, ids)
    for pks, vectors, _keys in stream_vectors(declared, using, storage):
        known = pks >= 0  # a keyed index's rows it does not know (yet): -1
        neighbours.add(pks[known], vectors[known])
    truth = neighbours.answers()

    points = _curve(storage, head, declared, sample, truth, max(target, CURVE_TOP))
    fewest = next((p for p, share in points if share >= target), points[-1][0])
    probes, recall = _verified(declared, using, sample, ids, neighbours, fewest, target, len(head), progress)
    found = Calibration(
        target, probes, recall, len(ids), len(live), len(head), state.generation, probes / fewest, points, now
    )
    _keep(storage, found)
    return found


def _live(storage: Storage) -> np.ndarray:
    """The ids of the index's live vectors, sorted."""
    return np.array(sorted(vid for vid, (_version, deleted) in storage.all_versions().items() if not deleted), np.int64)


def _sample(live: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Up to *count* of the *live* ids, the same for one build and one set of rows."""
    if len(live) <= count:
        return live
    return np.sort(np.random.default_rng(seed).choice(live, size=count, replace=False))


def _curve(storage: Storage, head, declared: Declared, sample: np.ndarray, truth: np.ndarray, top: float) -> list[tuple[int, float]]:
    """(probes, neighbours within reach) from 1 probe up to where *top* of them are, or every head."""
    epsilon = declared.options["probe_epsilon"]
    wanted = np.unique(truth[truth >= 0])
    holders: dict[int, set[int]] = {}
    depth = min(FIRST_DEPTH, len(head) - 1)
    while True:
        rankings, probed = routing.probe_many(head, sample, depth, epsilon)
        _read_holders(storage, np.unique(rankings).tolist(), wanted, holders)
        reached = first_reach(rankings, probed, holders, truth)
        points = curve(reached, truth, ladder(depth))
        if points[-1][1] >= top or depth >= len(head) - 1:
            break
        depth = min(depth * DEPTH_GROWTH, len(head) - 1)
    if points[-1][1] < top:
        points.append((len(head), 1.0))  # every list read: every current entry found
    return points


def _read_holders(storage: Storage, head_ids: list[int], wanted: np.ndarray, holders: dict[int, set[int]]) -> None:
    """Add to *holders* the heads of *head_ids* not read yet, each with the *wanted* ids its list holds current."""
    fresh = [h for h in head_ids if h not in holders]
    for start in range(0, len(fresh), LISTS_PER_READ):
        batch = fresh[start : start + LISTS_PER_READ]
        owners, entries = storage.read_postings_with_owners(batch)
        keep = np.isin(entries["id"], wanted)
        owners, found, versions = owners[keep], entries["id"][keep].astype(np.int64), entries["version"][keep]
        current = storage.current_versions(sorted(set(found.tolist())))
        for head_id in batch:
            holders[head_id] = set()
        for owner, vector_id, version in zip(owners.tolist(), found.tolist(), versions.tolist()):
            if current.get(vector_id) == version:
                holders[owner].add(vector_id)


def _verified(declared, using, sample, ids, neighbours, probes, target, heads, progress) -> tuple[int, float]:
    """(probes, recall): from *probes* up, the first whose real queries meet *target* (or every head's)."""
    recall = 0.0
    for _try in range(TRIES):
        recall = measure(declared, using, sample, ids, neighbours, probes, progress)
        if recall >= target or probes >= heads:
            break
        probes = min(heads, max(probes + 1, int(math.ceil(probes * PROBE_STEP))))
    return probes, recall


def measure(
    declared: Declared, using: str, sample: np.ndarray, ids: np.ndarray, neighbours: Neighbours, probes: int,
    progress: Progress | None = None,
) -> float:
    """recall@K of real queries (through the ORM, the index's own path) for the sample, each excluding itself.

    A row returned is right when it is as near as the K-th nearest (ties
    with it included: :class:`~vectorindex.engine.calibration.Neighbours`).
    """
    from ...expressions import DISTANCE_FOR
    from ...orm.queryset import VectorQuerySet

    distance = DISTANCE_FOR[declared.metric]
    rows = VectorQuerySet(declared.model, using=using).approximate(probes=probes)
    wanted = np.minimum((neighbours.answers() >= 0).sum(axis=1), K)
    kth = neighbours.kth()
    hits = 0
    for done, (vector, own) in enumerate(zip(sample, ids.tolist())):
        found = rows.annotate(vectorindex_distance=distance(declared.field.name, vector)).order_by("vectorindex_distance")
        nearest = [d for pk, d in found.values_list("pk", "vectorindex_distance")[: K + 1] if pk != own][:K]
        right = as_near(np.array([[np.inf if d is None else d for d in nearest]]), kth[done : done + 1])
        hits += min(int(right.sum()), int(wanted[done]))
        if progress:
            progress(f"calibrate (probes {probes})", done + 1, len(ids))
    total = int(wanted.sum())
    return hits / total if total else 1.0


def _keep(storage: Storage, found: Calibration) -> None:
    """Into the state row, unless a build has replaced the generation it measured."""
    storage.set_calibration(found.to_state(), found.generation)


def due(declared: Declared, found: Calibration | None, generation: int, alive: int) -> bool:
    """Does the scan ask for a calibration: none yet, of another build or target, or the heads changed by a share?"""
    if not vectorindex_settings.CALIBRATION_QUERIES:
        return False
    if found is None or found.generation != generation or found.target != declared.options["recall"]:
        return True
    return abs(alive - found.heads) > RECALIBRATE_SHARE * max(found.heads, 1)
