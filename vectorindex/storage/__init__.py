"""The narrow interface between the engine and the database.

Plain SQL on a Django connection, inside whatever transaction that connection is
in: the caller's, for user writes and queries; the job's, for builds and
maintenance. The one exception: a query outside any transaction may spread its
reads over reader threads' own connections (:func:`read_by_keys`), which in
autocommit mode see what the query's connection would. Locks, per backend:

* MySQL/MariaDB: ``SELECT … FOR UPDATE`` and ``SELECT … LOCK IN SHARE MODE``
  (MariaDB 10.11 rejects MySQL 8's ``FOR SHARE``).
* SQLite has one writer at a time: taking a lock means starting to write, which
  an exclusive lock does with a no-op UPDATE; shared row locks are not needed,
  since no other writer can run until this transaction ends.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
from django.db import OperationalError, connections, transaction
from django.utils import timezone

from ..conf import vectorindex_settings
from ..engine import codec, postings
from ..exceptions import SnapshotError
from ..models import Head, IndexState, Posting, Snapshot, SnapshotChunk, Version, WalEntry
from .backends import check_supported


class StateRow(NamedTuple):
    """An index's state row (``IndexState``) as a query or a job reads it."""

    status: str
    generation: int  # which build: snapshots and head rows of another generation are not this index's
    wal_lsn: int  # the last head change logged; a head index has replayed up to it

    @property
    def ready(self) -> bool:
        return self.status == IndexState.Status.READY


IN_BATCH = 5_000  # ids per IN (...) list
SNAPSHOT_CHUNK = 1 << 20
# What one reader connection takes at least: posting lists (tens of kilobytes
# each), or small rows (versions, the vectors of re-ranked rows).
LISTS_PER_READER = 8
ROWS_PER_READER = 16
# An append's INSERT statements are cut at this length: well under the
# smallest max_allowed_packet a server is likely to keep (MySQL's once-default 1 MB).
APPEND_STATEMENT_BYTES = 512 * 1024


