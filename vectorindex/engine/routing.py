"""Which heads a vector belongs to, and which heads a query probes.

Assignment follows SPANN: a vector goes to its nearest head, and is replicated
into up to ``replicas`` heads in all, taking the next-nearest candidates in order
and keeping one only if

* it is not much farther than the nearest: ``d(x, c) ≤ d(x, c₁) + ε·|d(x, c₁)|``
  (the closure rule), and
* no head already chosen is as near to it as *x* is (the RNG rule): a head
  "behind" a chosen one adds little, since a query that reaches it would reach
  the chosen head first.

The RNG rule compares the head index's own distances (squared L2, or
``1 − dot``), which rank the same as the true ones. The closure rule (and the
probe rule, for queries) is a ratio, so for L2 it is applied to true distances,
not squared ones.
"""

from __future__ import annotations

import numpy as np

from .head import HeadIndex, prepare

# Vectors routed per hnswlib search. It bounds the batch's arrays: the
# candidate heads' vectors, (batch, candidates, d) float64, are 48 MiB at 8
# candidates of 384 dimensions. (Set with the first index, not measured since.)
BATCH = 2048
# Candidate heads for a vector's replicas: twice the replicas, and at least 8,
# so that the RNG rule has more heads to pass over than it keeps. (Since the
# first index; not measured.)
CANDIDATES_PER_REPLICA = 2
MIN_CANDIDATES = 8
# hnswlib's ef for a search of *count* heads: twice the count, at least 64.
# Round 5 tried ef equal to the probe count: recall@10 fell by 0.0026 for
# 0.3 ms a query saved, not adopted. At ef 64 the nearest head routing finds
# is the exact nearest for 97.9 % of vectors, at ef 32 for 95.1 % (BENCHMARKS.md,
# rounds 5 and 4).
EF_PER_HEAD = 2
MIN_EF = 64
# The (1 + ε) cut-off's scale when the nearest head is at distance 0 (the
# vector is a head): heads at that distance, within rounding, pass, and no
# others do at a finite ε.
ZERO_DISTANCE = 1e-12
# Lists a query reads whatever the (1 + ε) cut-off: its nearest few. A query
# that sits close to one head (a stored vector near a head a split put beside
# it) would otherwise keep that head's list alone, while the vector is still
# in a neighbouring list no reassign read (a reassign reads the lists of the
# split heads' nearest heads only), and a query for it would miss it. Real
# embeddings are cut below this for 0.5 % of queries and 2 % of stored rows
# (60,000 × 384, 1,699 heads): the floor costs the others nothing.
MIN_PROBED = 8


def _ef(count: int) -> int:
    return max(MIN_EF, EF_PER_HEAD * count)


def _within(distances: np.ndarray, epsilon: float, metric: str) -> np.ndarray:
    if metric == "l2":
        distances = np.sqrt(np.maximum(distances, 0))
    nearest = distances[:, :1]
    return distances <= nearest + epsilon * np.maximum(np.abs(nearest), ZERO_DISTANCE)


def _probed(distances: np.ndarray, epsilon: float, metric: str) -> np.ndarray:
    """The query's ``(1 + ε)`` cut-off, scaled by its nearest head that is not at distance 0; its nearest :data:`MIN_PROBED` heads whatever the cut-off.

    A query for a stored vector that is itself a head (a "more like this row"
    query) is at distance 0 from that head: scaled by 0, the cut-off would
    keep its list alone, and its neighbours' lists hold most of what it is
    looking for. For ``ip``, whose distances may be negative, the nearest
    head is the scale (:func:`_within`).
    """
    if metric == "ip":
        kept = _within(distances, epsilon, metric)
    else:
        if metric == "l2":
            distances = np.sqrt(np.maximum(distances, 0))
        apart = np.where(distances > ZERO_DISTANCE, distances, np.inf).min(axis=1, keepdims=True)
        scale = np.where(np.isfinite(apart), apart, ZERO_DISTANCE)
        kept = distances <= scale * (1 + epsilon)
    kept[:, :MIN_PROBED] = True
    return kept


def _pairwise(vectors: np.ndarray, metric: str) -> np.ndarray:
    """(batch, k, k) distances between each row's candidate heads."""
    dots = vectors @ vectors.transpose(0, 2, 1)  # batched GEMM: a third of einsum's time
    if metric == "l2":
        norms = np.einsum("bid,bid->bi", vectors, vectors)
        return norms[:, :, None] + norms[:, None, :] - 2 * dots
    return 1.0 - dots


