"""Each process's head index per index and database alias, kept current.

Before using it, a query or a write reads the index's state row (one
primary-key read): a new *generation* (a build happened) reloads the head index
from the newest snapshot and replays the WAL after it; a larger *wal_lsn*
replays just the new WAL entries. So a second process sees the head changes
made by the first. A process that fell behind a compaction (the WAL entries it
still needed were folded into a snapshot and deleted) reloads from that
snapshot instead.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, NamedTuple

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from ..engine import wal
from ..engine.calibration import Calibration
from ..engine.head import HeadIndex
from ..engine.headview import HeadView
from ..engine.postings import Payload
from ..engine.snapshot import unpack
from ..exceptions import HeadIndexError, IndexOutdated, SnapshotError
from ..models import IndexState, Snapshot
from ..storage import StateRow, Storage, dialect_for, on_own_connection, read_only
from ..storage.cache import posting_cache
from ..storage.state import FoundState, find_state, stored_payload
from . import jobs
from .registry import Declared, build_changes, outdated_message, register

# Lists a query reads by default before the index's first calibration (and
# what every query read before calibrations: right for about 300,000 vectors).
UNCALIBRATED_PROBES = 128

# The state of an index that has no state row on a replica (which may not
# register one): not built.
NOT_REGISTERED = StateRow(IndexState.Status.EMPTY, 0, 0)


class Runtime:
    """One index on one database alias, as this process sees it."""

    def __init__(self, declared: Declared, using: str) -> None:
        self.declared = declared
        self.using = using
        self.lock = threading.Lock()
        self.head: HeadIndex | None = None
        self.state_id: int | None = None
        self.payload: tuple[int, Payload] | None = None  # (generation, its payload)
        # A head index loaded as an older transaction sees it: {(generation, LSN): head}.
        self.older: dict[tuple[int, int], HeadIndex] = {}
        # The state row's calibration as last read: (as stored, decoded).
        self._calibration: tuple[Any, Calibration | None] = (None, None)

    @property
    def calibration(self) -> Calibration | None:
        """What the last calibration measured, as the last :meth:`open` read it (None: never calibrated)."""
        return self._calibration[1]

    def probes(self, recall: float | None = None) -> int:
        """How many lists a query reads by default: declared, else calibrated for *recall* (the declared target)."""
        options = self.declared.options
        calibration = self.calibration
        if recall is None:
            if options["probes"] is not None:
                return options["probes"]
            recall = options["recall"]
        if calibration is None:
            return options["probes"] or UNCALIBRATED_PROBES
        return calibration.probes_for(recall)

    def reach_probes(self) -> int:
        """Lists a query for a row's own vector reads, that must hold it (check's reachability, repair's routing).

        The declared probes, or 128: not the calibrated ones, which trade
        the last few percent of recall for speed and may leave a row that is
        in its second-nearest list out of a query for itself.
        """
        return self.declared.options["probes"] or UNCALIBRATED_PROBES

    def _remember_calibration(self, stored: Any) -> None:
        if stored != self._calibration[0]:
            decoded = json.loads(stored) if isinstance(stored, str) else stored
            self._calibration = (stored, Calibration.from_state(decoded))

    @property
    def connection(self) -> Any:
        return connections[self.using]

    def open(self, *, outdated_ok: bool = False, found: FoundState | None = None) -> tuple[Storage, StateRow]:
        """This index's storage on the alias, and its state: (status, generation, LSN).

        One primary-key read of the state row. The row's id is remembered; a
        state table that was emptied and refilled since (as between tests) is
        found again by name. A ready index built for other dimensions or
        another distance than declared is refused (IndexOutdated), unless
        *outdated_ok* (a build, which replaces it; status, which reports it):
        its contents are then not read. *found* is the state row as read
        already, with other statements (a query's first round trip).
        """
        for _attempt in range(2):
            if found is None:
                found = find_state(self.connection, self.declared.name, self.state_id)
            if found is not None:
                self.state_id = found.id
                self._remember_calibration(found.calibration)
                changes = build_changes(self.declared, found.built_dimensions, found.built_distance)
                if changes and found.row.ready and not outdated_ok:
                    raise IndexOutdated(outdated_message(self.declared, changes))
                dimensions = self.declared.field.dimensions
                payload = Payload(dimensions) if changes else self._payload(found.id, found.row.generation)
                return Storage(self.connection, found.id, dimensions, payload), found.row
            if read_only(self.using):
                # A replica the state row has not reached (or an index never
                # built): not ready, and nothing is written here.
                payload = Payload(self.declared.field.dimensions)
                return Storage(self.connection, 0, self.declared.field.dimensions, payload), NOT_REGISTERED
            register(self.declared, self.using)
            found = None
        raise ImproperlyConfigured(f"The vector index {self.declared.name!r} could not be registered.")

    def changes_since_build(self) -> list[str]:
        """How the declaration differs from what the index was last built for (one read)."""
        built = (
            IndexState.objects.using(self.using)
            .filter(name=self.declared.name)
            .values_list("built_dimensions", "built_distance")
            .first()
        )
        return build_changes(self.declared, *built) if built else []

    def storage_for(self, head: HeadIndex | None) -> Storage | None:
        """This index's storage for *head*'s generation, with no read of the state row.

        None when this process has not opened the index at that generation
        (its row id and entry layout are then unknown).
        """
        cached = self.payload
        if head is None or self.state_id is None or cached is None or cached[0] != head.generation:
            return None
        return Storage(self.connection, self.state_id, self.declared.field.dimensions, cached[1])

    def _payload(self, state_id: int, generation: int) -> Payload:
        """The entry layout the build of *generation* chose (read once per generation)."""
        cached = self.payload
        if cached is not None and cached[0] == generation:
            return cached[1]
        payload = Payload.from_state(self.declared.field.dimensions, stored_payload(self.connection, state_id))
        self.payload = (generation, payload)
        return payload

    def head_settings(self) -> dict[str, Any]:
        """What every head index of this declaration is made with: new (:meth:`new_head`), or read from a snapshot (:func:`load`)."""
        options = self.declared.options
        return {
            "dimensions": self.declared.field.dimensions,
            "metric": self.declared.metric,
            "m": options["m"],
            "ef_construction": options["ef_construction"],
        }

    def new_head(self, ids: np.ndarray, vectors: np.ndarray, *, generation: int = 0, lsn: int = 0) -> HeadIndex:
        """A head index of these heads alone, as of *generation* and *lsn* (a build's, or one rebuilt from the heads table)."""
        head = HeadIndex(**self.head_settings(), capacity=len(ids))
        head.add(ids, vectors)
        head.generation = generation
        head.lsn = lsn
        return head

    def current(self, storage: Storage, state: StateRow) -> HeadIndex:
        """The head index, brought up to the state row's generation and LSN."""
        _status, generation, lsn = state
        with self.lock:
            head = self.head
            if head is None or head.generation != generation:
                head = load(self, storage, generation, lsn)
            elif head.lsn < lsn and not replay(head, storage, lsn):
                head = load(self, storage, generation, lsn)  # compacted past this head's LSN
            self.head = head
            return head

    def view(self, storage: Storage, state: StateRow, head: HeadIndex) -> HeadIndex | HeadView | None:
        """How *head* stood at the state row's LSN, when this connection's transaction may not see past it.

        None outside a transaction (every statement sees the newest commits,
        which *head* reflects at least) or when *head* is not ahead of that
        LSN. A query inside a transaction probes the heads both of the view
        and of *head*: under REPEATABLE READ (and SQLite's WAL mode) the
        transaction reads the lists as of its LSN, under READ COMMITTED as of
        now, and which one holds cannot be told from here.
        """
        _status, generation, lsn = state
        if not self.connection.in_atomic_block or head.generation != generation or head.lsn <= lsn:
            return None
        changes = head.changes_since(lsn)
        if changes is None:
            # This process loaded a snapshot newer than the transaction: load
            # the head index as the transaction sees it (kept for the next).
            key = (generation, lsn)
            with self.lock:
                older = self.older.get(key)
            if older is None:
                older = load(self, storage, generation, lsn)
                with self.lock:
                    self.older = {key: older}
            return older
        hidden, restored = changes
        ids, vectors = storage.head_rows(sorted(restored))
        return HeadView(head, lsn, hidden, ids, vectors)

    def newest(self, seen: StateRow | None = None) -> HeadIndex:
        """The head index up to the newest commit, whatever this connection's transaction sees.

        A writer that routed to a head retired meanwhile catches up with
        this. Under REPEATABLE READ, a transaction reads the state row and
        the WAL as they were when it began, and would find the same old
        state again and again: on MySQL/MariaDB inside a transaction, the
        state row is also read on a connection of the process's own, in
        autocommit mode, and where it is further on in the same generation,
        the WAL is replayed from there. Otherwise (this transaction's own
        build or head changes, not committed yet, are newer than anything
        committed) this connection's view is the newest. *seen* is the state
        row as a lock read it (a writer that waited for a build): where this
        transaction's own reads do not reach that far, the head index of that
        generation comes from the other connection. (SQLite has one writer at
        a time: a writing transaction sees every commit before it.)
        """
        storage, state = self.open()
        seen = seen or state
        if dialect_for(self.connection).writers_read_a_snapshot and self.connection.in_atomic_block:
            head = on_own_connection(self.using, lambda: self._committed(storage, state, seen))
            if head is not None:
                return head
        return self.current(storage, seen)

    def _committed(self, mine: Storage, state: StateRow, seen: StateRow) -> HeadIndex | None:
        """On this thread's connection: the head index at the newest commit, if that is *seen*'s generation, at least as far, and further than *state*."""
        storage = Storage(self.connection, mine.index_id, mine.dimensions, mine.payload)
        committed = storage.read_state()
        if committed.generation != seen.generation or committed.wal_lsn < seen.wal_lsn or committed == state:
            return None
        return self.current(storage, committed)

    def storage_at(self, state: StateRow) -> Storage:
        """This index's storage with the entry layout of *state*'s generation, as a lock on the state row reads it."""
        stored = stored_payload(self.connection, self.state_id, share_lock=True)
        payload = Payload.from_state(self.declared.field.dimensions, stored)
        with self.lock:
            self.payload = (state.generation, payload)
        return Storage(self.connection, self.state_id, self.declared.field.dimensions, payload)

    def forget(self) -> None:
        with self.lock:
            self.head = None


_runtimes: dict[tuple[str, str], Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime(declared: Declared, using: str) -> Runtime:
    key = (using, declared.name)
    with _runtimes_lock:
        found = _runtimes.get(key)
        if found is None or found.declared != declared:
            found = _runtimes[key] = Runtime(declared, using)
        return found


def reset_runtimes() -> None:
    """Forget every cached head index and posting row (tests, and after a database is swapped)."""
    with _runtimes_lock:
        _runtimes.clear()
        _verified.clear()
    posting_cache.clear()


class Opened(NamedTuple):
    """An index opened on one alias: this process's runtime of it, its storage, and its state row as read."""

    runtime: Runtime
    storage: Storage
    state: StateRow

    @property
    def ready(self) -> bool:
        """Built, and answering: writes append to it, queries probe it, jobs run on it."""
        return self.state.ready


def open_index(declared: Declared, using: str, *, outdated_ok: bool = False) -> Opened:
    """*declared*'s index on *using*, with one read of its state row (:meth:`Runtime.open`).

    Every path that uses an index opens it here, and says what an index that
    is not ready means to it: nothing to write (writes), the exact path (a
    query), nothing to do (a job, the scan), an error to report (recovery).
    """
    rt = runtime(declared, using)
    return Opened(rt, *rt.open(outdated_ok=outdated_ok))


# Times a load starts again when a compaction deleted the WAL entries after
# the snapshot it read (or replaced the snapshot while it was read): the next
# try reads the newer snapshot, so a few only run out while compactions
# follow each other without pause (SnapshotError).
LOAD_ATTEMPTS = 5

logger = logging.getLogger("vectorindex")

# Snapshots this process has read and found whole: (alias, id, checksum, when written).
_verified: set[tuple[str, int, str, Any]] = set()
# Snapshots remembered so at most, for a process that lives through many
# compactions; past that it forgets them all and checks the next it reads.
VERIFIED_KEPT = 10_000


def load(rt: Runtime, storage: Storage, generation: int, lsn: int = 0, *, strict: bool = False) -> HeadIndex:
    """The head index of *generation*, up to at least *lsn*: newest snapshot, then the WAL after it.

    A compaction between reading the snapshot and reading the WAL deletes WAL
    entries the snapshot does not hold: then the newer snapshot is read. A
    snapshot that does not verify (checksum, chunks, or its bytes) is not the
    end of the index: the head index is rebuilt from the heads table, with one
    warning, and a snapshot to replace it is asked for. *strict* raises
    instead (recovery and check report the damage).
    """
    warned = False
    for _attempt in range(LOAD_ATTEMPTS):
        newest = storage.newest_snapshot(generation)
        try:
            snapshot, data = storage.latest_snapshot(generation)
            head = HeadIndex.from_bytes(data, **rt.head_settings())
            head.lsn = snapshot.lsn
            _remember_verified(rt, snapshot)
        except (SnapshotError, HeadIndexError) as error:
            if strict:
                raise
            if _snapshot_id(storage.newest_snapshot(generation)) != _snapshot_id(newest):
                continue  # replaced (and the one read deleted) while it was read
            if not warned:
                logger.warning(
                    "%s: the head index is rebuilt from the heads table until a new snapshot replaces a damaged one: %s",
                    rt.declared.name,
                    error,
                )
                warned = True
            head = _rebuild_for_damaged(rt, storage, generation, _snapshot_id(newest))
        head.generation = generation
        if replay(head, storage, lsn):
            return head
    raise SnapshotError(f"{rt.declared.name}: the WAL kept being compacted while the head index loaded")


def _rebuild_for_damaged(rt: Runtime, storage: Storage, generation: int, damaged: int) -> HeadIndex:
    """The head index from the heads table, labelled with an LSN read before the heads were.

    Head changes committed between the two reads are then both in the heads
    read and in the WAL after that LSN, and replaying them again is harmless:
    an ADD of an alive head is skipped and a REMOVE of a missing one does nothing.
    """
    _status, _generation, before = storage.read_state()
    head = rebuild_from_heads(rt, storage, generation, before)
    _replace_snapshot(rt, damaged)
    return head


def _replace_snapshot(rt: Runtime, damaged: int) -> None:
    """Ask for a snapshot in place of *damaged* (0: none was found), where that cannot deadlock.

    The caller holds the runtime's lock, which the snapshot job takes too: a
    job run inline right now (autocommit) would wait for it, and the
    snapshot's lock on the state row could wait for a job waiting for it. After
    the caller's commit, or on a broker, it runs free of both; otherwise the
    maintenance scan finds the damaged snapshot (:func:`damaged_snapshot`).
    """
    if rt.connection.in_atomic_block or jobs.mode() == "celery":
        jobs.enqueue_for_read("compact", rt.declared.name, rt.using, damaged=damaged)


def damaged_snapshot(rt: Runtime, storage: Storage, generation: int) -> int | None:
    """The id of *generation*'s newest snapshot if it does not verify (0 when there is none), else None.

    Each snapshot is read and checked once per process (the maintenance scan
    asks every time it runs); one this process loaded counts as checked.
    """
    newest = storage.newest_snapshot(generation)
    if newest is None:
        return 0
    if _verified_key(rt, newest) in _verified:
        return None
    try:
        snapshot, data = storage.latest_snapshot(generation)
        unpack(data, rt.declared.field.dimensions)
    except (SnapshotError, HeadIndexError):
        return newest.pk
    _remember_verified(rt, snapshot)
    return None


def _snapshot_id(snapshot: Snapshot | None) -> int:
    return snapshot.pk if snapshot is not None else 0


def _verified_key(rt: Runtime, snapshot: Snapshot) -> tuple[str, int, str, Any]:
    return (rt.using, snapshot.pk, snapshot.checksum, snapshot.created_at)


def _remember_verified(rt: Runtime, snapshot: Snapshot) -> None:
    if len(_verified) > VERIFIED_KEPT:
        _verified.clear()
    _verified.add(_verified_key(rt, snapshot))


def replay(head: HeadIndex, storage: Storage, lsn: int = 0) -> bool:
    """Apply the WAL entries after the head index's LSN, up to at least *lsn*.

    LSNs go up by one per entry. When the entry after the head index's LSN
    is gone (a compaction folded it into a snapshot and deleted it), nothing
    is applied and the answer is False: the caller loads the snapshot.
    """
    return wal.replay(head, storage.read_wal(head.lsn), lsn)


def rebuild_from_heads(rt: Runtime, storage: Storage, generation: int, lsn: int) -> HeadIndex:
    """A head index built from the heads table alone: recovery's last resort, and a compaction's fresh graph."""
    ids, vectors = storage.alive_heads()
    return rt.new_head(ids, vectors, generation=generation, lsn=lsn)

