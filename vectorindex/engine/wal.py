"""Replaying the head write-ahead log onto a head index, with no database (docs/ARCHITECTURE.md §5).

Every change to the set of heads — a head added, a head retired — is one WAL
entry, at the next LSN. A process's head index is a snapshot's plus the
entries after the snapshot's LSN, applied here in order; ``index/runtime.py``
reads the entries (the SQL side: ``index/wal.py`` writes them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import codec
from .head import HeadIndex

# What an entry does, as the WAL table's ``op`` column stores it
# (``models.WalEntry.Op``, a test checks that they agree).
ADD = 1
REMOVE = 2

Entry = tuple[int, int, int, bytes | bytearray | memoryview | None]
"""One WAL row as read: (LSN, op, head id, the added head's stored vector or None)."""


def continues(head: HeadIndex, entries: Sequence[Entry], lsn: int = 0) -> bool:
    """Whether *entries*, the WAL after *head*'s LSN, take it on without a gap to at least *lsn*.

    LSNs go up by one per entry. When the entry after the head index's LSN
    is gone (a compaction folded it into a snapshot and deleted it), they do
    not: the caller loads the snapshot.
    """
    reaches = entries[-1][0] if entries else head.lsn
    return not ((entries and entries[0][0] != head.lsn + 1) or reaches < lsn)


def apply(head: HeadIndex, entries: Sequence[Entry]) -> None:
    """Apply *entries* in order, each remembered in the head index's history, its LSN moved to the last.

    Applying an entry again is harmless: an ADD of an alive head is skipped and
    a REMOVE of a missing one does nothing.
    """
    if head.history_from is None:
        head.history_from = head.lsn
    for entry_lsn, op, head_id, vector in entries:
        head.record(entry_lsn, op == ADD, head_id)
        if op == ADD:
            if head_id not in head.alive:
                head.add(np.array([head_id]), codec.from_bytes(bytes(vector))[None, :])
        elif op == REMOVE:
            head.remove(np.array([head_id]))
        head.lsn = entry_lsn


def replay(head: HeadIndex, entries: Sequence[Entry], lsn: int = 0) -> bool:
    """Apply the WAL entries after the head index's LSN, up to at least *lsn*.

    *entries* are every entry after ``head.lsn``, in order. When they do not
    continue it (:func:`continues`), nothing is applied and the answer is
    False: the caller loads the snapshot.
    """
    if not continues(head, entries, lsn):
        return False
    apply(head, entries)
    return True
