"""Which heads a vector belongs to, and which heads a query probes.

Assignment follows SPANN: a vector goes to its nearest head, and is replicated
into up to ``replicas`` heads in all, taking the next-nearest candidates in order
and keeping one only if

* it is not much farther than the nearest: ``d(x, c) ≤ d(x, c₁) + ε·|d(x, c₁)|``
  (the closure rule), and
* no head already chosen is nearer to it than *x* is (the RNG rule): a head
  "behind" a chosen one adds little, since a query that reaches it would reach
  the chosen head first.

Distances are the head index's own (squared L2, or ``1 − dot``); both rules only
compare distances of one kind, so the kind does not matter.
"""

from __future__ import annotations

import numpy as np

from .head import HeadIndex, prepare

BATCH = 2048


def _within(distances: np.ndarray, epsilon: float) -> np.ndarray:
    nearest = distances[:, :1]
    return distances <= nearest + epsilon * np.maximum(np.abs(nearest), 1e-12)


def _pairwise(vectors: np.ndarray, metric: str) -> np.ndarray:
    """(batch, k, k) distances between each row's candidate heads."""
    dots = np.einsum("bid,bjd->bij", vectors, vectors)
    if metric == "l2":
        norms = np.einsum("bid,bid->bi", vectors, vectors)
        return norms[:, :, None] + norms[:, None, :] - 2 * dots
    return 1.0 - dots


def assign(
    head: HeadIndex, vectors: np.ndarray, *, replicas: int, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """(row, head id) pairs: each row of *vectors* to 1…replicas heads."""
    rows_out, heads_out = [], []
    candidates = min(max(2 * replicas, 8), len(head))
    for start in range(0, len(vectors), BATCH):
        batch = vectors[start : start + BATCH]
        labels, distances = head.search(batch, candidates, ef=max(64, 2 * candidates))
        chosen = np.zeros(labels.shape, dtype=bool)
        chosen[:, 0] = True
        if replicas > 1 and candidates > 1:
            # hnswlib's get_items is slow per item: fetch each head once.
            unique, inverse = np.unique(labels, return_inverse=True)
            head_vectors = head.vectors(unique)[inverse.reshape(labels.shape)]
            between = _pairwise(head_vectors.astype(np.float64), head.metric)
            within = _within(distances, epsilon)
            for j in range(1, candidates):
                shadowed = np.any(chosen[:, :j] & (between[:, j, :j] < distances[:, j : j + 1]), axis=1)
                room = chosen[:, :j].sum(axis=1) < replicas
                chosen[:, j] = within[:, j] & ~shadowed & room
        row_index, column = np.nonzero(chosen)
        rows_out.append(row_index + start)
        heads_out.append(labels[row_index, column])
    if not rows_out:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(rows_out), np.concatenate(heads_out)


def probe(head: HeadIndex, query: np.ndarray, count: int, epsilon: float) -> np.ndarray:
    """Heads to probe for *query*, nearest first: up to *count*, within ``(1+ε)``."""
    labels, distances = head.search(query, count, ef=max(64, 2 * count))
    keep = _within(distances, epsilon)[0]
    return labels[0][keep]


def ranked_heads(head: HeadIndex, query: np.ndarray, count: int) -> np.ndarray:
    """The *count* nearest heads of *query*, nearest first, with no cut-off."""
    labels, _ = head.search(query, count, ef=max(64, 2 * count))
    return labels[0]


__all__ = ["assign", "prepare", "probe", "ranked_heads"]
