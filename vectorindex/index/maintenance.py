"""LIRE: the background jobs that keep posting lists balanced (DESIGN §5).

Each job is one database transaction, takes primitive ids, and is idempotent:
run again after its worker died, it finds the database as the last commit left
it and does the right thing. Jobs that change the set of heads (split, merge)
lock the index's state row exclusively first, which serialises them per index
and makes WAL LSNs commit in order; every job that rewrites a posting list
locks that head's row exclusively, so appends to it wait, and a writer that
routed to a head retired meanwhile routes again (DESIGN §3).

Copies made by a split or a merge keep their version, and a retired head's
rows stay for ``RETIRED_GRACE`` seconds: a process whose head index is a moment
old still routes to the retired head and finds every vector there.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import OperationalError, connections
from django.utils import timezone

from ..conf import vectorindex_settings
from ..engine import routing
from ..engine.head import prepare
from ..engine.partition import head_distance, partition, replicate
from ..exceptions import JobBusy, VectorIndexError
from ..storage import Storage, job_transaction
from ..storage.backends import lock_timeout
from ..wording import counted
from . import writes
from .registry import Declared
from .runtime import damaged_snapshot, open_index
from .wal import change_heads

FAULT_ENV = "VECTORINDEX_FAULT"
REASSIGN_NEIGHBOURS = 8
# The search breadth a reassign looks for each candidate's nearest head with:
# routing's own (engine.routing.assign).
REASSIGN_EF = 64
# What a job on an index that is not built says (it does nothing).
NOT_READY = "index not ready"


def fault(job: str, step: str) -> None:
    """Tests only: die here (SIGKILL) when VECTORINDEX_FAULT names this step."""
    if os.environ.get(FAULT_ENV) == f"{job}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Outcome:
    """What a job did, and the jobs it asks for next."""

    job: str
    detail: str
    follow_up: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    busy: bool = False  # it gave up on a lock and did nothing (JobBusy)


def _current(storage: Storage, entries: np.ndarray) -> np.ndarray:
    """Which entries are at their vector's current version (not stale, not deleted)."""
    if not len(entries):
        return np.zeros(0, bool)
    current = storage.current_versions(np.unique(entries["id"]).tolist())
    if not current:
        return np.zeros(len(entries), bool)
    known = np.array(sorted(current.items()), dtype=np.int64)
    position = np.searchsorted(known[:, 0], entries["id"])
    position[position >= len(known)] = 0
    return (known[position, 0] == entries["id"]) & (known[position, 1] == entries["version"])


def _live(storage: Storage, entries: np.ndarray) -> np.ndarray:
    """Entries at their vector's current version, one per vector."""
    entries = entries[_current(storage, entries)]
    _, first = np.unique(entries["id"], return_index=True)
    return entries[np.sort(first)]


def _pack(storage: Storage, head_id: int, entries: np.ndarray) -> list[tuple[int, int, bytes]]:
    """Posting rows of *entries* for one head, their stored bytes as they are."""
    return [(head_id, count, data) for count, data in storage.payload.pack_entries(entries)]


