"""How many lists a query must read for a recall target, with no database (docs/ARCHITECTURE.md §4).

A sample of the index's own vectors is used as queries, each excluding
itself, with the exact answers over every row (:class:`Neighbours`): the rows
as near as the k-th nearest, ties included. For each query and each right
answer, :func:`first_reach` finds how far down the query's ranking of heads
the first list that holds that answer's current entry is: a query that probes
that many heads can find it. :func:`curve` turns those depths into the recall
within reach at each number of probes — the recall a search would have if
its estimates and re-rank lost nothing. The index layer checks the chosen point with real queries and
records by how much it had to read more (:class:`Calibration`'s ``factor``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from .distances import KERNELS

# Neighbours per query: recall@10, as the benchmarks and the peer measure it.
K = 10


def pairwise(metric: str, queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(queries × rows) exact distances, in float64 (the exact path's meanings)."""
    kernel = KERNELS[metric]
    return np.stack([kernel(matrix, query) for query in queries]) if len(queries) else np.empty((0, len(matrix)))


# Rows kept per query beyond the *k* nearest: those as near as the k-th (ties,
# near-duplicates stored twice) count as right answers, as far as these go.
KEPT = 4 * K
# Two distances this close are one (the k-th row and its ties), relative and absolute.
TIE_RELATIVE = 1e-6
TIE_ABSOLUTE = 1e-9


def as_near(distances: np.ndarray, kth: np.ndarray) -> np.ndarray:
    """Whether each distance is no farther than its query's k-th (*kth*, one per row), ties included."""
    return distances <= kth[:, None] * (1 + TIE_RELATIVE) + TIE_ABSOLUTE


class Neighbours:
    """The exact nearest rows of each query, excluding the query's own row, over rows seen a chunk at a time.

    What counts as a right answer is any row as near as the k-th nearest: a
    table of real embeddings holds rows stored twice (the same text), and a
    search that returns one copy of a tie instead of the other is right. So
    up to ``KEPT`` nearest rows are kept, and :meth:`answers` gives those
    within the k-th distance.
    """

    def __init__(self, metric: str, queries: np.ndarray, query_ids: np.ndarray, k: int = K, kept: int = KEPT) -> None:
        self.metric = metric
        self.queries = queries
        self.query_ids = np.asarray(query_ids, dtype=np.int64)
        self.k = k
        self.kept = max(kept, k)
        self.ids = np.empty((len(queries), 0), np.int64)
        self.distances = np.empty((len(queries), 0), np.float64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """One chunk of rows: (primary keys, vectors)."""
        if not len(ids):
            return
        ids = np.asarray(ids, dtype=np.int64)
        found = pairwise(self.metric, self.queries, vectors)
        found[ids[None, :] == self.query_ids[:, None]] = np.inf  # a query is not its own neighbour
        found = np.where(np.isnan(found), np.inf, found)  # no direction (a zero vector): never near
        all_ids = np.concatenate([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))], axis=1)
        all_distances = np.concatenate([self.distances, found], axis=1)
        keep = min(self.kept, all_ids.shape[1])
        # By distance, ties by id: one order whatever the chunks' order.
        order = np.lexsort((all_ids, all_distances), axis=1)[:, :keep]
        self.ids = np.take_along_axis(all_ids, order, axis=1)
        self.distances = np.take_along_axis(all_distances, order, axis=1)

    def kth(self) -> np.ndarray:
        """Each query's k-th nearest distance (inf where it has fewer than k rows with a direction)."""
        if self.distances.shape[1] < self.k:
            return np.full(len(self.queries), np.inf)
        return self.distances[:, self.k - 1]

    def answers(self) -> np.ndarray:
        """(queries × up to KEPT) ids of the rows as near as the k-th, -1 elsewhere (farther, itself, no direction)."""
        right = as_near(self.distances, self.kth()) & np.isfinite(self.distances)
        return np.where(right, self.ids, -1)


