"""A query's candidates, with no database: the pool, validation windows, the best *k* (docs/ARCHITECTURE.md §4).

A query reads posting lists into a :class:`Pool` of entries with estimated
distances; walks the entries that pass, best estimate first, a window at a time
(:func:`in_order`), keeping those whose version is their vector's current one,
one per vector (:func:`valid`); scores the best of those exactly and ranks them
by the exact distances (:func:`best`). What needs the database or the query's
terms, the caller (``index/search.py``) passes in: the estimates and exact
distances, and which versions are current.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

# Candidates are sorted a window at a time: four times the entries wanted
# (a vector's replicas, up to ``replicas``, 3 by default, are among them), at
# least MIN_WINDOW. (Set with the first index tests, not measured since.)
WINDOW_PER_WANTED = 4
MIN_WINDOW = 64
# The first version lookup asks about this many times the vectors wanted
# (stale copies, deleted rows and rows the SQL conditions exclude drop out),
# and at least MIN_LOOKUP; each next one about twice as many as the last.
# The lookup reads the rows re-ranked too (index/search.py): at 20,000 × 384
# on MariaDB, 90 of them took 516 µs against 270 for 33.
LOOKUP_PER_WANTED = 1.25
MIN_LOOKUP = 16
# in_order sorts this many windows' worth first, by a partial sort: most
# queries need the first window or two.
FRONT_WINDOWS = 4
# ... when there are more than twice that many candidates; fewer are sorted at once.
PARTIAL_SORT_BEYOND = 2

Resolve = Callable[[list[int]], Mapping[int, int]]
"""Vector ids -> the current version of each that exists and that the query's SQL conditions allow."""

Score = Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]]
"""Pool positions -> (those that pass on their exact distances, those distances per term)."""


@dataclass
class Pool:
    """Entries read so far, with estimated distances; validated lazily, best first."""

    blocks: list[np.ndarray]  # the decoded entries, as read
    ids: np.ndarray
    versions: np.ndarray
    values: list[np.ndarray]  # per plan term: float32 estimates
    passing: np.ndarray  # the distance conditions hold, on the estimates
    # vector id -> its current version, or -1: deleted, or excluded by the
    # query's SQL conditions. Asked only for the best candidates.
    known: dict[int, int] = field(default_factory=dict)
    # Per entry: how far its estimate of the ranked term may be from the
    # exact distance (Payload.error_bound); None where it is exact enough.
    errors: np.ndarray | None = None

    @classmethod
    def empty(cls, terms: int) -> Pool:
        return cls(
            [],
            np.empty(0, np.int64),
            np.empty(0, np.uint32),
            [np.empty(0, np.float32) for _ in range(terms)],
            np.empty(0, bool),
        )

    def add(
        self, entries: np.ndarray, values: list[np.ndarray], passing: np.ndarray, errors: np.ndarray | None = None
    ) -> None:
        """Entries just read, their estimates per term, whether the distance conditions hold on those, and the
        estimates' error bounds for the ranked term (if any)."""
        if errors is not None:
            self.errors = errors if self.errors is None else np.concatenate([self.errors, errors])
        self.blocks.append(entries)
        self.ids = np.concatenate([self.ids, entries["id"].astype(np.int64)])
        self.versions = np.concatenate([self.versions, entries["version"]])
        self.values = [np.concatenate([old, new]) for old, new in zip(self.values, values)]
        self.passing = np.concatenate([self.passing, passing])

    def entries(self, positions: np.ndarray) -> np.ndarray:
        """The entries at these pool positions (a few: the candidates re-scored), in the order given."""
        starts = np.cumsum([0] + [len(block) for block in self.blocks[:-1]])
        which = np.searchsorted(starts, positions, side="right") - 1
        found = np.empty(len(positions), self.blocks[0].dtype) if self.blocks else np.empty(0)
        for b in np.unique(which).tolist():
            mine = which == b
            found[mine] = self.blocks[b][positions[mine] - starts[b]]
        return found


def union(rankings: Iterable[np.ndarray]) -> list[int]:
    """The heads of every ranking, each once, in the order first met."""
    return list(dict.fromkeys(int(h) for ranking in rankings for h in ranking.tolist()))


def window(need: int) -> int:
    """How many candidates one version lookup asks about, for *need* valid entries."""
    return max(WINDOW_PER_WANTED * need, MIN_WINDOW)


def in_order(candidates: np.ndarray, values: np.ndarray, ids: np.ndarray, window: int) -> Iterator[np.ndarray]:
    """*candidates* by (value, id), a window at a time.

    Most queries need the first window or two: those are found by a partial
    sort of a few windows' worth, and the rest are sorted only if asked for.
    """

    def ranked(subset: np.ndarray) -> np.ndarray:
        return subset[np.lexsort((ids[subset], values[subset]))]

    first = FRONT_WINDOWS * window
    if len(candidates) > PARTIAL_SORT_BEYOND * first:
        nearest = candidates[np.argpartition(values[candidates], first)[:first]]
        front = ranked(nearest)
        for start in range(0, len(front), window):
            yield front[start : start + window]
        rest = ranked(np.setdiff1d(candidates, nearest, assume_unique=True))
    else:
        rest = ranked(candidates)
    for start in range(0, len(rest), window):
        yield rest[start : start + window]