def _route_and_append(
    rt: Any, storage: Storage, entries: np.ndarray, versions: np.ndarray, using: str, exclude: frozenset[int] = frozenset()
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
    for _attempt in range(5):
        head = rt.current(*rt.open()) if not exclude else rt.head
        members, owners = routing.assign(
            head, vectors, replicas=options["replicas"], epsilon=options["replica_epsilon"], exclude=exclude
        )
        sizes = storage.lock_heads_shared(owners)
        if len(sizes) == len(set(owners.tolist())):
            break
    else:
        raise VectorIndexError(f"{rt.declared.name}: heads kept changing while moving {len(entries)} vectors")
    order = np.argsort(owners, kind="stable")
    members, owners = members[order], owners[order]
    rows = []
    for run in np.split(np.arange(len(members)), np.flatnonzero(np.diff(owners)) + 1):
        moved = entries[members[run]]  # a copy: the versions may be new
        moved["version"] = versions[members[run]]
        rows.extend(_pack(storage, int(owners[run[0]]), moved))
    writes.append(rt.declared, storage, rows, using, sizes=sizes)


def _lock_for_head_change(job: str, declared: Declared, using: str, head_id: int) -> Any:
    """(runtime, storage, state) with the state row and the head locked; or why not (an Outcome).

    Lock order, the same for every job and build: state row, then heads.
    """
    rt, storage, _state = open_index(declared, using)
    state = storage.lock_state(exclusive=True)
    if not state.ready:
        return Outcome(job, NOT_READY)
    if not storage.lock_head(head_id):
        return Outcome(job, f"head {head_id} is retired already")
    return rt, storage, state


# Split ------------------------------------------------------------------------


def split(declared: Declared, head_id: int, using: str = "default") -> Outcome:
    """Split a posting list over its limit into K ≥ 2 lists around new heads."""
    options = declared.options
    limit = options["posting_limit"]
    with job_transaction(using):
        locked = _lock_for_head_change("split", declared, using, head_id)
        if isinstance(locked, Outcome):
            return locked
        _rt, storage, state = locked
        fault("split", "locked")
        entries = storage.read_postings([head_id])
        live = _live(storage, entries)
        if len(live) <= limit:
            if len(live) < len(entries):
                storage.replace_postings(head_id, [(c, p) for _h, c, p in _pack(storage, head_id, live)])
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
            rows.extend(_pack(storage, int(new_ids[label]), live[members]))
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


# Reassign -----------------------------------------------------------------------


def reassign(declared: Declared, head_id: int, new_head_ids: list[int], using: str = "default") -> Outcome:
    """After a split, move the vectors whose nearest head changed (SPFresh's filter).

    Candidates are the vectors of the new lists that are farther from their new
    head than from the old one, and the vectors of the old head's neighbouring
    lists that are nearer to a new head than to their own. A candidate moves only
    if its nearest head's list does not hold it already (a replica is not
    misplaced for being a replica); a moved vector gets a new version and is
    routed again, replicas and all. The same transaction notes on the old head
    that its reassign has run (until then the scan finds it, if this job is lost).
    """
    with job_transaction(using):
        opened = open_index(declared, using)
        if not opened.ready:
            return Outcome("reassign", NOT_READY)
        rt, storage, state = opened
        outcome = _reassign(declared, head_id, new_head_ids, using, rt, storage, state)
        storage.reassigned(head_id)
    return outcome


def _reassign(
    declared: Declared, head_id: int, new_head_ids: list[int], using: str, rt: Any, storage: Storage, state: tuple
) -> Outcome:
    metric = declared.metric
    head = rt.current(storage, state)
    new_ids = [h for h in new_head_ids if h in head.alive]
    old = storage.head_vector(head_id)
    if not new_ids or old is None:
        return Outcome("reassign", "nothing to do: the split's heads are gone")
    new_vectors = prepare(storage.head_vectors(new_ids), metric)
    # Nearby lists: the heads nearest to the old head and to each new one.
    nearby = head.search(np.vstack([prepare(old[None, :], metric), new_vectors]), REASSIGN_NEIGHBOURS)[0]
    neighbours = sorted({int(h) for h in nearby.ravel()} - set(new_ids))
    owners_all, entries_all = storage.read_postings_with_owners(new_ids + neighbours)
    if not len(entries_all):
        return Outcome("reassign", "nothing to do: empty lists")
    live_mask = _current(storage, entries_all)
    owners_all, entries_all = owners_all[live_mask], entries_all[live_mask]
    vectors = storage.payload.vectors(entries_all)
    own = np.array([np.nan] * len(entries_all))
    owner_ids = sorted(set(owners_all.tolist()))
    owner_vectors = dict(zip(owner_ids, storage.head_vectors(owner_ids)))
    for h in owner_ids:
        mask = owners_all == h
        own[mask] = head_distance(metric, vectors[mask], owner_vectors[h])[:, 0]
    to_old = head_distance(metric, vectors, prepare(old[None, :], metric))[:, 0]
    to_new = head_distance(metric, vectors, new_vectors).min(axis=1)
    in_new = np.isin(owners_all, new_ids)
    candidate = (in_new & (own > to_old)) | (~in_new & (to_new < own))
    if not candidate.any():
        return Outcome("reassign", "no vector changed its nearest head")
    found, found_distance = head.search(vectors[candidate], 1, ef=REASSIGN_EF)
    best, nearer = found[:, 0], found_distance[:, 0]
    # A vector its nearest head's list holds already stays where it is, and
    # one from a neighbouring list moves only to a new head: its nearest
    # head may be a list not read here, which holds it. Nor does a vector
    # move unless the head found is nearer than every head here that holds
    # it: the graph search can miss a head (one equal to the vector, say),
    # and moving away from it would leave the vector where no query for it
    # looks.
    held = set(zip(entries_all["id"].tolist(), owners_all.tolist()))
    holding: dict[int, float] = {}
    for vector_id, distance in zip(entries_all["id"].tolist(), own.tolist()):
        holding[vector_id] = min(holding.get(vector_id, math.inf), distance)
    moves = np.array(
        [(int(i), int(b)) not in held and (new or int(b) in new_ids) and d < holding[int(i)] - 1e-6
         for i, b, new, d in zip(entries_all["id"][candidate], best, in_new[candidate], nearer.tolist())],
        dtype=bool,
    )
    moving = entries_all[candidate][moves]
    if not len(moving):
        return Outcome("reassign", "no vector changed its nearest head")
    # Only vectors still at the version read may move: a user's update since
    # then has appended the newer vector itself.
    locked = storage.lock_versions(moving["id"].tolist())
    still = np.array([locked.get(int(i)) == int(v) for i, v in zip(moving["id"], moving["version"])], bool)
    moving = moving[still]
    _, first = np.unique(moving["id"], return_index=True)
    moving = moving[first]
    storage.bump_versions(moving["id"].tolist())
    fault("reassign", "versions")
    _route_and_append(rt, storage, moving, moving["version"] + 1, using)
    fault("reassign", "appended")
    return Outcome("reassign", f"moved {counted(len(moving), 'vector')} after splitting head {head_id}")


# Merge, defragment ----------------------------------------------------------------


def merge(declared: Declared, head_id: int, using: str = "default") -> Outcome:
    """Retire a head with too few live vectors; append them to their nearest other heads."""
    with job_transaction(using):
        locked = _lock_for_head_change("merge", declared, using, head_id)
        if isinstance(locked, Outcome):
            return locked
        rt, storage, state = locked
        live = _live(storage, storage.read_postings([head_id]))
        if len(live) >= declared.options["merge_below"]:
            return Outcome("merge", f"head {head_id} has {counted(len(live), 'live entry', 'live entries')}: not merged")
        if storage.alive_head_count() <= 1:
            return Outcome("merge", "the last head is never merged")
        rt.current(storage, state)  # up to date as committed, before the change below
        change_heads(storage, state.wal_lsn, retire=[head_id])
        fault("merge", "retired")
        _route_and_append(rt, storage, live, live["version"], using, exclude=frozenset([head_id]))
        fault("merge", "appended")
    return Outcome("merge", f"head {head_id}: {counted(len(live), 'vector')} moved to other heads")


def _rewrite_live(storage: Storage, head_id: int, rows: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rewrite a locked posting list as its live entries, packed: (its entries before, the live ones)."""
    entries = storage.read_postings([head_id], rows)
    live = _live(storage, entries)
    storage.replace_postings(head_id, [(c, p) for _h, c, p in _pack(storage, head_id, live)])
    return entries, live


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
        _rt, storage, state = opened
        alive = storage.lock_head(head_id, skip_locked=True)
        if alive is None:
            return Outcome("defragment", f"head {head_id} is busy: left for a later scan")
        if not alive:
            return Outcome("defragment", f"head {head_id} is retired")
        stored = storage.list_rows(head_id)
        if stored <= above_rows:
            return Outcome("defragment", f"head {head_id}: {counted(stored, 'row')}, packed already")
        rows: dict[int, int] = {}
        entries, live = _rewrite_live(storage, head_id, rows)
        fault("defragment", "rewritten")
    # A list that grew past the limit while its split waited in the queue, and
    # was packed first, is still over the limit: no append will cross it again.
    follow_up = [("split", {"head_id": head_id})] if len(live) > declared.options["posting_limit"] else []
    return Outcome(
        "defragment", f"head {head_id}: {counted(rows.get(head_id, 0), 'row')}, {counted(len(entries), 'entry', 'entries')} -> {counted(len(live), 'live entry', 'live entries')}", follow_up
    )


# Sweep ----------------------------------------------------------------------------

# Lists a sweep reads at a time.
SWEEP_LISTS = 200
# A sweep's transaction rewrites lists until it has run this long (seconds):
# a write to a list it rewrote waits about that at most (on SQLite, where
# the transaction holds the whole database, any write does), and the
# commits, a flush to disk each, are fewer than one per list.
SWEEP_HOLD = 0.05
# The scan asks for a sweep once this share of the live vectors (and at least
# SWEEP_MIN of them) were deleted since the last sweep.
SWEEP_SHARE = 0.1
SWEEP_MIN = 64


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
    rt, storage, state = opened
    options = declared.options
    rewritten = dropped = 0
    follow_up: list[tuple[str, dict[str, Any]]] = []
    heads = sorted(storage.alive_head_ids())
    for start in range(0, len(heads), SWEEP_LISTS):
        owners, entries = storage.read_postings_with_owners(heads[start : start + SWEEP_LISTS])
        queue = sorted(set(owners[~_current(storage, entries)].tolist()))
        while queue:
            done = []
            with job_transaction(using):
                began = time.monotonic()
                while True:
                    head_id = queue.pop(0)
                    # Else busy (left for the next sweep) or retired meanwhile.
                    if storage.lock_head(head_id, skip_locked=True):
                        done.append((head_id, *_rewrite_live(storage, head_id)))
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
    forgotten, named = _forget_versions(storage, using, swept=True)
    return Outcome(
        "sweep",
        f"{counted(rewritten, 'list')} rewritten without {counted(dropped, 'dead entry', 'dead entries')}; "
        f"{counted(forgotten, 'version row')} of deleted vectors removed, {named:,} still named",
        follow_up,
    )


# Version rows locked and removed per transaction by a sweep or a collect.
FORGET_BATCH = 1_000


def _forget_versions(storage: Storage, using: str, swept: bool = False) -> tuple[int, int]:
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


# Snapshot, garbage collection, scan ---------------------------------------------


def compact(declared: Declared, using: str = "default", damaged: int | None = None) -> Outcome:
    """Snapshot the head index and truncate the WAL, once the WAL is long.

    With *damaged* (the id of a snapshot that does not verify, 0 for none at
    all), snapshot whatever the WAL's length, unless a newer snapshot has
    replaced that one already.
    """
    from .recovery import take_snapshot

    opened = open_index(declared, using)
    if not opened.ready:
        return Outcome("compact", NOT_READY)
    _rt, storage, state = opened
    length = storage.wal_length()
    if damaged is not None:
        newest = storage.newest_snapshot(state.generation)
        if (newest.pk if newest else 0) != damaged:
            return Outcome("compact", f"damaged snapshot {damaged} already replaced")
    elif length < vectorindex_settings.WAL_SNAPSHOT_ENTRIES:
        return Outcome("compact", f"WAL has {counted(length, 'entry', 'entries')}: not yet")
    snapshot = take_snapshot(declared, using)
    replaced = f" in place of damaged snapshot {damaged}" if damaged else ""
    return Outcome("compact", f"snapshot at LSN {snapshot.lsn}{replaced}; {counted(length, 'WAL entry', 'WAL entries')} dropped")


def collect(declared: Declared, using: str = "default") -> Outcome:
    """Delete retired heads and their rows once their grace period is over.

    Version rows of deleted vectors that the last sweep had to leave (a
    retired list still named them) are then removed, if nothing names them now.
    """
    with job_transaction(using):
        _rt, storage, _state = open_index(declared, using)
        before = timezone.now() - timedelta(seconds=vectorindex_settings.RETIRED_GRACE)
        expired = storage.expired_heads(before)
        storage.delete_heads(expired)
    detail = f"{counted(len(expired), 'retired head')} deleted"
    if expired and storage.swept_deleted():
        forgotten, _named = _forget_versions(storage, using)
        detail += f"; {counted(forgotten, 'version row')} of deleted vectors removed"
    return Outcome("collect", detail)


def scan(declared: Declared, using: str = "default", *, lost_after: float | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The jobs the index needs now: the safety net for triggers that were lost.

    A reassign whose split retired its head more than *lost_after* seconds
    ago (``RETIRED_GRACE`` unless given) and has not run is taken as lost
    (its worker died, or its message did) and asked for again: before
    then, it may still be waiting in a queue.
    """
    opened = open_index(declared, using)
    if not opened.ready:
        return []
    rt, storage, state = opened
    options = declared.options
    alive = storage.alive_head_ids()
    sizes = storage.posting_sizes()
    jobs: list[tuple[str, dict[str, Any]]] = []
    for head_id in sorted(alive):
        entries, rows = sizes.get(head_id, (0, 0))
        if entries > options["posting_limit"]:
            jobs.append(("split", {"head_id": head_id}))
        elif entries < options["merge_below"] and len(alive) > 1:
            jobs.append(("merge", {"head_id": head_id}))
        elif rows > options["defragment_rows"]:
            jobs.append(("defragment", {"head_id": head_id, "above_rows": options["defragment_rows"]}))
    if _sweep_due(storage):
        jobs.append(("sweep", {}))
    grace = vectorindex_settings.RETIRED_GRACE
    lost = timezone.now() - timedelta(seconds=grace if lost_after is None else lost_after)
    for head_id, new_head_ids in storage.pending_reassigns(before=lost):
        jobs.append(("reassign", {"head_id": head_id, "new_head_ids": new_head_ids}))
    damaged = damaged_snapshot(rt, storage, state.generation)
    if damaged is not None:
        jobs.append(("compact", {"damaged": damaged}))
    elif storage.wal_length() >= vectorindex_settings.WAL_SNAPSHOT_ENTRIES:
        jobs.append(("compact", {}))
    before = timezone.now() - timedelta(seconds=grace)
    if storage.expired_heads(before):
        jobs.append(("collect", {}))
    return jobs


def _sweep_due(storage: Storage) -> bool:
    """Were ``SWEEP_SHARE`` of the live vectors, and ``SWEEP_MIN`` at least, deleted since the last sweep?

    Without reading every version row (the scan also runs inline, in a
    user's request): the deleted ones are counted, and the live ones only as
    far as the answer needs, up to ten times the new deletes.
    """
    new = storage.deleted_count() - storage.swept_deleted()
    if new < SWEEP_MIN:
        return False
    # One past the most live vectors for which the sweep is due (and one more
    # for the float division).
    enough = math.floor(new / SWEEP_SHARE) + 2
    return SWEEP_SHARE * storage.live_count(at_most=enough) <= new


JOBS = {
    "split": split,
    "reassign": reassign,
    "merge": merge,
    "defragment": defragment,
    "compact": compact,
    "collect": collect,
    "sweep": sweep,
}


RETRIES = 4


def _deadlock(error: OperationalError) -> bool:
    """A deadlock the database broke off: the job can simply run again."""
    return bool(error.args) and error.args[0] == 1213


def _lock_wait(error: OperationalError) -> bool:
    """A lock wait that ran out (MySQL/MariaDB's lock wait timeout; SQLite's busy timeout)."""
    return bool(error.args) and error.args[0] == 1205 or "database is locked" in str(error)


def run(name: str, declared: Declared, using: str = "default", **arguments: Any) -> Outcome:
    """Run one job, waiting at most ``JOB_LOCK_TIMEOUT`` seconds for each lock.

    A transaction the database broke off for a deadlock is run again at once:
    jobs are idempotent, and a broken-off transaction left nothing behind. A
    lock held longer than that (a user's transaction that stays open, on
    SQLite any writer's) raises :class:`JobBusy` instead: the job runs again
    later (a Celery retry, the scan), rather than hold its worker and the
    locks it took first for the database's own timeout, 50 s on InnoDB.
    """
    seconds = vectorindex_settings.JOB_LOCK_TIMEOUT
    with lock_timeout(connections[using], seconds):
        for attempt in range(RETRIES):
            started = time.monotonic()
            try:
                return JOBS[name](declared, using=using, **arguments)
            except OperationalError as error:
                busy = _lock_wait(error)
                # SQLite says "locked" at once, without waiting, where a wait
                # would deadlock: that one is a deadlock, and runs again too.
                if busy and (time.monotonic() - started >= seconds or attempt == RETRIES - 1):
                    given = ", ".join(f"{key}={value}" for key, value in arguments.items())
                    raise JobBusy(
                        f"{name}({given}) on {declared.name}: a lock stayed held by another transaction "
                        f"for over {seconds} s (JOB_LOCK_TIMEOUT); left to run again later"
                    ) from error
                if not (busy or _deadlock(error)) or attempt == RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


@dataclass
class MaintenanceRun:
    """What :func:`maintain` did, and what the last scan still found when it stopped."""

    outcomes: list[Outcome]
    rounds: int  # scans that found work
    left: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Jobs that gave up on a lock and that the last scan still asks for.
    busy: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """The scan found nothing left to do (not: the rounds ran out, nor a lock stayed held)."""
        return not self.left and not self.busy


def maintain(declared: Declared, using: str = "default", *, rounds: int = 50, report: Any = None) -> MaintenanceRun:
    """Run jobs until the scan finds nothing to do, or *rounds* scans have run.

    Options that split and merge the same lists for ever (what system check
    vectorindex.E101 refuses) would keep finding work: a run that stops at
    *rounds* says so, with the jobs still found, rather than look finished.
    A job that gave up on a lock (:class:`JobBusy`) is reported and not tried
    again in this call: a transaction that holds its lock may stay open long.
    """
    outcomes: list[Outcome] = []
    busy: set[tuple[str, str]] = set()

    def stop(rounds_run: int, found: list[tuple[str, dict[str, Any]]], more: bool) -> MaintenanceRun:
        gave_up = [job for job in found if _key(*job) in busy]
        left = [job for job in found if _key(*job) not in busy] if more else []
        return MaintenanceRun(outcomes, rounds_run, left, gave_up)

    for done in range(rounds):
        # Every pending reassign, now: they are idempotent.
        found = scan(declared, using, lost_after=0)
        jobs = [job for job in found if _key(*job) not in busy]
        if not jobs:
            return stop(done, found, more=False)
        queue = list(jobs)
        while queue:
            name, arguments = queue.pop(0)
            try:
                outcome = run(name, declared, using, **arguments)
            except JobBusy as error:
                busy.add(_key(name, arguments))
                outcome = Outcome(name, str(error), busy=True)
            outcomes.append(outcome)
            queue.extend(outcome.follow_up)
            if report:
                report(outcome)
    return stop(rounds, scan(declared, using, lost_after=0), more=True)


def _key(name: str, arguments: dict[str, Any]) -> tuple[str, str]:
    return name, repr(sorted(arguments.items()))
