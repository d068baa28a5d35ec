"""Merge and defragment: a list with too few live vectors goes to its neighbours;
a list of many small rows is packed into few (docs/ARCHITECTURE.md §5).
"""

from __future__ import annotations

from ...storage import StateRow, Storage, job_transaction
from ...wording import counted
from ..jobs import Outcome, runner
from ..registry import Declared
from ..runtime import Runtime, open_index
from ..wal import change_heads
from . import lists
from .steps import NOT_READY, change_head, fault


@runner("merge")
def merge(declared: Declared, head_id: int, using: str = "default") -> Outcome:
    """Retire a head with too few live vectors; append them to their nearest other heads."""

    def change(rt: Runtime, storage: Storage, state: StateRow) -> Outcome:
        live = lists.live(storage, storage.read_postings([head_id]))
        if len(live) >= declared.options["merge_below"]:
            return Outcome("merge", f"head {head_id} has {counted(len(live), 'live entry', 'live entries')}: not merged")
        if storage.alive_head_count() <= 1:
            return Outcome("merge", "the last head is never merged")
        rt.current(storage, state)  # up to date as committed, before the change below
        change_heads(storage, state.wal_lsn, retire=[head_id])
        fault("merge", "retired")
        lists.route_and_append(rt, storage, live, live["version"], using, exclude=frozenset([head_id]))
        fault("merge", "appended")
        return Outcome("merge", f"head {head_id}: {counted(len(live), 'vector')} moved to other heads")

    return change_head("merge", declared, using, head_id, change)


@runner("defragment")
def defragment(declared: Declared, head_id: int, using: str = "default", above_rows: int = 0) -> Outcome:
    """Rewrite a posting list as few packed rows, without stale entries. No head changes.

    A list stored in *above_rows* rows or fewer is left alone: the triggers
    (a query that read many rows, the scan) pass their threshold, since a
    list is often asked for again before its first defragment has run.
    """
    with job_transaction(using):
        opened = open_index(declared, using)
        if not opened.ready:
            return Outcome("defragment", NOT_READY)
        storage = opened.storage
        alive = storage.lock_head(head_id, skip_locked=True)
        if alive is None:
            return Outcome("defragment", f"head {head_id} is busy: left for a later scan")
        if not alive:
            return Outcome("defragment", f"head {head_id} is retired")
        stored = storage.list_rows(head_id)
        if stored <= above_rows:
            return Outcome("defragment", f"head {head_id}: {counted(stored, 'row')}, packed already")
        rows: dict[int, int] = {}
        entries, live = lists.rewrite_live(storage, head_id, rows)
        fault("defragment", "rewritten")
    # A list that grew past the limit while its split waited in the queue, and
    # was packed first, is still over the limit: no append will cross it again.
    follow_up = [("split", {"head_id": head_id})] if len(live) > declared.options["posting_limit"] else []
    return Outcome(
        "defragment", f"head {head_id}: {counted(rows.get(head_id, 0), 'row')}, {counted(len(entries), 'entry', 'entries')} -> {counted(len(live), 'live entry', 'live entries')}", follow_up
    )
