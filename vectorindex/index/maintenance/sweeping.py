"""Sweep: the entries of deleted and replaced vectors leave every list, and the
deleted vectors' version rows go once nothing names them (docs/ARCHITECTURE.md §5).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...storage import Storage, job_transaction
from ...wording import counted
from ..jobs import Outcome, runner
from ..registry import Declared
from ..runtime import open_index
from . import lists
from .steps import NOT_READY, fault

# Lists a sweep reads at a time, without a lock: their entries are what it
# holds in memory, a few hundred lists' worth whatever the index's size.
SWEEP_LISTS = 200
# A sweep's transaction rewrites lists until it has run this long (seconds):
# a write to a list it rewrote waits about that at most (on SQLite, where
# the transaction holds the whole database, any write does), and the
# commits, a flush to disk each, are fewer than one per list.
SWEEP_HOLD = 0.05
# The scan asks for a sweep once this share of the live vectors (and at least
# SWEEP_MIN of them) were deleted since the last sweep: a sweep reads every
# list, so it waits until the deletes are a tenth of what is live, and a
# small index is not swept for every few deletes.
SWEEP_SHARE = 0.1
SWEEP_MIN = 64
# Version rows locked and removed per transaction by a sweep or a collect: a
# save of one of those vectors waits for one batch at most.
FORGET_BATCH = 1_000


@runner("sweep")
def sweep(declared: Declared, using: str = "default") -> Outcome:
    """Rewrite every list that holds entries of deleted or replaced vectors without them; then drop the deleted vectors' version rows.

    A delete only marks the vector's version row, and leaves its entries in
    every list that held them: no list grows for it, so no split ever drops
    them, and queries read and skip them for ever. A sweep reads the lists a
    few hundred at a time, without a lock, and rewrites those with dead
    entries as a defragment does (a list some transaction holds now is left
    for the next sweep), in short transactions of a few lists each
    (``SWEEP_HOLD``): a write waits for the few lists of one transaction at
    most, never for the rest of the batch. Lists left below
    ``merge_below`` or over ``posting_limit`` get their merge or split next.

    Then the version rows of deleted vectors that no entry of any list (a
    retired head's too) names any more are removed. Each is locked before
    it is removed, and removed only if it is still deleted at the version
    it had when the lists were read: a write that would give such a vector
    a version again (its primary key used anew) waits, or, having written
    first, keeps the row, so that it can never meet an entry of the old
    vector at the same version number.
    """
    opened = open_index(declared, using)
    if not opened.ready:
        return Outcome("sweep", NOT_READY)
    storage = opened.storage
    options = declared.options
    rewritten = dropped = 0
    follow_up: list[tuple[str, dict[str, Any]]] = []
    heads = sorted(storage.alive_head_ids())
    for start in range(0, len(heads), SWEEP_LISTS):
        owners, entries = storage.read_postings_with_owners(heads[start : start + SWEEP_LISTS])
        queue = sorted(set(owners[~lists.current(storage, entries)].tolist()))
        while queue:
            done = []
            with job_transaction(using):
                began = time.monotonic()
                while True:
                    head_id = queue.pop(0)
                    # Else busy (left for the next sweep) or retired meanwhile.
                    if storage.lock_head(head_id, skip_locked=True):
                        done.append((head_id, *lists.rewrite_live(storage, head_id)))
                    if not queue or time.monotonic() - began >= SWEEP_HOLD:
                        break
            fault("sweep", "rewritten")
            for head_id, listed, live in done:
                rewritten += 1
                dropped += len(listed) - len(live)
                if len(live) < options["merge_below"]:
                    follow_up.append(("merge", {"head_id": head_id}))
                elif len(live) > options["posting_limit"]:
                    follow_up.append(("split", {"head_id": head_id}))
        fault("sweep", "batch")
    forgotten, named = forget_versions(storage, using, swept=True)
    return Outcome(
        "sweep",
        f"{counted(rewritten, 'list')} rewritten without {counted(dropped, 'dead entry', 'dead entries')}; "
        f"{counted(forgotten, 'version row')} of deleted vectors removed, {named:,} still named",
        follow_up,
    )


def forget_versions(storage: Storage, using: str, swept: bool = False) -> tuple[int, int]:
    """Remove the version rows of deleted vectors that no entry names: (how many, how many are still named).

    The deleted vectors and then every list are read without a lock: a
    version row locked for that long would hold up each user transaction
    that writes it. Only the rows no entry named are then locked, by primary
    key, a batch per transaction, and removed if they are still deleted at
    the version read. A vector whose version changed meanwhile was saved
    again (and maybe deleted again): its new entries may be in lists read
    before they were written, so its row stays. One that did not change got
    no entry since: entries are written under a new version, or copied from
    an entry that stays where it was (a retired list keeps its rows).

    After a sweep (*swept*), the deleted rows left (still named, or saved
    and deleted again meanwhile) are what the sweep had to leave, and the
    scan counts new deletes from there. After a collect, those left include
    vectors deleted since the sweep, whose entries no sweep has met yet: the
    count the sweep left only drops by what was removed.
    """
    deleted = storage.deleted_versions()
    unnamed = np.setdiff1d(np.array(sorted(deleted), dtype=np.int64), storage.referenced_ids(), assume_unique=True)
    forgotten = revived = 0
    for start in range(0, len(unnamed), FORGET_BATCH):
        batch = unnamed[start : start + FORGET_BATCH].tolist()
        with job_transaction(using):
            locked = storage.lock_versions(batch)
            gone = [vector_id for vector_id in batch if locked.get(vector_id) == (deleted[vector_id], True)]
            storage.forget_versions(gone)
        forgotten += len(gone)
        revived += sum(1 for _version, is_deleted in locked.values() if not is_deleted)
    with job_transaction(using):
        left = len(deleted) - forgotten - revived if swept else max(0, storage.swept_deleted() - forgotten)
        storage.set_state(swept_deleted=left)
    return forgotten, len(deleted) - len(unnamed)