def assign(
    head: HeadIndex,
    vectors: np.ndarray,
    *,
    replicas: int,
    epsilon: float,
    exclude: frozenset[int] = frozenset(),
    head_vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row, head id) pairs: each row of *vectors* to 1…replicas heads.

    Heads in *exclude* are passed over (a merge routes around the head it is
    retiring, without changing the shared head index before its commit).
    *head_vectors*, the heads' prepared vectors indexed by head id, spares
    reading them back from hnswlib (about 40 µs a head), when the caller
    holds them: a build, whose head ids are positions in its array.
    """
    rows_out, heads_out = [], []
    candidates = min(max(CANDIDATES_PER_REPLICA * replicas, MIN_CANDIDATES) + len(exclude), len(head))
    for start in range(0, len(vectors), BATCH):
        batch = vectors[start : start + BATCH]
        ef = _ef(candidates)
        if head_vectors is None:
            labels, distances, unique, unique_vectors = head.search_with_vectors(batch, candidates, ef=ef)
        else:
            labels, distances = head.search(batch, candidates, ef=ef)
            unique = np.unique(labels)
            unique_vectors = head_vectors[unique]
        if exclude:
            # Move excluded heads to the end of each row, where they are never chosen.
            barred = np.isin(labels, list(exclude))
            order = np.argsort(barred, axis=1, kind="stable")
            labels = np.take_along_axis(labels, order, axis=1)
            distances = np.take_along_axis(distances, order, axis=1)
            barred = np.take_along_axis(barred, order, axis=1)
            if barred[:, 0].any():
                raise ValueError("every candidate head is excluded")
        else:
            barred = np.zeros(labels.shape, dtype=bool)
        chosen = np.zeros(labels.shape, dtype=bool)
        chosen[:, 0] = True
        if replicas > 1 and candidates > 1:
            # Each head's vector once (hnswlib's get_items is slow per item).
            candidate_vectors = unique_vectors[np.searchsorted(unique, labels)]
            between = _pairwise(candidate_vectors.astype(np.float64), head.metric)
            # shadows[:, j, i]: head i, if chosen, is as near to head j as the vector is.
            shadows = between <= distances[:, :, None]
            eligible = _within(distances, epsilon, head.metric) & ~barred
            taken = np.ones(len(labels), dtype=np.int64)
            for j in range(1, candidates):
                shadowed = (chosen[:, :j] & shadows[:, j, :j]).any(axis=1)
                chosen[:, j] = eligible[:, j] & ~shadowed & (taken < replicas)
                taken += chosen[:, j]
        row_index, column = np.nonzero(chosen)
        rows_out.append(row_index + start)
        heads_out.append(labels[row_index, column])
    if not rows_out:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(rows_out), np.concatenate(heads_out)


def probe(head: HeadIndex, query: np.ndarray, count: int, epsilon: float) -> np.ndarray:
    """Heads to probe for *query*, nearest first: up to *count*, within ``(1+ε)``.

    A *count* that reaches the number of heads asks for every list: all of
    them, in no particular order, with no cut-off (and no graph search, which
    need not reach every element of a graph that has lost many).
    """
    if count >= len(head):
        return head.ids()
    labels, distances = head.search(query, count, ef=_ef(count))
    keep = _probed(distances, epsilon, head.metric)[0]
    return labels[0][keep]


def probe_many(head: HeadIndex, queries: np.ndarray, count: int, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """(heads, probed?) per query, as :func:`probe` chooses them for a *count* below the number of heads: (n, count) arrays."""
    labels, distances = head.search(queries, count, ef=_ef(count))
    return labels, _probed(distances, epsilon, head.metric)


def reach(
    head: HeadIndex, vectors: np.ndarray, members: np.ndarray, owners: np.ndarray, count: int, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """*members*, *owners* (from :func:`assign`), and for each vector that no query for it would find, one more pair.

    A query for a vector reads the lists :func:`probe` chooses for it (with
    a wider search than routing's); where none of those holds it (routing's
    search missed a head at the vector itself, say), the first of them is
    added, so that the vector is found at least by a query for itself.
    """
    if not len(vectors) or count >= len(head):
        return members, owners
    labels, probed = probe_many(head, vectors, count, epsilon)
    reached = np.zeros(len(vectors), dtype=bool)
    for row, owner in zip(members.tolist(), owners.tolist()):
        reached[row] |= bool((labels[row][probed[row]] == owner).any())
    missing = np.flatnonzero(~reached)
    return np.concatenate([members, missing]), np.concatenate([owners, labels[missing, 0]])


def ranked_heads(head: HeadIndex, query: np.ndarray, count: int) -> np.ndarray:
    """The *count* nearest heads of *query*, nearest first, with no cut-off.

    From the number of heads on, every head, in no particular order.
    """
    if count >= len(head):
        return head.ids()
    labels, _ = head.search(query, count, ef=_ef(count))
    return labels[0]


__all__ = ["assign", "prepare", "probe", "probe_many", "ranked_heads", "reach"]
