"""Posting lists as the jobs read and write them: which entries are live, packed
rows, and moving entries to the heads that own them now.
"""

from __future__ import annotations

import numpy as np

from ...engine import postings, routing
from ...exceptions import VectorIndexError
from ...storage import Storage
from .. import writes
from ..runtime import Runtime


def current(storage: Storage, entries: np.ndarray) -> np.ndarray:
    """Which entries are at their vector's current version (not stale, not deleted)."""
    if not len(entries):
        return np.zeros(0, bool)
    versions = storage.current_versions(np.unique(entries["id"]).tolist())
    if not versions:
        return np.zeros(len(entries), bool)
    known = np.array(sorted(versions.items()), dtype=np.int64)
    position = np.searchsorted(known[:, 0], entries["id"])
    position[position >= len(known)] = 0
    return (known[position, 0] == entries["id"]) & (known[position, 1] == entries["version"])


def live(storage: Storage, entries: np.ndarray) -> np.ndarray:
    """Entries at their vector's current version, one per vector."""
    entries = entries[current(storage, entries)]
    _, first = np.unique(entries["id"], return_index=True)
    return entries[np.sort(first)]


def pack(storage: Storage, head_id: int, entries: np.ndarray) -> list[tuple[int, int, bytes]]:
    """Posting rows of *entries* for one head, their stored bytes as they are."""
    return [(head_id, count, data) for count, data in storage.payload.pack_entries(entries)]


def rewrite_live(storage: Storage, head_id: int, rows: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rewrite a locked posting list as its live entries, packed: (its entries before, the live ones)."""
    entries = storage.read_postings([head_id], rows)
    kept = live(storage, entries)
    storage.replace_postings(head_id, [(c, p) for _h, c, p in pack(storage, head_id, kept)])
    return entries, kept


def route_and_append(
    rt: Runtime,
    storage: Storage,
    entries: np.ndarray,
    versions: np.ndarray,
    using: str,
    exclude: frozenset[int] = frozenset(),
) -> None:
    """Append *entries* (with *versions*) where the current heads say they belong.

    The head index is brought up to the last *committed* state only (the state
    row as read before this job changed anything): the process's shared head
    index never holds a change that could still roll back.
    """
    if not len(entries):
        return
    options = rt.declared.options
    vectors = storage.payload.vectors(entries)
    for _attempt in range(writes.ROUTE_ATTEMPTS):  # as many as a write
        head = rt.current(*rt.open()) if not exclude else rt.head
        members, owners = routing.assign(
            head, vectors, replicas=options["replicas"], epsilon=options["replica_epsilon"], exclude=exclude
        )
        sizes = storage.lock_heads_shared(owners)
        if len(sizes) == len(set(owners.tolist())):
            break
    else:
        raise VectorIndexError(f"{rt.declared.name}: heads kept changing while moving {len(entries)} vectors")
    moved = entries.copy()  # the versions may be new
    moved["version"] = versions
    writes.append(rt.declared, storage, postings.rows_by_head(storage.payload, moved, members, owners), using, sizes=sizes)
