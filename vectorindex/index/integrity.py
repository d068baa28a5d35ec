"""Each row against its index entries: what ``check`` reports and ``repair`` mends.

Rows written outside Django (raw SQL, a restore of the model's table alone)
and a row whose entries sit only in lists that no query for it reads are
found by comparing every row with its entries:

* *missing* — the row has a vector but no live version row;
* *lost* — its current version is in no posting list of an alive head;
* *changed* — its current entry holds another vector than the row (the
  entry is encoded again from the row's vector and compared);
* *unreachable* — its current entries are only in lists that a query for
  its own vector, with 128 probes (or the declared ``probes``, not the
  calibrated ones) and ``probe_epsilon``, does not read;
* *orphaned* — a live version row with no row (or a NULL vector) behind it.

:mod:`vectorindex.index.repair` indexes the first four again and marks the
orphans deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine import routing
from ..engine.head import HeadIndex
from ..storage import Storage
from .registry import Declared
from .rows import stream_vectors
from .runtime import runtime

KINDS = ("missing", "lost", "changed", "unreachable", "orphaned")


@dataclass
class Survey:
    """The rows (or version rows, for orphans) of each kind, by primary key."""

    missing: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    orphaned: list[int] = field(default_factory=list)
    rows: int = 0

    def to_index(self) -> list[int]:
        return sorted({*self.missing, *self.lost, *self.changed, *self.unreachable})


def survey(declared: Declared, using: str, storage: Storage, head: HeadIndex | None) -> Survey:
    """Every row against its entries, as this connection's transaction sees them.

    Memory: a few integers per entry, and one chunk of rows at a time.
    Without *head* (it could not be loaded), reachability is not judged.
    """
    found = Survey()
    versions = storage.all_versions()
    version_ids = np.array(sorted(versions), dtype=np.int64)
    current = np.array([versions[i][0] for i in version_ids.tolist()], dtype=np.int64)
    live = np.array([not versions[i][1] for i in version_ids.tolist()], dtype=bool)
    entry_ids, owners, prints = _current_entries(storage, version_ids, current, live)

    options = declared.options
    count = min(runtime(declared, using).reach_probes(), len(head)) if head is not None else 0
    alive = np.sort(head.ids()) if head is not None else np.empty(0, np.int64)
    seen: list[np.ndarray] = []
    for pks, vectors, keys in stream_vectors(declared, using, storage):
        # Each row's primary key, as reported: the vector id itself, or (keyed) the row's own key.
        names = pks if keys is None else np.array(keys, dtype=object)
        seen.append(pks)
        found.rows += len(pks)
        at = np.searchsorted(version_ids, pks).clip(max=max(len(version_ids) - 1, 0))
        has_version = (version_ids[at] == pks) & live[at] if len(version_ids) else np.zeros(len(pks), bool)
        found.missing.extend(names[~has_version].tolist())
        pks, vectors, at, names = pks[has_version], vectors[has_version], at[has_version], names[has_version]
        first = np.searchsorted(entry_ids, pks)
        indexed = first < len(entry_ids)
        indexed[indexed] = entry_ids[first[indexed]] == pks[indexed]
        found.lost.extend(names[~indexed].tolist())
        pks, vectors, at, first, names = pks[indexed], vectors[indexed], at[indexed], first[indexed], names[indexed]
        encoded = storage.payload.entries(pks, current[at].astype(np.uint32), vectors)
        same = storage.payload.fingerprints(encoded) == prints[first]
        found.changed.extend(names[~same].tolist())
        if head is not None and 0 < count < len(head):
            pks, vectors, names = pks[same], vectors[same], names[same]
            reached = _reachable(head, pks, vectors, count, options["probe_epsilon"], entry_ids, owners, alive)
            found.unreachable.extend(names[~reached].tolist())
    rows = np.concatenate(seen) if seen else np.empty(0, np.int64)
    found.orphaned = version_ids[live & ~np.isin(version_ids, rows)].tolist()
    if declared.keyed:  # as the rows' keys the version rows keep
        keys_of = storage.keys_of_ids(found.orphaned)
        found.orphaned = [declared.key_value(keys_of[vector_id]) for vector_id in found.orphaned if vector_id in keys_of]
    return found


def _current_entries(
    storage: Storage, version_ids: np.ndarray, current: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vector id, head, fingerprint) of every entry at its vector's current version in an alive list, sorted by id."""
    alive = np.fromiter(storage.alive_head_ids(), dtype=np.int64)
    ids, heads, prints = [], [], []
    for owners, entries in storage.iter_postings():
        if not len(entries) or not len(version_ids):
            continue
        at = np.searchsorted(version_ids, entries["id"]).clip(max=len(version_ids) - 1)
        keep = (
            (version_ids[at] == entries["id"]) & live[at] & (current[at] == entries["version"]) & np.isin(owners, alive)
        )
        ids.append(entries["id"][keep].astype(np.int64))
        heads.append(owners[keep])
        prints.append(storage.payload.fingerprints(entries[keep]))
    if not ids:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint64)
    ids_all, heads_all, prints_all = np.concatenate(ids), np.concatenate(heads), np.concatenate(prints)
    order = np.argsort(ids_all, kind="stable")
    return ids_all[order], heads_all[order], prints_all[order]


def _reachable(
    head: HeadIndex,
    pks: np.ndarray,
    vectors: np.ndarray,
    count: int,
    epsilon: float,
    entry_ids: np.ndarray,
    owners: np.ndarray,
    alive: np.ndarray,
) -> np.ndarray:
    """Does a query for each row's own vector read a list that holds it?"""
    if not len(pks):
        return np.zeros(0, bool)
    labels, probed = routing.probe_many(head, vectors, count, epsilon)
    rows = np.repeat(np.arange(len(pks)), labels.shape[1])[probed.ravel()]
    probe_keys = rows * len(alive) + np.searchsorted(alive, labels.ravel()[probed.ravel()])
    start, stop = np.searchsorted(entry_ids, pks), np.searchsorted(entry_ids, pks, side="right")
    holder_rows = np.repeat(np.arange(len(pks)), stop - start)
    holder_heads = np.concatenate([owners[a:b] for a, b in zip(start.tolist(), stop.tolist())]) if len(pks) else owners[:0]
    rank = np.searchsorted(alive, holder_heads).clip(max=max(len(alive) - 1, 0))
    known = alive[rank] == holder_heads if len(alive) else np.zeros(len(holder_heads), bool)
    hit = np.isin(holder_rows * len(alive) + rank, probe_keys) & known
    reachable = np.zeros(len(pks), bool)
    reachable[holder_rows[hit]] = True
    return reachable
