"""Head changes and their write-ahead log (docs/ARCHITECTURE.md §5).

Every change to the set of heads — a head added, a head retired — is a WAL row
written in the same transaction as the posting changes it belongs to. The caller
holds the index's state row exclusively (``Storage.lock_state(exclusive=True)``),
so head changes are serialised per index and LSNs commit in order: a reader that
has replayed up to LSN *n* can never miss an earlier entry that commits later.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..models import WalEntry
from ..storage import Storage


def change_heads(
    storage: Storage,
    lsn: int,
    *,
    add: np.ndarray | None = None,
    retire: Sequence[int] = (),
) -> tuple[np.ndarray, int]:
    """Retire and add heads at LSNs after *lsn*; return (new head ids, last LSN).

    *lsn* is the state row's ``wal_lsn`` as read under the exclusive lock.
    """
    for head_id in retire:
        lsn += 1
        storage.retire_head(int(head_id), lsn)
        storage.append_wal(lsn, WalEntry.Op.REMOVE, int(head_id), None)
    new_ids = np.empty(0, np.int64)
    if add is not None and len(add):
        new_ids = storage.insert_heads(add, lsn=lsn + 1)
        for head_id, vector in zip(new_ids.tolist(), add):
            lsn += 1
            storage.append_wal(lsn, WalEntry.Op.ADD, head_id, vector)
    storage.set_state(wal_lsn=lsn)
    return new_ids, lsn