def _batches(items: Sequence, size: int = IN_BATCH) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_by_keys(
    connection: Any,
    sql: Callable[[int], str],
    params: Sequence,
    keys: Sequence[int],
    *,
    kind: str,
    per_reader: int,
    batch: int = IN_BATCH,
) -> list[tuple]:
    """Every row of ``sql(n)`` with *params* and then *n* of *keys* (at most *batch*) as parameters.

    Outside a transaction on MySQL/MariaDB, reads that wait on the disk are
    spread over up to ``QUERY_READERS`` connections read at once, at least
    *per_reader* keys each: InnoDB reads one statement's pages one after
    another, so several statements keep the disk busy when the rows are not
    in the buffer pool. Rows in the buffer pool are read faster on one
    connection (reader threads then only contend for the cores and the GIL),
    so this process keeps the recent time a key of each *kind* took, and
    spreads that kind's reads only while it is above
    ``QUERY_READERS_ABOVE_US``. In autocommit mode every statement sees the
    latest commits anyway, so reading on other connections sees what this
    one would. This connection reads one share itself. Inside a transaction
    everything is read here, where the transaction's own writes are visible.
    """
    keys = list(keys)
    readers = min(vectorindex_settings.QUERY_READERS, len(keys) // per_reader)
    if readers < 2 or connection.vendor != "mysql" or connection.in_atomic_block:
        return _read(connection, sql, params, keys, batch)
    above = vectorindex_settings.QUERY_READERS_ABOVE_US
    pace = _paces.setdefault((connection.alias, kind), [0.0, 0])
    pace[1] += 1
    if above and (pace[0] * 1e6 <= above or pace[1] % SAMPLE_EVERY == 0):
        # Timed on one connection alone: spread, the reads would share the
        # cores (and the GIL) and look slower than they are.
        started = time.perf_counter()
        rows = _read(connection, sql, params, keys, batch)
        seconds = (time.perf_counter() - started) / len(keys)
        pace[0] = 0.8 * pace[0] + 0.2 * seconds if pace[0] else seconds
        return rows
    groups = [keys[i::readers] for i in range(readers)]
    pool = _executor(readers - 1)
    shares = [
        pool.submit(_read_on_thread_connection, connection.alias, sql, params, group, batch)
        for group in groups[1:]
    ]
    rows = _read(connection, sql, params, groups[0], batch)
    return rows + [row for share in shares for row in share.result()]


# (database alias, kind of read) -> [recent seconds a key took on one
# connection (a moving average), reads so far]. While reads are spread, one
# in SAMPLE_EVERY is still read on one connection, to notice when the rows
# are back in the buffer pool. Threads of one process update it without a
# lock: a lost update only leaves an average a read behind.
_paces: dict[tuple[str, str], list] = {}
SAMPLE_EVERY = 16


def _read(connection: Any, sql: Callable[[int], str], params: Sequence, keys: Sequence[int], batch: int) -> list[tuple]:
    rows: list[tuple] = []
    for part in _batches(keys, batch):
        with connection.cursor() as cursor:
            cursor.execute(sql(len(part)), [*params, *part])
            rows.extend(cursor.fetchall())
    return rows


_readers: tuple[int, ThreadPoolExecutor] | None = None
_readers_lock = threading.Lock()


def _executor(size: int) -> ThreadPoolExecutor:
    """The process's reader threads: each keeps one connection per database alias."""
    global _readers
    with _readers_lock:
        if _readers is None or _readers[0] < size:
            _readers = (size, ThreadPoolExecutor(max_workers=size, thread_name_prefix="vectorindex-reader"))
        return _readers[1]


def on_own_connection(alias: str, work: Callable[[], Any]) -> Any:
    """*work*'s result, run on a reader thread, where ``connections[alias]`` is that thread's own, in autocommit mode."""
    return _executor(1).submit(_on_thread_connection, alias, work).result()


def _read_on_thread_connection(alias: str, *read: Any) -> list[tuple]:
    return _on_thread_connection(alias, lambda: _read(connections[alias], *read))


def _on_thread_connection(alias: str, work: Callable[[], Any]) -> Any:
    for attempt in range(2):
        try:
            return work()
        except OperationalError:
            # The server closed the idle connection (wait_timeout): a new one, once.
            connections[alias].close()
            if attempt:
                raise
    raise AssertionError("unreachable")


@contextmanager
def job_transaction(using: str) -> Iterable[None]:
    """The transaction of a build or a maintenance job: READ COMMITTED on MySQL/MariaDB, whatever the connection's default.

    A job waits for locks (the state row, a head's row) and must then read
    what the transactions it waited for committed. Under REPEATABLE READ its
    plain reads would show the tables as of its first read, before the
    wait: a split would copy a list as it stood before a merge appended to
    it, and retire the head with the merge's vectors behind.
    """
    connection = connections[using]
    if connection.vendor == "mysql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:  # applies to the next transaction only
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    with transaction.atomic(using=using):
        yield


class Storage:
    """One index's rows, through one database connection."""

    def __init__(self, connection: Any, index_id: int, dimensions: int, payload: postings.Payload | None = None) -> None:
        check_supported(connection)  # its locks are SQLite's or MySQL's, nobody else's
        self.connection = connection
        self.index_id = index_id
        self.dimensions = dimensions
        self.payload = payload or postings.Payload(dimensions)
        self.mysql = connection.vendor == "mysql"
        # Several statements in one round trip (append_one): mysqlclient
        # allows them unless the connection's OPTIONS turn them off.
        self.batches = self.mysql and connection.settings_dict.get("OPTIONS", {}).get("multi_statements", True)
        quote = connection.ops.quote_name
        self.state_table = quote(IndexState._meta.db_table)
        self.head_table = quote(Head._meta.db_table)
        self.posting_table = quote(Posting._meta.db_table)
        self.version_table = quote(Version._meta.db_table)
        self.wal_table = quote(WalEntry._meta.db_table)

    def _execute(self, sql: str, params: Sequence | None = ()) -> list[tuple]:
        """Rows *sql* returns; with ``params=None`` the text is sent as it is (no ``%`` formatting)."""
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def _executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:
            with self.connection.cursor() as cursor:
                cursor.executemany(sql, rows)

    @staticmethod
    def _marks(count: int) -> str:
        return ", ".join(["%s"] * count)

    def _binary(self, data: bytes) -> Any:
        return self.connection.Database.Binary(data)

    # The state row -------------------------------------------------------------

    def read_state(self) -> StateRow:
        """(status, generation, wal_lsn): one primary-key read, no lock."""
        rows = self._execute(
            f"SELECT status, generation, wal_lsn FROM {self.state_table} WHERE id = %s",
            [self.index_id],
        )
        return StateRow(*rows[0])

    def lock_state(self, exclusive: bool) -> StateRow:
        """Lock the state row and read it (exclusive: head-changing jobs and builds)."""
        if self.mysql:
            mode = "FOR UPDATE" if exclusive else "LOCK IN SHARE MODE"
            rows = self._execute(
                f"SELECT status, generation, wal_lsn FROM {self.state_table} WHERE id = %s {mode}",
                [self.index_id],
            )
            return StateRow(*rows[0])
        if exclusive:
            self._execute(f"UPDATE {self.state_table} SET wal_lsn = wal_lsn WHERE id = %s", [self.index_id])
        return self.read_state()

    def swept_deleted(self) -> int:
        """Deleted vectors' version rows the last sweep left."""
        return self._execute(f"SELECT swept_deleted FROM {self.state_table} WHERE id = %s", [self.index_id])[0][0]

    def set_state(self, **values: Any) -> None:
        columns = ", ".join(f"{self.connection.ops.quote_name(k)} = %s" for k in values)
        self._execute(
            f"UPDATE {self.state_table} SET {columns} WHERE id = %s",
            [*values.values(), self.index_id],
        )

    # Heads ---------------------------------------------------------------------

    def insert_heads(self, vectors: np.ndarray, lsn: int) -> np.ndarray:
        heads = Head.objects.using(self.connection.alias).bulk_create(
            [Head(index_id=self.index_id, vector=codec.to_bytes(v), created_lsn=lsn) for v in vectors],
            batch_size=1_000,
        )
        return np.array([head.pk for head in heads], dtype=np.int64)

    def retire_head(self, head_id: int, lsn: int) -> None:
        self._execute(
            f"UPDATE {self.head_table} SET alive = %s, retired_lsn = %s, retired_at = %s "
            "WHERE id = %s AND index_id = %s",
            [False, lsn, timezone.now(), head_id, self.index_id],
        )

    def lock_head(self, head_id: int, skip_locked: bool = False) -> bool | None:
        """Lock one head's row exclusively (appenders wait); is it alive?

        With *skip_locked*, a head some transaction holds now is not waited
        for: None. (SQLite has no row locks to skip.)
        """
        if self.mysql:
            rows = self._execute(
                f"SELECT alive FROM {self.head_table} FORCE INDEX (PRIMARY) WHERE id = %s AND index_id = %s "
                "FOR UPDATE" + (" SKIP LOCKED" if skip_locked else ""),
                [head_id, self.index_id],
            )
            if skip_locked and not rows:
                exists = self._execute(f"SELECT 1 FROM {self.head_table} WHERE id = %s", [head_id])
                return None if exists else False
        else:
            self._execute(f"UPDATE {self.head_table} SET alive = alive WHERE id = %s", [head_id])
            rows = self._execute(
                f"SELECT alive FROM {self.head_table} WHERE id = %s AND index_id = %s", [head_id, self.index_id]
            )
        return bool(rows and rows[0][0])

    def expired_heads(self, before: Any) -> list[int]:
        """Retired heads whose grace period ended before *before*, and whose reassign has run."""
        rows = self._execute(
            f"SELECT id FROM {self.head_table} WHERE index_id = %s AND alive = %s AND retired_at < %s "
            "AND split_into IS NULL",
            [self.index_id, False, before],
        )
        return [row[0] for row in rows]

    def mark_split(self, head_id: int, new_head_ids: Sequence[int]) -> None:
        """Note on a retired head the heads its split made: its reassign is to do."""
        self._execute(
            f"UPDATE {self.head_table} SET split_into = %s WHERE id = %s AND index_id = %s",
            [json.dumps([int(h) for h in new_head_ids]), head_id, self.index_id],
        )

    def reassigned(self, head_id: int) -> None:
        """The reassign after *head_id*'s split has run."""
        self._execute(
            f"UPDATE {self.head_table} SET split_into = NULL WHERE id = %s AND index_id = %s", [head_id, self.index_id]
        )

    def pending_reassigns(self, before: Any = None) -> list[tuple[int, list[int]]]:
        """(retired head, the heads its split made) of every split whose reassign has not run.

        With *before*, only splits retired before then.
        """
        sql = f"SELECT id, split_into FROM {self.head_table} WHERE index_id = %s AND split_into IS NOT NULL"
        params: list[Any] = [self.index_id]
        if before is not None:
            sql += " AND retired_at < %s"
            params.append(before)
        return [(head_id, json.loads(ids) if isinstance(ids, str) else ids) for head_id, ids in self._execute(sql, params)]

    def delete_heads(self, head_ids: Sequence[int]) -> None:
        """A retired head and its posting rows, gone for good."""
        for batch in _batches([int(h) for h in head_ids], 500):
            marks = self._marks(len(batch))
            self._execute(
                f"DELETE FROM {self.posting_table} WHERE index_id = %s AND head_id IN ({marks})",
                [self.index_id, *batch],
            )
            self._execute(
                f"DELETE FROM {self.head_table} WHERE index_id = %s AND alive = %s AND id IN ({marks})",
                [self.index_id, False, *batch],
            )

    def replace_postings(self, head_id: int, rows: Sequence[tuple[int, bytes]]) -> None:
        """Rewrite one posting list as *rows* (count, payload): defragmenting."""
        self._execute(
            f"DELETE FROM {self.posting_table} WHERE index_id = %s AND head_id = %s", [self.index_id, head_id]
        )
        self.append([(head_id, count, payload) for count, payload in rows])

    def bump_versions(self, vector_ids: Sequence[int]) -> None:
        for batch in _batches([int(i) for i in vector_ids]):
            self._execute(
                f"UPDATE {self.version_table} SET version = version + 1 "
                f"WHERE index_id = %s AND vector_id IN ({self._marks(len(batch))})",
                [self.index_id, *batch],
            )

    def lock_heads_shared(self, head_ids: Iterable[int]) -> dict[int, int]:
        """Share-lock these heads' rows; those still alive, with their lists' entries (DESIGN §3).

        On InnoDB the lock must be on the clustered (primary key) record, the
        one a split or merge locks exclusively: a locking read answered from a
        covering secondary index (``(index_id, alive)`` holds both columns
        asked for) would lock only that index's records and never conflict.
        The entries come from a subquery, a plain read that locks no posting
        row (so that an append can tell whether it takes a list over its
        limit without another round trip).
        """
        ids = sorted({int(i) for i in head_ids})
        alive: dict[int, int] = {}
        for batch in _batches(ids):
            rows = self._execute(self._lock_heads_sql(len(batch)), [self.index_id, *batch])
            alive.update(self._alive_sizes(rows))
        return alive

    def _lock_heads_sql(self, count: int, condition: str = "") -> str:
        """lock_heads_shared's statement for *count* head ids: (id, alive, entries) rows."""
        size = (
            f"(SELECT COALESCE(SUM(p.count), 0) FROM {self.posting_table} p "
            f"WHERE p.index_id = %s AND p.head_id = h.id)"
        )
        where = f"h.id IN ({self._marks(count)}){condition}"
        if self.mysql:
            return (
                f"SELECT h.id, h.alive, {size} FROM {self.head_table} h FORCE INDEX (PRIMARY) "
                f"WHERE {where} LOCK IN SHARE MODE"
            )
        return f"SELECT h.id, h.alive, {size} FROM {self.head_table} h WHERE {where}"

    @staticmethod
    def _alive_sizes(rows: Iterable[tuple]) -> Iterable[tuple[int, int]]:
        return ((head_id, int(entries)) for head_id, is_alive, entries in rows if is_alive)

    def append_one(
        self, name: str, generation: int, lsn: int, vector_id: int, head_ids: Sequence[int], count: int, payload: bytes
    ) -> tuple[int, dict[int, int]] | None:
        """Index one new vector in one round trip, while the head index is *generation* at *lsn* (MySQL).

        What ``lock_heads_shared``, ``next_versions`` and ``append`` do in
        three round trips, as one batch of statements, each guarded by one
        check of the state row: is it still this index, ready, of
        *generation* and at *lsn* (the head index the vector was routed on)?
        When it is not, nothing is locked or written: None. Otherwise the heads
        are share-locked, the vector gets its version, and the entry —
        *payload*, encoded with version 1, the version of a vector new to the
        index — is appended to every alive head of *head_ids*. Returns (the
        version given, alive heads with their entries before the append); an
        entry whose version is not the one given is stale, as a later
        version's entries make any older one, and searches skip it.
        """
        ids = sorted({int(i) for i in head_ids})
        ok = "@vectorindex_ok = 1"
        returning = self.connection.features.can_return_rows_from_bulk_insert
        statements = [
            (
                # SELECT … INTO, not SET @… = (SELECT …): InnoDB reads a SET's
                # subquery with a shared lock on the state row, held to the end
                # of the user's transaction, and every snapshot and split
                # (which lock that row exclusively) waited for it. A plain read
                # is enough: the other paths read the state row without a lock
                # too, and what the check guards against is caught anyway — a
                # head retired by a change that commits after this read shows
                # in the head locks below (the write then routes again), and a
                # new head that this routing did not know is the same race as
                # for a write that committed just before the change.
                f"SELECT COUNT(*) FROM {self.state_table} WHERE id = %s AND name = %s "
                "AND status = %s AND generation = %s AND wal_lsn = %s INTO @vectorindex_ok",
                [self.index_id, name, IndexState.Status.READY, generation, lsn],
            ),
            (self._lock_heads_sql(len(ids), f" AND {ok}"), [self.index_id, *ids]),
            (
                f"INSERT INTO {self.version_table} (index_id, vector_id, version, deleted) "
                f"SELECT %s, %s, 1, 0 FROM DUAL WHERE {ok} "
                "ON DUPLICATE KEY UPDATE version = version + 1, deleted = 0" + (" RETURNING version" if returning else ""),
                [self.index_id, vector_id],
            ),
        ]
        if not returning:  # MySQL: read it back
            statements.append((
                f"SELECT version FROM {self.version_table} WHERE index_id = %s AND vector_id = %s AND {ok}",
                [self.index_id, vector_id],
            ))
        statements.append(
            (
                f"INSERT INTO {self.posting_table} (index_id, head_id, count, payload) "
                f"SELECT %s, h.id, %s, X'{bytes(payload).hex()}' FROM {self.head_table} h "
                f"WHERE h.id IN ({self._marks(len(ids))}) AND h.alive AND {ok}",
                [self.index_id, count, *ids],
            )
        )
        results = self._execute_batch(statements)
        versions = results[3 if not returning else 2]
        if not versions:
            return None
        return versions[0][0], dict(self._alive_sizes(results[1]))

    def _execute_batch(self, statements: Sequence[tuple[str, Sequence]]) -> list[list[tuple]]:
        """Each statement's rows, the statements sent as one text: one round trip (``self.batches``)."""
        sql = ";\n".join(text for text, _params in statements)
        params = [value for _text, values in statements for value in values]
        results: list[list[tuple]] = []
        with self.connection.cursor() as cursor, self.connection.wrap_database_errors:
            cursor.execute(sql, params)
            while True:
                results.append(list(cursor.fetchall()) if cursor.description else [])
                if not cursor.nextset():
                    break
        return results

    def lock_all_heads(self) -> None:
        """Exclusively lock every alive head (a rebuild waits for in-flight appends)."""
        if self.mysql:
            # Through the primary key, like every head lock (see lock_heads_shared).
            self._execute(
                f"SELECT id, alive FROM {self.head_table} FORCE INDEX (PRIMARY) "
                "WHERE index_id = %s AND alive = %s FOR UPDATE",
                [self.index_id, True],
            )

    def alive_head_ids(self) -> set[int]:
        rows = self._execute(
            f"SELECT id FROM {self.head_table} WHERE index_id = %s AND alive = %s", [self.index_id, True]
        )
        return {row[0] for row in rows}

    def alive_head_count(self) -> int:
        return self._execute(
            f"SELECT COUNT(*) FROM {self.head_table} WHERE index_id = %s AND alive = %s", [self.index_id, True]
        )[0][0]

    def head_vectors(self, head_ids: Sequence[int]) -> np.ndarray:
        """The vectors of these heads (alive or retired), in the order given."""
        found, vectors = self.head_rows(head_ids)
        if len(found) != len(head_ids):
            raise KeyError(f"heads {sorted(set(map(int, head_ids)) - set(found.tolist()))[:5]} are gone")
        return vectors

    def head_rows(self, head_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of these heads whose rows are still there, in the order given.

        A view can ask for up to ``HISTORY`` heads at once: more than SQLite
        takes as parameters of one statement.
        """
        ids = [int(h) for h in head_ids]
        rows: dict[int, Any] = {}
        for batch in _batches(ids):
            rows.update(self._execute(
                f"SELECT id, vector FROM {self.head_table} WHERE index_id = %s AND id IN ({self._marks(len(batch))})",
                [self.index_id, *batch],
            ))
        found = [i for i in ids if i in rows]
        return np.array(found, dtype=np.int64), codec.stack_bytes([bytes(rows[i]) for i in found], self.dimensions)

    def head_vector(self, head_id: int) -> np.ndarray | None:
        rows = self._execute(
            f"SELECT vector FROM {self.head_table} WHERE id = %s AND index_id = %s", [head_id, self.index_id]
        )
        return codec.from_bytes(bytes(rows[0][0])) if rows else None

    def alive_heads(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._execute(
            f"SELECT id, vector FROM {self.head_table} WHERE index_id = %s AND alive = %s ORDER BY id",
            [self.index_id, True],
        )
        if not rows:
            return np.empty(0, np.int64), np.empty((0, self.dimensions), np.float32)
        ids, blobs = zip(*rows)
        return np.array(ids, dtype=np.int64), codec.stack_bytes([bytes(b) for b in blobs], self.dimensions)

    # Postings ------------------------------------------------------------------

    def append(self, rows: Sequence[tuple[int, int, bytes]]) -> None:
        """Append (head_id, count, payload) rows: INSERTs only, never a read of old rows."""
        if self.mysql:
            # The values are written into the statement, payloads as hex
            # literals: escaping them as parameters took twice the time of the
            # INSERT itself, and mysqlclient cuts a parameterised multi-row
            # INSERT into 64 KB statements.
            insert = f"INSERT INTO {self.posting_table} (index_id, head_id, count, payload) VALUES "
            values: list[str] = []
            size = 0
            for head, count, payload in rows:
                values.append(f"({int(self.index_id)}, {int(head)}, {int(count)}, X'{bytes(payload).hex()}')")
                size += len(values[-1])
                if size >= APPEND_STATEMENT_BYTES:
                    self._execute(insert + ", ".join(values), None)
                    values, size = [], 0
            if values:
                self._execute(insert + ", ".join(values), None)
            return
        # SQLite: this transaction is the only writer; the list's next seq is
        # its largest plus one (a primary-key range lookup).
        next_seq: dict[int, int] = {}
        values = []
        for head, count, payload in rows:
            if head not in next_seq:
                (last,) = self._execute(
                    f"SELECT COALESCE(MAX(seq), 0) FROM {self.posting_table} WHERE index_id = %s AND head_id = %s",
                    [self.index_id, head],
                )[0]
                next_seq[head] = last + 1
            values.append((self.index_id, head, next_seq[head], count, self._binary(payload)))
            next_seq[head] += 1
        self._executemany(
            f"INSERT INTO {self.posting_table} (index_id, head_id, seq, count, payload) VALUES (%s, %s, %s, %s, %s)",
            values,
        )

    def _posting_sql(self, count: int) -> str:
        return (
            f"SELECT head_id, payload FROM {self.posting_table} WHERE index_id = %s "
            f"AND head_id IN ({self._marks(count)})"
        )

    def posting_rows(self, head_ids: Sequence[int]) -> list[tuple[int, bytes]]:
        """(head id, payload) of every row of these posting lists (see :func:`read_by_keys`)."""
        ids = [int(h) for h in head_ids]
        rows = read_by_keys(
            self.connection, self._posting_sql, [self.index_id], ids,
            kind="postings", per_reader=LISTS_PER_READER, batch=500,
        )
        return [(head_id, bytes(payload)) for head_id, payload in rows]

    def read_postings(self, head_ids: Sequence[int], rows_per_head: dict[int, int] | None = None) -> np.ndarray:
        """Every entry of these posting lists, decoded; *rows_per_head* gets row counts."""
        rows = self.posting_rows(head_ids)
        if rows_per_head is not None:
            for head_id, _payload in rows:
                rows_per_head[head_id] = rows_per_head.get(head_id, 0) + 1
        return self.payload.decode([payload for _head_id, payload in rows])

    def read_postings_with_owners(self, head_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(head id per entry, entries) of these posting lists."""
        size = self.payload.dtype.itemsize
        rows = self.posting_rows(head_ids)
        owners = [np.full(len(payload) // size, head_id, dtype=np.int64) for head_id, payload in rows]
        owner_array = np.concatenate(owners) if owners else np.empty(0, np.int64)
        return owner_array, self.payload.decode([payload for _head_id, payload in rows])

    def list_sizes(self, head_ids: Sequence[int]) -> dict[int, int]:
        """Entries (stale ones included) in each of these posting lists."""
        ids = sorted({int(h) for h in head_ids})
        if not ids:
            return {}
        rows = self._execute(
            f"SELECT head_id, SUM(count) FROM {self.posting_table} WHERE index_id = %s "
            f"AND head_id IN ({self._marks(len(ids))}) GROUP BY head_id",
            [self.index_id, *ids],
        )
        return {head: int(total) for head, total in rows}

    def list_rows(self, head_id: int) -> int:
        """How many rows one posting list is stored in."""
        return self._execute(
            f"SELECT COUNT(*) FROM {self.posting_table} WHERE index_id = %s AND head_id = %s", [self.index_id, head_id]
        )[0][0]

    def posting_sizes(self) -> dict[int, tuple[int, int]]:
        """head id -> (entries, rows) for every posting list."""
        rows = self._execute(
            f"SELECT head_id, SUM(count), COUNT(*) FROM {self.posting_table} WHERE index_id = %s GROUP BY head_id",
            [self.index_id],
        )
        return {head: (int(entries), int(count)) for head, entries, count in rows}

    def iter_postings(self, batch_heads: int = 200) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(head id per entry, entries) for all postings, a few heads at a time."""
        heads = [row[0] for row in self._execute(
            f"SELECT DISTINCT head_id FROM {self.posting_table} WHERE index_id = %s", [self.index_id]
        )]
        for batch in _batches(sorted(heads), batch_heads):
            yield self.read_postings_with_owners(batch)

    # Versions ------------------------------------------------------------------

    # mysqlclient turns executemany() into one multi-row INSERT only when the
    # VALUES tuple holds nothing but placeholders: a literal 1 there makes it
    # one round trip per row. Every value is therefore a parameter.

    def next_versions(self, vector_ids: Sequence[int]) -> np.ndarray:
        """Give each vector a new current version (1 when new) and return it.

        Where the database returns rows from an upsert (MariaDB ≥ 10.5, SQLite
        ≥ 3.35), one statement does both; elsewhere the versions are read back.
        """
        ids = [int(i) for i in vector_ids]
        if self.mysql:
            conflict = "ON DUPLICATE KEY UPDATE version = version + 1, deleted = VALUES(deleted)"
        else:
            conflict = "ON CONFLICT (index_id, vector_id) DO UPDATE SET version = version + 1, deleted = excluded.deleted"
        upsert = f"INSERT INTO {self.version_table} (index_id, vector_id, version, deleted) VALUES "
        if self.connection.features.can_return_rows_from_bulk_insert:
            versions: dict[int, int] = {}
            for batch in _batches(ids, 1_000):
                values = ", ".join(["(%s, %s, %s, %s)"] * len(batch))
                params = [value for i in batch for value in (self.index_id, i, 1, False)]
                versions.update(self._execute(f"{upsert}{values} {conflict} RETURNING vector_id, version", params))
        else:
            self._executemany(f"{upsert}(%s, %s, %s, %s) {conflict}", [(self.index_id, i, 1, False) for i in ids])
            versions = self.current_versions(ids)
        return np.array([versions[i] for i in ids], dtype=np.uint32)

    def insert_versions(self, vector_ids: Sequence[int]) -> None:
        self._executemany(
            f"INSERT INTO {self.version_table} (index_id, vector_id, version, deleted) VALUES (%s, %s, %s, %s)",
            [(self.index_id, int(i), 1, False) for i in vector_ids],
        )

    def delete_versions(self, vector_ids: Sequence[int]) -> None:
        for batch in _batches([int(i) for i in vector_ids]):
            self._execute(
                f"UPDATE {self.version_table} SET deleted = %s WHERE index_id = %s AND vector_id IN ({self._marks(len(batch))})",
                [True, self.index_id, *batch],
            )

    def deleted_count(self) -> int:
        """Deleted vectors' version rows: a range of the (index_id, deleted) index, not a pass over every row."""
        return self._execute(
            f"SELECT COUNT(*) FROM {self.version_table} WHERE index_id = %s AND deleted = %s", [self.index_id, True]
        )[0][0]

    def live_count(self, at_most: int) -> int:
        """Live vectors' version rows, counted up to *at_most*: a bounded read, whatever the index's size."""
        return self._execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {self.version_table} WHERE index_id = %s AND deleted = %s "
            "LIMIT %s) AS live",
            [self.index_id, False, int(at_most)],
        )[0][0]

    def deleted_versions(self) -> dict[int, int]:
        """vector id -> version of every deleted vector: a plain read, no lock."""
        rows = self._execute(
            f"SELECT vector_id, version FROM {self.version_table} WHERE index_id = %s AND deleted = %s",
            [self.index_id, True],
        )
        return {int(vector_id): int(version) for vector_id, version in rows}

    def lock_versions(self, vector_ids: Sequence[int]) -> dict[int, tuple[int, bool]]:
        """Lock these vectors' version rows, found by primary key, and read them: vector id -> (version, deleted).

        On MySQL/MariaDB a row another transaction holds is skipped (not in
        the answer): it is being written. Only these rows are locked: a
        locking read that scanned the index's rows would lock every one it
        passed, and wait for every transaction that wrote any.
        """
        ids = [int(i) for i in vector_ids]
        found: dict[int, tuple[int, bool]] = {}
        for batch in _batches(ids):
            marks = self._marks(len(batch))
            if self.mysql:
                select = f"FROM {self.version_table} FORCE INDEX (PRIMARY)"
                lock = " FOR UPDATE SKIP LOCKED"
            else:
                self._execute(  # SQLite: start writing
                    f"UPDATE {self.version_table} SET deleted = deleted WHERE index_id = %s AND vector_id IN ({marks})",
                    [self.index_id, *batch],
                )
                select, lock = f"FROM {self.version_table}", ""
            rows = self._execute(
                f"SELECT vector_id, version, deleted {select} WHERE index_id = %s AND vector_id IN ({marks}){lock}",
                [self.index_id, *batch],
            )
            found.update((int(vector_id), (int(version), bool(deleted))) for vector_id, version, deleted in rows)
        return found

    def forget_versions(self, vector_ids: Sequence[int]) -> None:
        """Delete the version rows of these deleted vectors (only while they are deleted)."""
        for batch in _batches([int(i) for i in vector_ids]):
            self._execute(
                f"DELETE FROM {self.version_table} WHERE index_id = %s AND deleted = %s "
                f"AND vector_id IN ({self._marks(len(batch))})",
                [self.index_id, True, *batch],
            )

    def referenced_ids(self) -> np.ndarray:
        """The vector id of every entry of every posting list, retired heads' too (sorted, each once)."""
        found = [np.unique(entries["id"]) for _owners, entries in self.iter_postings()]
        return np.unique(np.concatenate(found)).astype(np.int64) if found else np.empty(0, np.int64)

    def current_versions(self, vector_ids: Sequence[int]) -> dict[int, int]:
        """vector id -> current version, for the ids whose rows are not deleted."""
        def sql(count: int) -> str:
            return (
                f"SELECT vector_id, version FROM {self.version_table} WHERE index_id = %s "
                f"AND deleted = %s AND vector_id IN ({self._marks(count)})"
            )

        ids = [int(i) for i in vector_ids]
        return dict(
            read_by_keys(self.connection, sql, [self.index_id, False], ids, kind="versions", per_reader=ROWS_PER_READER)
        )

    def all_versions(self) -> dict[int, tuple[int, bool]]:
        rows = self._execute(
            f"SELECT vector_id, version, deleted FROM {self.version_table} WHERE index_id = %s",
            [self.index_id],
        )
        return {vid: (version, bool(deleted)) for vid, version, deleted in rows}

    # WAL -----------------------------------------------------------------------

    def append_wal(self, lsn: int, op: int, head_id: int, vector: np.ndarray | None) -> None:
        self._execute(
            f"INSERT INTO {self.wal_table} (index_id, lsn, op, head_id, vector) VALUES (%s, %s, %s, %s, %s)",
            [self.index_id, lsn, op, head_id, None if vector is None else self._binary(codec.to_bytes(vector))],
        )

    def read_wal(self, after_lsn: int) -> list[tuple[int, int, int, bytes | None]]:
        return self._execute(
            f"SELECT lsn, op, head_id, vector FROM {self.wal_table} WHERE index_id = %s AND lsn > %s ORDER BY lsn",
            [self.index_id, after_lsn],
        )

    def wal_length(self) -> int:
        return self._execute(f"SELECT COUNT(*) FROM {self.wal_table} WHERE index_id = %s", [self.index_id])[0][0]

    def truncate_wal(self, up_to_lsn: int) -> None:
        self._execute(f"DELETE FROM {self.wal_table} WHERE index_id = %s AND lsn <= %s", [self.index_id, up_to_lsn])

    # Snapshots -----------------------------------------------------------------

    def write_snapshot(self, generation: int, lsn: int, data: bytes, heads: int) -> Snapshot:
        alias = self.connection.alias
        snapshot = Snapshot.objects.using(alias).create(
            index_id=self.index_id,
            generation=generation,
            lsn=lsn,
            size=len(data),
            chunks=(len(data) + SNAPSHOT_CHUNK - 1) // SNAPSHOT_CHUNK,
            heads=heads,
            checksum=hashlib.sha256(data).hexdigest(),
        )
        for number, start in enumerate(range(0, len(data), SNAPSHOT_CHUNK)):
            SnapshotChunk.objects.using(alias).create(
                snapshot_id=snapshot.pk, number=number, data=data[start : start + SNAPSHOT_CHUNK]
            )
        return snapshot

    def newest_snapshot(self, generation: int) -> Snapshot | None:
        """The row of this generation's newest snapshot (not its bytes)."""
        return (
            Snapshot.objects.using(self.connection.alias)
            .filter(index_id=self.index_id, generation=generation)
            .order_by("-lsn", "-pk")
            .first()
        )

    def latest_snapshot(self, generation: int) -> tuple[Snapshot, bytes]:
        """The newest snapshot of this generation, its bytes checked against its checksum."""
        alias = self.connection.alias
        snapshot = self.newest_snapshot(generation)
        if snapshot is None:
            raise SnapshotError(f"no snapshot of generation {generation}")
        chunks = list(
            SnapshotChunk.objects.using(alias).filter(snapshot_id=snapshot.pk).order_by("number").values_list("data", flat=True)
        )
        data = b"".join(bytes(chunk) for chunk in chunks)
        if len(chunks) != snapshot.chunks or hashlib.sha256(data).hexdigest() != snapshot.checksum:
            raise SnapshotError(
                f"snapshot {snapshot.pk} (LSN {snapshot.lsn}) is incomplete or damaged: "
                f"{len(chunks)} of {snapshot.chunks} chunks, checksum mismatch"
            )
        return snapshot, data

    def delete_snapshots(self, keep: int | None = None) -> None:
        alias = self.connection.alias
        old = Snapshot.objects.using(alias).filter(index_id=self.index_id)
        if keep is not None:
            old = old.exclude(pk=keep)
        ids = list(old.values_list("pk", flat=True))
        SnapshotChunk.objects.using(alias).filter(snapshot_id__in=ids).delete()
        Snapshot.objects.using(alias).filter(pk__in=ids).delete()

    # Everything ----------------------------------------------------------------

    def clear(self) -> None:
        """Delete all of the index's contents (a rebuild starts from nothing)."""
        for table in (self.posting_table, self.version_table, self.wal_table):
            self._execute(f"DELETE FROM {table} WHERE index_id = %s", [self.index_id])
        self.delete_snapshots()
        self._execute(f"DELETE FROM {self.head_table} WHERE index_id = %s", [self.index_id])