def valid(pool: Pool, term: int, need: int, resolve: Resolve, first: int = 0) -> Iterator[np.ndarray]:
    """Pool positions of valid entries, best estimate first (by *term*), a lookup at a time.

    Walks the passing entries in estimated-distance order (ties by id) and asks
    *resolve* about their vectors (the current version: a stale copy or a
    deleted row drops out; with SQL conditions, whether the row matches them),
    the first time for ``LOOKUP_PER_WANTED`` times the *need* of vectors not
    known yet (or *first*, if more), then for twice as many as the last
    time: most queries need one lookup, and it asks about little more than
    they need (the lookup also reads the rows that are re-ranked). One entry
    per vector (replicas are identical).
    """
    candidates = np.flatnonzero(pool.passing)
    values = pool.values[term]
    taken: set[int] = set()
    asking = max(math.ceil(LOOKUP_PER_WANTED * need), MIN_LOOKUP, first)
    for positions in in_order(candidates, values, pool.ids, window(need)):
        ids = pool.ids[positions].tolist()
        start = 0
        while start < len(ids):
            # The entries from *start* on, up to the *asking*-th vector not known yet.
            unknown: dict[int, None] = {}
            end = start
            while end < len(ids) and len(unknown) < asking:
                if ids[end] not in pool.known:
                    unknown[ids[end]] = None
                end += 1
            if unknown:
                _look_up(pool, resolve, unknown)
                asking *= 2
            kept = []
            for position, vector_id in zip(positions[start:end].tolist(), ids[start:end]):
                if vector_id in taken or pool.known[vector_id] != int(pool.versions[position]):
                    continue
                kept.append(position)
                taken.add(vector_id)
            start = end
            yield np.array(kept, dtype=np.int64)


def _look_up(pool: Pool, resolve: Resolve, vector_ids: Iterable[int]) -> None:
    """Ask *resolve* about these vectors (sorted) and note in ``pool.known`` each one's current version, or -1."""
    asked = sorted(vector_ids)
    current = resolve(asked)
    for vector_id in asked:
        pool.known[vector_id] = current.get(vector_id, -1)


def best(
    pool: Pool, term: int, need: int, rerank: int, resolve: Resolve, score: Score
) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """(vector ids, exact distances per term) of the best *need* valid entries; None if too few.

    The best ``need + rerank`` valid entries by estimate are scored exactly,
    their distance conditions checked again on the exact values, and ranked
    by those (by *term*, ties by id); more are taken while conditions fail on
    the exact values. Where the pool knows its estimates' error bounds, every
    other valid entry that could still be nearer than the *need*-th exact
    distance found (its estimate less its bound is not beyond it) is scored
    too: a crowd of near-duplicates larger than *rerank* is told apart by the
    exact distances, not by the estimates' rounding.
    """
    scored: list[tuple[np.ndarray, list[np.ndarray]]] = []
    done: set[int] = set()  # vectors scored, whether or not they passed

    def take(positions: np.ndarray) -> int:
        """Score *positions* exactly; keep those that pass on the exact values. How many were kept."""
        if not len(positions):
            return 0
        done.update(pool.ids[positions].tolist())
        passing, values = score(positions)
        scored.append((pool.ids[passing], values))
        return len(passing)

    def ranked() -> tuple[np.ndarray, list[np.ndarray]]:
        ids = np.concatenate([block[0] for block in scored]).astype(np.int64)
        values = [np.concatenate([block[1][i] for block in scored]) for i in range(len(pool.values))]
        return ids, values

    kept = 0
    wanted = need + rerank
    pending = np.empty(0, np.int64)
    for found in valid(pool, term, wanted, resolve, _bounded(pool, term, need)):
        pending = np.concatenate([pending, found])
        while kept < wanted and len(pending) >= wanted - kept:
            batch, pending = pending[: wanted - kept], pending[wanted - kept :]
            kept += take(batch)
        if kept >= wanted:
            break
    else:
        kept += take(pending[: wanted - kept])
    if kept < need:
        return None
    ids, values = ranked()
    if pool.errors is not None:
        kth = float(np.partition(values[term], need - 1)[need - 1])
        if take(_within_bound(pool, term, kth, done, resolve)):
            ids, values = ranked()
    order = np.lexsort((ids, values[term]))[:need]
    return ids[order], [column[order] for column in values]


def _bounded(pool: Pool, term: int, need: int) -> int:
    """Vectors the error bounds will have scored, if the *need* best estimates are valid: the first lookup's size.

    Those whose estimate less its bound is at most the *need*-th smallest
    estimate plus its bound; 0 without bounds.
    """
    if pool.errors is None:
        return 0
    passing = np.flatnonzero(pool.passing)
    if len(passing) < need:
        return 0
    estimates, errors = pool.values[term][passing], pool.errors[passing]
    with np.errstate(invalid="ignore"):
        upper = float(np.partition(estimates + errors, need - 1)[need - 1])
        return len(np.unique(pool.ids[passing[estimates - errors <= upper]]))


def _within_bound(pool: Pool, term: int, kth: float, done: set[int], resolve: Resolve) -> np.ndarray:
    """Positions of valid entries, one per vector not in *done*, whose estimate less its error bound is at most *kth*."""
    estimates = pool.values[term]
    with np.errstate(invalid="ignore"):
        near = np.flatnonzero(pool.passing & (estimates - pool.errors <= kth))
    near = near[np.lexsort((pool.ids[near], estimates[near]))]
    ids = pool.ids[near].tolist()
    unknown = {vector_id for vector_id in ids if vector_id not in done and vector_id not in pool.known}
    if unknown:
        _look_up(pool, resolve, unknown)
    kept: list[int] = []
    for position, vector_id in zip(near.tolist(), ids):
        if vector_id not in done and pool.known[vector_id] == int(pool.versions[position]):
            kept.append(position)
            done.add(vector_id)
    return np.array(kept, dtype=np.int64)
