"""The head index as an earlier LSN saw it: the routing of a transaction whose snapshot is older."""

from __future__ import annotations

import numpy as np

from .head import HeadIndex, prepare


def distances(metric: str, queries: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """(queries × heads) distances as hnswlib measures them, between prepared vectors."""
    queries = queries.astype(np.float64)
    heads = heads.astype(np.float64)
    if metric == "l2":
        squared = (queries**2).sum(axis=1)[:, None] - 2 * queries @ heads.T + (heads**2).sum(axis=1)[None, :]
        return np.maximum(squared, 0)
    return 1.0 - queries @ heads.T


class HeadView:
    """The head index as it stood at an earlier LSN, for reads of a transaction that began then.

    A transaction under REPEATABLE READ (or SQLite's WAL mode) reads posting
    lists as they were when it began: the lists of heads added since are
    empty to it, and the vectors it can see are still under the heads
    retired since. Its queries must route as the head index stood at the LSN
    its own read of the state row shows. The view is the process's head
    index with the heads added since left out and those retired since put
    back (their vectors from the heads table, where a retired head's row
    stays for a grace period and in every older snapshot).
    """

    def __init__(self, head: HeadIndex, lsn: int, hidden: set[int], restored_ids: np.ndarray, restored_vectors: np.ndarray) -> None:
        self.head = head
        self.metric = head.metric
        self.dimensions = head.dimensions
        self.generation = head.generation
        self.lsn = lsn
        self.hidden = hidden
        self.restored_ids = np.asarray(restored_ids, dtype=np.int64)
        self.restored = prepare(restored_vectors.reshape(len(self.restored_ids), head.dimensions), head.metric)

    def __len__(self) -> int:
        return max(0, len(self.head) - len(self.hidden)) + len(self.restored_ids)

    def ids(self) -> np.ndarray:
        own = self.head.ids()
        return np.concatenate([own[~np.isin(own, list(self.hidden))], self.restored_ids])

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = prepare(np.atleast_2d(queries), self.metric)
        k = min(k, len(self))
        labels, found = self.head.search(queries, k + len(self.hidden), ef)
        found = np.where(np.isin(labels, list(self.hidden)), np.inf, found)
        if len(self.restored_ids):
            labels = np.hstack([labels, np.broadcast_to(self.restored_ids, (len(queries), len(self.restored_ids)))])
            found = np.hstack([found, distances(self.metric, queries, self.restored)])
        order = np.argsort(found, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(labels, order, axis=1), np.take_along_axis(found, order, axis=1)