def first_reach(rankings: np.ndarray, probed: np.ndarray, holders: Mapping[int, set[int]], truth: np.ndarray) -> np.ndarray:
    """The number of probes that first reads a list holding each right answer of *truth*; 0 for none (or no answer).

    *rankings* (queries × P) are each query's heads nearest first and
    *probed* whether the ``(1 + ε)`` cut-off keeps each; *holders* maps a
    head to the answers whose current entry its list holds.
    """
    depth = np.zeros(truth.shape, np.int64)
    for q in range(len(truth)):
        wanted = {int(t): column for column, t in enumerate(truth[q].tolist()) if t >= 0}
        for position, head_id in enumerate(rankings[q].tolist()):
            if not wanted:
                break
            if not probed[q, position]:
                continue
            for t in holders.get(int(head_id), ()) & wanted.keys():
                depth[q, wanted.pop(t)] = position + 1
    return depth


def curve(depth: np.ndarray, truth: np.ndarray, ladder: list[int], k: int = K) -> list[tuple[int, float]]:
    """(probes, recall@k within reach) at each number of probes of *ladder*.

    A query reading *p* lists can return up to *k* of the right answers
    those lists hold; it has ``min(k, answers)`` to find.
    """
    wanted = np.minimum((truth >= 0).sum(axis=1), k)
    total = int(wanted.sum())
    if not total:
        return [(p, 1.0) for p in ladder]
    reached = (depth > 0)[:, :, None] & (depth[:, :, None] <= np.array(ladder)[None, None, :])
    found = np.minimum(reached.sum(axis=1), wanted[:, None]).sum(axis=0)
    return [(p, float(hits) / total) for p, hits in zip(ladder, found.tolist())]


def ladder(most: int) -> list[int]:
    """Numbers of probes at which the curve is kept: 1, 2, 3, 4, then steps of about a fifth, up to *most*."""
    points, p = [], 1
    while p < most:
        points.append(p)
        p = max(p + 1, int(math.ceil(p * 1.2)))
    points.append(most)
    return points


# Probes that read every list, however many an index has.
EVERY_LIST = 1 << 31


@dataclass
class Calibration:
    """What a calibration measured, as the state row keeps it (``IndexState.calibration``)."""

    target: float  # the recall asked for
    probes: int  # what a query reads by default to meet it
    recall: float  # recall@k measured with real queries at ``probes``
    queries: int  # the sample's size
    vectors: int  # live vectors when calibrated
    heads: int  # alive heads when calibrated: maintenance calibrates again once they change by a share
    generation: int  # the build calibrated
    factor: float  # real queries needed this many times the probes the curve said
    curve: list[tuple[int, float]] = field(default_factory=list)  # (probes, neighbours within reach)
    at: str = ""  # when, ISO 8601

    def to_state(self) -> dict:
        stored = asdict(self)
        stored["curve"] = [[p, round(r, 5)] for p, r in self.curve]
        return stored

    @classmethod
    def from_state(cls, stored: Mapping | None) -> Calibration | None:
        if not stored or "probes" not in stored:
            return None
        known = {name: stored[name] for name in cls.__dataclass_fields__ if name in stored}
        known["curve"] = [(int(p), float(r)) for p, r in stored.get("curve", [])]
        return cls(**known)

    def describe(self) -> str:
        """In words: ``probes 12 for recall 0.95: measured 0.962 on 200 of its vectors``."""
        if not self.queries:
            return f"probes {self.probes}: every list is read (too few vectors or heads to sample)"
        return f"probes {self.probes} for recall {self.target}: measured {self.recall:.3f} on {self.queries} of its vectors"

    def probes_for(self, recall: float) -> int:
        """Probes for *recall*: the fewest the curve says reach it, times the factor real queries needed.

        At the target itself, the probes the real queries were measured at.
        Beyond the curve's best, every head it was measured up to. Every
        list (:data:`EVERY_LIST`) when there was nothing to sample.
        """
        if not self.queries:
            # Too few vectors or heads to sample when calibrated: every list,
            # however many the index has now (an index built on an empty table
            # grows by splits until maintenance calibrates it again).
            return EVERY_LIST
        if math.isclose(recall, self.target):
            return self.probes
        enough = [p for p, share in self.curve if share >= recall]
        fewest = enough[0] if enough else (self.curve[-1][0] if self.curve else self.probes)
        return max(1, min(int(math.ceil(fewest * self.factor)), max(self.heads, 1)))


__all__ = ["EVERY_LIST", "Calibration", "K", "Neighbours", "as_near", "curve", "first_reach", "ladder", "pairwise"]
