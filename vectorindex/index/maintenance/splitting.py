"""Split: a posting list over its limit becomes K ≥ 2 lists around new heads (docs/ARCHITECTURE.md §5).

The old head is retired and the new ones added in the WAL, in the same
transaction as the new lists. Copies made by a split keep their version, and
the retired head's rows stay for ``RETIRED_GRACE`` seconds: a process whose
head index is a moment old still routes to the retired head and finds every
vector there. The reassign it asks for next moves what the new heads changed.
"""

from __future__ import annotations

from ...engine.head import prepare
from ...engine.partition import partition, replicate
from ...storage import StateRow, Storage
from ...wording import counted
from .. import writes
from ..jobs import Outcome, runner
from ..registry import Declared
from ..runtime import Runtime
from ..wal import change_heads
from . import lists
from .steps import change_head, fault


@runner("split")
def split(declared: Declared, head_id: int, using: str = "default") -> Outcome:
    """Split a posting list over its limit into K ≥ 2 lists around new heads."""

    def change(_rt: Runtime, storage: Storage, state: StateRow) -> Outcome:
        return _split(declared, head_id, using, storage, state)

    return change_head("split", declared, using, head_id, change)


def _split(declared: Declared, head_id: int, using: str, storage: Storage, state: StateRow) -> Outcome:
    options = declared.options
    limit = options["posting_limit"]
    fault("split", "locked")
    entries = storage.read_postings([head_id])
    live = lists.live(storage, entries)
    if len(live) <= limit:
        if len(live) < len(entries):
            storage.replace_postings(head_id, [(c, p) for _h, c, p in lists.pack(storage, head_id, live)])
        return Outcome("split", f"head {head_id}: {counted(len(live), 'live entry', 'live entries')}, within the limit after dropping {len(entries) - len(live):,} stale")
    vectors = storage.payload.vectors(live)
    points = prepare(vectors, declared.metric)
    chosen, labels = partition(
        points, limit, declared.metric, seed=head_id, reach=options["probe_epsilon"], least=options["merge_below"]
    )
    new_ids, _lsn = change_heads(storage, state.wal_lsn, add=vectors[chosen], retire=[head_id])
    storage.mark_split(head_id, new_ids)
    fault("split", "heads")
    rows = []
    parts = replicate(
        points, points[chosen], labels, declared.metric,
        limit=limit, replicas=options["replicas"], epsilon=options["replica_epsilon"],
    )
    for label, members in enumerate(parts):
        rows.extend(lists.pack(storage, int(new_ids[label]), live[members]))
    # No part is over the limit (partition, which also keeps each point
    # within reach, and replicate see to it); writes.append would ask
    # for a split if one were.
    writes.append(declared, storage, rows, using)
    fault("split", "postings")
    return Outcome(
        "split",
        f"head {head_id}: {counted(len(live), 'live entry', 'live entries')} into {counted(len(new_ids), 'new head')}",
        [("reassign", {"head_id": head_id, "new_head_ids": new_ids.tolist()})],
    )
