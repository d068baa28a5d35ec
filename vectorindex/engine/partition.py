"""Cutting one posting list into parts around new heads: LIRE's split, in numpy.

A split job (and a build, for the lists its sampled heads left over the limit)
hands the list's vectors here and gets back which of them head the new lists
and which list each vector goes to (:func:`partition`), then the boundary
vectors that each new list also keeps a copy of (:func:`replicate`). Plain
values in, arrays out: no database, no Django, no declaration.

Distances are the head index's own (:func:`head_distance`: squared L2, or
``1 − dot`` on unit vectors for cosine), so a part's head is the one the head
index finds nearest, as routing and queries will.
"""

from __future__ import annotations

import math

import numpy as np

from .head import prepare
from .headview import distances
from .kmeans import kmeans

# Lists around a split one whose vectors a new head may now be nearest to
# (SPFresh's reassign reads the lists of the old head's nearest heads): a
# reassign job reads these, and a build routes their vectors again when it
# splits a list. A handful: the lists farther off are the least likely to
# hold a vector that a new head is now nearest to.
REASSIGN_NEIGHBOURS = 8
# Candidate heads a bisection weighs besides 2-means' own two: points drawn at
# random. Every pair of candidates is tried (a pass over the list's distances
# each), so the cost grows with the square of this; the balancing tests
# (tests/engine/test_partition.py) find their pairs with this many.
BISECT_CANDIDATES = 32
# The least distance the closure rule scales ε by: a vector equal to its
# nearest head (distance 0) admits only heads as near, not every head.
TINY = 1e-12


