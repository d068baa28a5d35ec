"""How many lists a query must read for a recall target, with no database (docs/ARCHITECTURE.md §4).

A sample of the index's own vectors is used as queries, each excluding
itself, with the exact answers over every row (:class:`Neighbours`). For each
query and each true neighbour, :func:`first_reach` finds how far down the
query's ranking of heads the first list that holds that neighbour's current
entry is: a query that probes that many heads can find it. :func:`curve` turns
those depths into the share of neighbours within reach at each number of
probes — the recall a search would have if its estimates and re-rank lost
nothing. The index layer checks the chosen point with real queries and
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


class Neighbours:
    """The exact *k* nearest rows of each query, excluding the query's own row, over rows seen a chunk at a time."""

    def __init__(self, metric: str, queries: np.ndarray, query_ids: np.ndarray, k: int = K) -> None:
        self.metric = metric
        self.queries = queries
        self.query_ids = np.asarray(query_ids, dtype=np.int64)
        self.k = k
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
        keep = min(self.k, all_ids.shape[1])
        # By distance, ties by id: one order whatever the chunks' order.
        order = np.lexsort((all_ids, all_distances), axis=1)[:, :keep]
        self.ids = np.take_along_axis(all_ids, order, axis=1)
        self.distances = np.take_along_axis(all_distances, order, axis=1)

    def truth(self) -> np.ndarray:
        """(queries × up to k) ids of the neighbours; -1 for itself, and for rows with no direction (a zero vector)."""
        return np.where(np.isinf(self.distances), -1, self.ids)


def first_reach(rankings: np.ndarray, probed: np.ndarray, holders: Mapping[int, set[int]], truth: np.ndarray) -> np.ndarray:
    """(queries × k) the number of probes that first reads a list holding each true neighbour; 0 for none.

    *rankings* (queries × P) are each query's heads nearest first and
    *probed* whether the ``(1 + ε)`` cut-off keeps each; *holders* maps a
    head to the neighbours whose current entry its list holds.
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


def curve(depth: np.ndarray, truth: np.ndarray, ladder: list[int]) -> list[tuple[int, float]]:
    """(probes, share of the true neighbours within reach) at each number of probes of *ladder*."""
    counted = truth >= 0
    total = int(counted.sum())
    if not total:
        return [(p, 1.0) for p in ladder]
    reached = depth[counted]
    return [(p, float(((reached > 0) & (reached <= p)).sum()) / total) for p in ladder]


def ladder(most: int) -> list[int]:
    """Numbers of probes at which the curve is kept: 1, 2, 3, 4, then steps of about a fifth, up to *most*."""
    points, p = [], 1
    while p < most:
        points.append(p)
        p = max(p + 1, int(math.ceil(p * 1.2)))
    points.append(most)
    return points


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
        Beyond the curve's best, every head it was measured up to.
        """
        if math.isclose(recall, self.target):
            return self.probes
        enough = [p for p, share in self.curve if share >= recall]
        fewest = enough[0] if enough else (self.curve[-1][0] if self.curve else self.probes)
        return max(1, min(int(math.ceil(fewest * self.factor)), max(self.heads, 1)))


__all__ = ["Calibration", "K", "Neighbours", "curve", "first_reach", "ladder", "pairwise"]
