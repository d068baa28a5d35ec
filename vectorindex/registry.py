"""Where declared indexes meet their state: declarations, state rows, head indexes.

Each process keeps one :class:`~vectorindex.engine.head.HeadIndex` per index and
database alias. Before using it, a query or a write reads the index's state row
(one primary-key read): a new *generation* (a build happened) reloads the head
index from the newest snapshot and replays the WAL after it; a larger
*wal_lsn* replays just the new WAL entries. So a second process sees the head
changes made by the first. A process that fell behind a compaction (the WAL
entries it still needed were folded into a snapshot and deleted) reloads
from that snapshot instead.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connections, models, transaction

from . import jobs
from .engine import codec
from .engine.head import HeadIndex, HeadView, unpack
from .engine.postings import Payload
from .exceptions import HeadIndexError, IndexOutdated, SnapshotError
from .fields import VectorField
from .indexes import VectorIndex
from .models import IndexState, Snapshot, WalEntry
from .storage import Storage, on_own_connection


@dataclass(frozen=True)
class Declared:
    """A VectorIndex as declared on a model."""

    model: type[models.Model]
    field: VectorField
    index: VectorIndex

    @property
    def name(self) -> str:
        return self.index.name

    @property
    def metric(self) -> str:
        return self.index.distance

    @property
    def options(self) -> dict[str, Any]:
        problems = self.index.problems()
        if problems:
            raise ImproperlyConfigured(f"{self.model._meta.label}: {' '.join(problems)}")
        return self.index.options


_declared_cache: tuple[Any, dict[str, Declared]] | None = None


def declared_indexes() -> dict[str, Declared]:
    """Every VectorIndex on a VectorField of every installed concrete model, by name.

    Options that vectorindex.E101 refuses included: the index is still
    declared, and using it raises ImproperlyConfigured naming them
    (:attr:`Declared.options`) rather than leaving it behind unnoticed.
    Cached until the app registry's model list changes (Django caches
    ``get_models()`` and drops that cache whenever a model is registered).
    """
    global _declared_cache
    models_now = apps.get_models()
    if _declared_cache is not None and _declared_cache[0] is models_now:
        return _declared_cache[1]
    found = {}
    for model, index in _vector_indexes(apps):
        try:
            field = model._meta.get_field(index.field_name)
        except FieldDoesNotExist:
            continue
        if isinstance(field, VectorField):
            found[index.name] = Declared(model, field, index)
    _declared_cache = (models_now, found)
    return found


def declared_names() -> dict[str, str]:
    """The name of every VectorIndex that a model declares, valid or not, with the model's label.

    What is stored under such a name belongs to that declaration, never to
    the leftovers of a removed index, even while the declaration has an
    option the system checks refuse or names no VectorField.
    """
    return {index.name: model._meta.label for model, index in _vector_indexes(apps)}


def _vector_indexes(app_registry: Any) -> list[tuple[type[models.Model], VectorIndex]]:
    return [
        (model, index)
        for model in app_registry.get_models()
        if not model._meta.proxy
        for index in model._meta.indexes
        if isinstance(index, VectorIndex)
    ]


def indexes_of(model: type[models.Model]) -> list[Declared]:
    """The indexes over *model*'s rows: its own and its concrete parents'."""
    model = model._meta.concrete_model
    lineage = {model, *model._meta.get_parent_list()}
    return [d for d in declared_indexes().values() if d.model in lineage]


def index_for(model: type[models.Model], field_name: str, metric: str) -> Declared | None:
    for declared in indexes_of(model):
        if declared.field.name == field_name and declared.metric == metric:
            return declared
    return None


def get_declared(name: str) -> Declared:
    try:
        return declared_indexes()[name]
    except KeyError:
        known = ", ".join(sorted(declared_indexes())) or "none"
        raise LookupError(f"No VectorIndex named {name!r}; declared: {known}.") from None


def sync_states(
    using: str = "default", *, report: Callable[[str], None] | None = None, migrated: Any = None
) -> list[IndexState]:
    """Register every declared index in the state table (run after migrate).

    *migrated* holds the models as the applied migrations left them (the app
    registry of migrate's state; the installed models by default): an index
    they lack is not in the database, its model's table may be gone (``migrate
    app zero``). Its row is registered, marked not declared, and what it holds
    stays (``status`` and ``drop`` treat it as the declared index's).

    An index in the database does not take over what is stored under its
    name for another: contents left behind while no migrated model had the
    index, or stored for another model or field, are deleted and the index is
    marked not built. The migrations that rename an index, its field or its
    model update its row (vectorindex.removal, vectorindex.operations). Nor
    are contents kept that were built for other dimensions or another
    distance than the index now declares. *report* is told of each reset,
    with what to run.
    """
    states = []
    present = {index.name: (model._meta.label, index.field_name) for model, index in _vector_indexes(migrated or apps)}
    for name, item in declared_indexes().items():
        values = _row(item)
        if name not in present:
            state, _ = IndexState.objects.using(using).get_or_create(name=name, defaults={**values, "declared": False})
            states.append(state)
            continue
        values["model_label"], values["field_name"] = present[name]
        state, created = IndexState.objects.using(using).get_or_create(name=name, defaults={**values, "declared": True})
        why = None if created else reset_if_left_behind(state, *present[name], item, using)
        IndexState.objects.using(using).filter(pk=state.pk).update(**values, declared=True)
        state.refresh_from_db()
        changes = reset_if_outdated(state, item, using)
        if report is not None and why is not None:
            report(_left_behind_message(item, why))
        if report is not None and changes:
            report(_reset_message(item, changes))
        states.append(state)
    IndexState.objects.using(using).exclude(name__in=list(present)).update(declared=False)
    return states


def register(declared: Declared, using: str) -> None:
    """*declared*'s state row, if it has none yet (an index used before migrate registered it)."""
    IndexState.objects.using(using).get_or_create(name=declared.name, defaults=_row(declared))


def _row(declared: Declared) -> dict[str, Any]:
    """What a state row says of its declaration."""
    row = {
        "model_label": declared.model._meta.label,
        "field_name": declared.field.name,
        "distance": declared.metric,
        "dimensions": declared.field.dimensions,
    }
    if not declared.index.problems():  # options the checks refuse need not even be JSON
        row["options"] = declared.index.options
    return row


def reset_if_left_behind(state: IndexState, label: str, field_name: str, declared: Declared, using: str) -> str | None:
    """Delete what *state*'s row holds and mark it not built, if it is not the index on *label*'s *field_name*.

    Why, if contents were deleted; None otherwise. The row holds another
    index's contents when it was not declared (its index had left the
    database), or names another model or field.
    """
    was = f"{state.model_label}.{state.field_name}"
    if not state.declared:
        why = "was left behind by an index that had left the database"
        why += "" if was == f"{label}.{field_name}" else f" (on {was})"
    elif was != f"{label}.{field_name}":
        why = f"belonged to an index on {was}"
    else:
        return None
    storage = Storage(connections[using], state.pk, declared.field.dimensions)
    with transaction.atomic(using=using):
        storage.lock_state(exclusive=True)  # a build in progress finishes first
        state.refresh_from_db(fields=["status"])
        built = state.status != IndexState.Status.EMPTY
        storage.clear()
        # What it was built for was another index's: nothing changed "since it was built".
        storage.set_state(
            status=IndexState.Status.EMPTY, generation=0, wal_lsn=0, payload=json.dumps({}), built_at=None,
            built_dimensions=None, built_distance="", swept_deleted=0,
        )
    return why if built else None


def build_changes(declared: Declared, dimensions: int | None, distance: str) -> list[str]:
    """How *declared* differs from what its index was built for: ``["dimensions 8 → 16"]``.

    Nothing differs from an index never built (no dimensions, no distance).
    """
    changes = []
    if dimensions is not None and dimensions != declared.field.dimensions:
        changes.append(f"dimensions {dimensions} → {declared.field.dimensions}")
    if distance and distance != declared.metric:
        changes.append(f"distance {distance} → {declared.metric}")
    return changes


def reset_if_outdated(state: IndexState, declared: Declared, using: str) -> list[str]:
    """Delete the contents of *state*'s index and mark it not built, if they no longer fit *declared*.

    The changes that made it so, or [] when nothing was reset. The state row
    is locked first, so a build in progress finishes before this looks.
    """

    def changes() -> list[str]:
        if state.status == IndexState.Status.EMPTY:
            return []
        return build_changes(declared, state.built_dimensions, state.built_distance)

    if not changes():
        return []  # the usual case, without a lock
    storage = Storage(connections[using], state.pk, declared.field.dimensions)
    with transaction.atomic(using=using):
        storage.lock_state(exclusive=True)
        state.refresh_from_db(fields=["status", "built_dimensions", "built_distance"])
        found = changes()
        if not found:
            return []
        storage.clear()
        # built_dimensions and built_distance stay: they say why it is not built.
        storage.set_state(
            status=IndexState.Status.EMPTY, generation=0, wal_lsn=0, payload=json.dumps({}), built_at=None
        )
    state.refresh_from_db()
    return found


def _left_behind_message(declared: Declared, why: str) -> str:
    return (
        f"Vector index {declared.name} ({declared.model._meta.label}.{declared.field.name}): what was stored under "
        f"this name {why}; it was deleted and the index is not built (queries take the exact path). "
        f"Run `manage.py vectorindex build {declared.name}`."
    )


def _reset_message(declared: Declared, changes: list[str]) -> str:
    field = declared.field
    rows = f" once its rows store {field.dimensions}-dimensional vectors (the build names any that do not)"
    return (
        f"Vector index {declared.name} ({declared.model._meta.label}.{field.name}): {', '.join(changes)} since "
        f"it was built; its contents were deleted and it is not built (queries take the exact path). "
        f"Run `manage.py vectorindex build {declared.name}`"
        f"{rows if any(change.startswith('dimensions') for change in changes) else ''}."
    )


def outdated_message(declared: Declared, changes: list[str]) -> str:
    """What to do about an index built for another declaration than *declared*."""
    return (
        f"{declared.name} was built for another declaration ({', '.join(changes)}); rebuild it with "
        f"`manage.py vectorindex build {declared.name}` (`manage.py migrate` resets it to not built until then)."
    )


# Per-process runtime ----------------------------------------------------------


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

    @property
    def connection(self) -> Any:
        return connections[self.using]

    def open(self, *, outdated_ok: bool = False) -> tuple[Storage, tuple[str, int, int]]:
        """This index's storage on the alias, and its state: (status, generation, LSN).

        One primary-key read of the state row. The row's id is remembered; a
        state table that was emptied and refilled since (as between tests) is
        found again by name. A ready index built for other dimensions or
        another distance than declared is refused (IndexOutdated), unless
        *outdated_ok* (a build, which replaces it; status, which reports it):
        its contents are then not read.
        """
        table = self.connection.ops.quote_name(IndexState._meta.db_table)
        columns = "id, status, generation, wal_lsn, built_dimensions, built_distance"
        for _attempt in range(2):
            with self.connection.cursor() as cursor:
                if self.state_id is not None:
                    cursor.execute(f"SELECT {columns} FROM {table} WHERE id = %s AND name = %s", [self.state_id, self.declared.name])
                    row = cursor.fetchone()
                else:
                    row = None
                if row is None:
                    cursor.execute(f"SELECT {columns} FROM {table} WHERE name = %s", [self.declared.name])
                    row = cursor.fetchone()
            if row is not None:
                self.state_id = row[0]
                changes = build_changes(self.declared, row[4], row[5])
                if changes and row[1] == IndexState.Status.READY and not outdated_ok:
                    raise IndexOutdated(outdated_message(self.declared, changes))
                dimensions = self.declared.field.dimensions
                payload = Payload(dimensions) if changes else self._payload(table, row[0], row[2])
                storage = Storage(self.connection, row[0], dimensions, payload)
                return storage, (row[1], row[2], row[3])
            register(self.declared, self.using)
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

    def _payload(self, table: str, state_id: int, generation: int) -> Payload:
        """The entry layout the build of *generation* chose (read once per generation)."""
        cached = self.payload
        if cached is not None and cached[0] == generation:
            return cached[1]
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT payload FROM {table} WHERE id = %s", [state_id])
            (stored,) = cursor.fetchone()
        if isinstance(stored, str):
            stored = json.loads(stored)
        payload = Payload.from_state(self.declared.field.dimensions, stored)
        self.payload = (generation, payload)
        return payload

    def empty_head(self, capacity: int = 1024) -> HeadIndex:
        options = self.declared.options
        return HeadIndex(
            self.declared.field.dimensions,
            self.declared.metric,
            m=options["m"],
            ef_construction=options["ef_construction"],
            capacity=capacity,
        )

    def current(self, storage: Storage, state: tuple[str, int, int]) -> HeadIndex:
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

    def view(self, storage: Storage, state: tuple[str, int, int], head: HeadIndex) -> HeadIndex | HeadView | None:
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

    def newest(self, seen: tuple[str, int, int] | None = None) -> HeadIndex:
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
        if self.connection.vendor == "mysql" and self.connection.in_atomic_block:
            head = on_own_connection(self.using, lambda: self._committed(storage, state, seen))
            if head is not None:
                return head
        return self.current(storage, seen)

    def _committed(self, mine: Storage, state: tuple[str, int, int], seen: tuple[str, int, int]) -> HeadIndex | None:
        """On this thread's connection: the head index at the newest commit, if that is *seen*'s generation, at least as far, and further than *state*."""
        storage = Storage(self.connection, mine.index_id, mine.dimensions, mine.payload)
        committed = storage.read_state()
        if committed[1] != seen[1] or committed[2] < seen[2] or committed == state:
            return None
        return self.current(storage, committed)

    def storage_at(self, state: tuple[str, int, int]) -> Storage:
        """This index's storage with the entry layout of *state*'s generation, as a lock on the state row reads it."""
        with self.connection.cursor() as cursor:
            table = self.connection.ops.quote_name(IndexState._meta.db_table)
            lock = " LOCK IN SHARE MODE" if self.connection.vendor == "mysql" else ""
            cursor.execute(f"SELECT payload FROM {table} WHERE id = %s{lock}", [self.state_id])
            (stored,) = cursor.fetchone()
        payload = Payload.from_state(self.declared.field.dimensions, json.loads(stored) if isinstance(stored, str) else stored)
        with self.lock:
            self.payload = (state[1], payload)
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
    """Forget every cached head index (tests, and after a database is swapped)."""
    with _runtimes_lock:
        _runtimes.clear()
        _verified.clear()


LOAD_ATTEMPTS = 5

logger = logging.getLogger("vectorindex")

# Snapshots this process has read and found whole: (alias, id, checksum, when written).
_verified: set[tuple[str, int, str, Any]] = set()


def load(rt: Runtime, storage: Storage, generation: int, lsn: int = 0, *, strict: bool = False) -> HeadIndex:
    """The head index of *generation*, up to at least *lsn*: newest snapshot, then the WAL after it.

    A compaction between reading the snapshot and reading the WAL deletes WAL
    entries the snapshot does not hold: then the newer snapshot is read. A
    snapshot that does not verify (checksum, chunks, or its bytes) is not the
    end of the index: the head index is rebuilt from the heads table, with one
    warning, and a snapshot to replace it is asked for. *strict* raises
    instead (recovery and check report the damage).
    """
    options = rt.declared.options
    warned = False
    for _attempt in range(LOAD_ATTEMPTS):
        newest = storage.newest_snapshot(generation)
        try:
            snapshot, data = storage.latest_snapshot(generation)
            head = HeadIndex.from_bytes(
                data,
                rt.declared.field.dimensions,
                rt.declared.metric,
                m=options["m"],
                ef_construction=options["ef_construction"],
            )
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
        jobs.enqueue("compact", rt.declared.name, rt.using, dedupe=True, damaged=damaged)


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
    if len(_verified) > 10_000:  # a process that lives through many compactions
        _verified.clear()
    _verified.add(_verified_key(rt, snapshot))


def replay(head: HeadIndex, storage: Storage, lsn: int = 0) -> bool:
    """Apply the WAL entries after the head index's LSN, up to at least *lsn*.

    LSNs go up by one per entry. When the entry after the head index's LSN
    is gone (a compaction folded it into a snapshot and deleted it), nothing
    is applied and the answer is False: the caller loads the snapshot.
    """
    entries = storage.read_wal(head.lsn)
    reaches = entries[-1][0] if entries else head.lsn
    if (entries and entries[0][0] != head.lsn + 1) or reaches < lsn:
        return False
    if head.history_from is None:
        head.history_from = head.lsn
    for entry_lsn, op, head_id, vector in entries:
        head.record(entry_lsn, op == WalEntry.Op.ADD, head_id)
        if op == WalEntry.Op.ADD:
            if head_id not in head.alive:
                head.add(np.array([head_id]), codec.from_bytes(bytes(vector))[None, :])
        elif op == WalEntry.Op.REMOVE:
            head.remove(np.array([head_id]))
        head.lsn = entry_lsn
    return True


def rebuild_from_heads(rt: Runtime, storage: Storage, generation: int, lsn: int) -> HeadIndex:
    """A head index built from the heads table alone: recovery's last resort, and a compaction's fresh graph."""
    ids, vectors = storage.alive_heads()
    head = rt.empty_head(capacity=len(ids))
    head.add(ids, vectors)
    head.generation = generation
    head.lsn = lsn
    return head


__all__ = [
    "Declared",
    "Runtime",
    "damaged_snapshot",
    "build_changes",
    "declared_indexes",
    "declared_names",
    "get_declared",
    "index_for",
    "indexes_of",
    "load",
    "rebuild_from_heads",
    "replay",
    "register",
    "reset_if_left_behind",
    "reset_if_outdated",
    "reset_runtimes",
    "runtime",
    "sync_states",
]