def head_distance(metric: str, points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(points × centers) distances as the head index measures them (squared L2, or 1 − dot)."""
    return distances(metric, prepare(points, metric), prepare(np.atleast_2d(centers), metric))


def partition(
    points: np.ndarray, limit: int, metric: str, *, seed: int = 0, reach: float = math.inf, least: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(index of each new head among *points*, label per point): K ≥ 2 parts, none over *limit*.

    K is the size over half the limit, so a list that grew far past the limit
    splits into many at once. (Smaller parts were measured not to help: lists
    grow back to the limit before their next split; see BENCHMARKS.md.)

    The heads are vectors, not centroids: k-means' parts each give the member
    nearest their centroid, as SPANN does. A build samples its heads from the
    vectors; a centroid is nearer to everything around it than any vector is,
    so centroid heads among vector heads drew the neighbouring lists' vectors,
    and queries, to lists that did not hold them (BENCHMARKS.md, "Where
    recall was lost"). The heads are then balanced (:func:`_balance`): each
    is the nearest head of *least* (``merge_below``) to *limit* − *least*
    points. A part below *least* is merged straight back into its
    neighbours; a head nearest to more points than the limit has room for
    gets the others back from the split's reassign, and one that is full
    gets a merge's vectors: the list splits again, and did so for ever.
    Each point then goes to its nearest head that has room, the points
    nearest their heads first, but never to a head farther than
    ``(1 + reach)`` times its nearest one's distance (a query for the point
    would not probe that list). A part that comes out over the limit that
    way (a crowd around one head, the other heads far off) is partitioned
    again on its own, among heads of its own points.
    """
    heads, labels = _partition_once(points, limit, metric, seed=seed, reach=reach, least=least)
    sizes = np.bincount(labels, minlength=len(heads))
    for part in np.flatnonzero(sizes > limit).tolist():
        # Every head is its own point's nearest, so a part never holds all the points.
        members = np.flatnonzero(labels == part)
        inner_heads, inner_labels = partition(points[members], limit, metric, seed=seed + 1, reach=reach, least=least)
        labels[members] = np.where(inner_labels == 0, part, len(heads) + inner_labels - 1)
        heads[part] = members[inner_heads[0]]
        heads = np.concatenate([heads, members[inner_heads[1:]]])
    return heads, labels


def _partition_once(
    points: np.ndarray, limit: int, metric: str, *, seed: int, reach: float, least: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    parts = max(2, math.ceil(len(points) / (limit / 2)))
    if least:
        parts = max(2, min(parts, len(points) // least))
    centers, labels = kmeans(points, parts, seed=seed)
    heads = _nearest_members(metric, points, centers, labels)
    # Fewer distinct vectors than parts (copies of one vector): copies head the rest.
    spare = np.setdiff1d(np.arange(len(points)), heads)
    heads = np.concatenate([heads, spare[: max(0, parts - len(heads))]]).astype(np.int64)
    heads = _balance(points, heads, limit, metric, least=least, seed=seed)
    labels = _place(points, heads, limit, metric, reach)
    while least and len(heads) > 2:
        # A part balancing left too small (copies of one vector, which no
        # pair of heads parts) goes to the other heads, if they have room.
        sizes = np.bincount(labels, minlength=len(heads))
        smallest = int(sizes.argmin())
        if sizes[smallest] >= least:
            break
        fewer = np.delete(heads, smallest)
        placed = _place(points, fewer, limit, metric, reach)
        if np.bincount(placed, minlength=len(fewer)).max() > limit:
            break
        heads, labels = fewer, placed
    return heads, labels


def _nearest_members(metric: str, points: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per k-means part, its member nearest to its centroid."""
    heads = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        heads.append(members[np.argmin(head_distance(metric, points[members], centers[label])[:, 0])])
    return np.array(heads, dtype=np.int64)


def _place(points: np.ndarray, heads: np.ndarray, limit: int, metric: str, reach: float) -> np.ndarray:
    """Label per point: its nearest head with room within reach, the points nearest their heads first."""
    distance = head_distance(metric, points, points[heads])
    preference = np.argsort(distance, axis=1, kind="stable")
    true = np.sqrt(distance) if metric == "l2" else distance
    nearest = true.min(axis=1)
    within = np.ones(true.shape, bool) if math.isinf(reach) else true <= (nearest * (1 + reach))[:, None]
    room = np.full(len(heads), limit)
    labels = np.empty(len(points), dtype=np.int64)
    for row in np.argsort(nearest, kind="stable"):
        label = next((j for j in preference[row] if room[j] > 0 and within[row, j]), preference[row, 0])
        labels[row] = label
        room[label] -= 1
    return labels


# Balancing cuts one part in two, or drops one, a step. It is given twice as
# many steps as it starts with heads, and these few more: a bound, so that a
# list it cannot balance (copies of one vector) stops it; what it leaves,
# the placement's room and the split's reassign see to.
BALANCE_SPARE_STEPS = 8


def _balance(points: np.ndarray, heads: np.ndarray, limit: int, metric: str, *, least: int, seed: int) -> np.ndarray:
    """Heads whose nearest points number from *least* to *limit* − *least* each, as far as a few steps get.

    k-means' heads are often unbalanced that way: in many dimensions one
    central vector is the nearest head of nearly every point (hubness), and
    an outlier heads a part of its own (25 points came out 23/1/1). A part
    over *limit* − *least* is cut in two (:func:`_bisect`); the head of a
    part below *least* is dropped, its points going to their nearest other
    heads.
    """
    heads = [int(h) for h in heads]
    # A part with room for less than a merge's worth of entries would split
    # again when its neighbour below merge_below merges into it.
    most = limit - least
    distance = head_distance(metric, points, points[heads])  # one column per head, kept in step
    for step in range(2 * len(heads) + BALANCE_SPARE_STEPS):
        nearest = distance.argmin(axis=1)
        sizes = np.bincount(nearest, minlength=len(heads))
        if sizes.max() > most:
            part = int(sizes.argmax())
            members = np.flatnonzero(nearest == part)
            pair, balance = _bisect(points[members], metric, need=max(least, len(members) - most), seed=seed + step + 1)
            if not balance:
                break  # copies of one vector: the placement's room spreads them
            heads[part] = int(members[pair[0]])
            heads.append(int(members[pair[1]]))
            distance[:, part] = head_distance(metric, points, points[heads[part]])[:, 0]
            distance = np.column_stack([distance, head_distance(metric, points, points[heads[-1]])[:, 0]])
        elif sizes.min() < least and len(heads) > 2:
            part = int(sizes.argmin())
            heads.pop(part)
            distance = np.delete(distance, part, axis=1)
        elif sizes.min() < least:
            pair, balance = _bisect(points, metric, need=least, seed=seed + step + 1)
            if balance <= sizes.min():
                break
            heads = [int(h) for h in pair]
            distance = head_distance(metric, points, points[heads])
        else:
            break
    return np.array(heads, dtype=np.int64)


def _bisect(points: np.ndarray, metric: str, *, need: int, seed: int) -> tuple[tuple[int, int], int]:
    """Two of *points* as heads, and the smaller of the two sets of points nearest to each.

    Among the pairs drawn from 2-means' heads and a sample of the points, the
    pair whose smaller side has at least *need* points and a third of them
    (or comes nearest to it), and, among those, the tightest (least total
    distance to the nearer head). A third: two lists of 6 and 24 would do
    for a limit of 24, but the larger would split again at its next append.
    """
    need = min(max(need, len(points) // 3), len(points) // 2)
    centers, labels = kmeans(points, 2, seed=seed)
    sample = np.random.default_rng(seed).choice(len(points), size=min(BISECT_CANDIDATES, len(points)), replace=False)
    candidates = np.unique(np.concatenate([_nearest_members(metric, points, centers, labels), sample]))
    distance = head_distance(metric, points, points[candidates])
    best: tuple[tuple[int, float], tuple[int, int], int] | None = None
    for i in range(len(candidates)):
        nearer = distance[:, i : i + 1] <= distance  # ties go to i
        balance = np.minimum(nearer.sum(axis=0), len(points) - nearer.sum(axis=0))
        balance[i] = -1
        cost = np.minimum(distance[:, i : i + 1], distance).sum(axis=0)
        j = int(np.lexsort((cost, -np.minimum(balance, need)))[0])
        key = (int(min(balance[j], need)), -float(cost[j]))
        if best is None or key > best[0]:
            best = (key, (int(candidates[i]), int(candidates[j])), int(balance[j]))
    if best is None:
        return (0, 0), 0
    return best[1], max(best[2], 0)


def replicate(
    points: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    metric: str,
    *,
    limit: int,
    replicas: int,
    epsilon: float,
) -> list[np.ndarray]:
    """Members of each part: its own points, plus the boundary points SPANN's rules replicate.

    A build puts a vector near a boundary into up to *replicas* lists; a split
    that gave each entry to one part only would lose that for the vectors of
    the list it splits. The same closure (*epsilon*) and RNG rules apply here,
    among the new heads (*centers*). (A head identical to a chosen one is
    "behind" it: the copies of one vector repeated many times are not
    replicated.)
    """
    parts = len(centers)
    members = [list(np.flatnonzero(labels == j)) for j in range(parts)]
    if parts < 2 or replicas < 2:
        return [np.array(m, dtype=np.int64) for m in members]
    distance = head_distance(metric, points, centers)  # (n, parts)
    between = head_distance(metric, centers, centers)
    true = np.sqrt(np.maximum(distance, 0)) if metric == "l2" else distance
    order = np.argsort(distance, axis=1)
    for row in range(len(points)):
        chosen = [labels[row]]
        nearest = true[row, order[row, 0]]
        for j in order[row]:
            if len(chosen) >= replicas:
                break
            if j in chosen:
                continue
            if true[row, j] > nearest + epsilon * max(abs(nearest), TINY):
                break
            # A full list takes no copies: replicas never push a part over the limit.
            if len(members[j]) < limit and all(between[j, c] > distance[row, j] for c in chosen):
                chosen.append(j)
                members[j].append(row)
    return [np.array(sorted(m), dtype=np.int64) for m in members]
