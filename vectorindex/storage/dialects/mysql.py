"""MySQL and MariaDB (InnoDB, through mysqlclient).

Row locks are taken by the reads themselves: ``SELECT … FOR UPDATE`` and
``SELECT … LOCK IN SHARE MODE`` (MariaDB 10.11 rejects MySQL 8's ``FOR SHARE``).
A posting row's ``seq`` comes from an ``AUTO_INCREMENT`` column with a key of
its own (migration 0001), so that an append takes no hot counter row.

The exact path reads a whole table's keys and vectors in one pass. Django's
MySQL backend uses mysqlclient's default cursor, which buffers the entire
result in client memory before the first row is returned; an unbuffered
server-side cursor (``SSCursor``) keeps the pass within one chunk of memory.

InnoDB keeps table pages in its buffer pool (``innodb_buffer_pool_size``,
128 MiB unless set); a table's size is in ``information_schema.TABLES``, from
the statistics InnoDB updates as rows change (its ``data_length`` counts the
clustered index's pages, the pages of long payloads stored off the row too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...models import IndexState
from .base import Dialect, IsolationLevel

if TYPE_CHECKING:
    from .. import Storage

# An append's INSERT statements are cut at this length: well under the
# smallest max_allowed_packet a server is likely to keep (MySQL's once-default 1 MB).
APPEND_STATEMENT_BYTES = 512 * 1024
# The server's error numbers (mysqld_error.h): a deadlock it broke off, a lock wait that ran out.
ER_LOCK_DEADLOCK = 1213
ER_LOCK_WAIT_TIMEOUT = 1205


class MySQLDialect(Dialect):
    vendor = "mysql"
    name = "MySQL/MariaDB"

    row_locks = True
    primary_key_hint = " FORCE INDEX (PRIMARY)"
    share_lock = " LOCK IN SHARE MODE"

    def update_lock(self, skip_locked: bool = False) -> str:
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    def write_lock(self, table: str, column: str, where: str) -> str | None:
        return None

    version_upsert = "ON DUPLICATE KEY UPDATE version = version + 1, deleted = VALUES(deleted)"

    def append_postings(self, storage: Storage, rows: Sequence[tuple[int, int, bytes]]) -> None:
        # The values are written into the statement, payloads as hex
        # literals: escaping them as parameters took twice the time of the
        # INSERT itself, and mysqlclient cuts a parameterised multi-row
        # INSERT into 64 KB statements.
        insert = f"INSERT INTO {storage.posting_table} (index_id, head_id, count, payload) VALUES "
        values: list[str] = []
        size = 0
        for head, count, payload in rows:
            values.append(f"({int(storage.index_id)}, {int(head)}, {int(count)}, X'{bytes(payload).hex()}')")
            size += len(values[-1])
            if size >= APPEND_STATEMENT_BYTES:
                storage._execute(insert + ", ".join(values), None)
                values, size = [], 0
        if values:
            storage._execute(insert + ", ".join(values), None)

    def read_batch(self, connection: Any, statements: Sequence[tuple[str, Sequence]]) -> list[list[tuple]]:
        return _execute_batch(connection, statements)

    def multi_statements(self, connection: Any) -> bool:
        # mysqlclient allows them unless the connection's OPTIONS turn them off.
        return connection.settings_dict.get("OPTIONS", {}).get("multi_statements", True)

    def append_one(
        self,
        storage: Storage,
        name: str,
        generation: int,
        lsn: int,
        vector_id: int,
        head_ids: Sequence[int],
        count: int,
        payload: bytes,
    ) -> tuple[int, dict[int, int]] | None:
        ids = sorted({int(i) for i in head_ids})
        ok = "@vectorindex_ok = 1"
        returning = storage.connection.features.can_return_rows_from_bulk_insert
        statements: list[tuple[str, Sequence]] = [
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
                f"SELECT COUNT(*) FROM {storage.state_table} WHERE id = %s AND name = %s "
                "AND status = %s AND generation = %s AND wal_lsn = %s INTO @vectorindex_ok",
                [storage.index_id, name, IndexState.Status.READY, generation, lsn],
            ),
            (storage._lock_heads_sql(len(ids), f" AND {ok}"), [storage.index_id, *ids]),
            (
                f"INSERT INTO {storage.version_table} (index_id, vector_id, version, deleted) "
                f"SELECT %s, %s, 1, 0 FROM DUAL WHERE {ok} "
                "ON DUPLICATE KEY UPDATE version = version + 1, deleted = 0" + (" RETURNING version" if returning else ""),
                [storage.index_id, vector_id],
            ),
        ]
        if not returning:  # MySQL: read it back
            statements.append((
                f"SELECT version FROM {storage.version_table} WHERE index_id = %s AND vector_id = %s AND {ok}",
                [storage.index_id, vector_id],
            ))
        statements.append(
            (
                f"INSERT INTO {storage.posting_table} (index_id, head_id, count, payload) "
                f"SELECT %s, h.id, %s, X'{bytes(payload).hex()}' FROM {storage.head_table} h "
                f"WHERE h.id IN ({storage._marks(len(ids))}) AND h.alive AND {ok}",
                [storage.index_id, count, *ids],
            )
        )
        results = _execute_batch(storage.connection, statements)
        versions = results[3 if not returning else 2]
        if not versions:
            return None
        return versions[0][0], dict(storage._alive_sizes(results[1]))

    parallel_reads = True
    writers_read_a_snapshot = True

    def isolate_next_transaction(self, connection: Any, level: IsolationLevel) -> None:
        if not connection.in_atomic_block:
            with connection.cursor() as cursor:  # applies to the next transaction only
                cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")

    def deadlocked(self, error: Exception) -> bool:
        return bool(error.args) and error.args[0] == ER_LOCK_DEADLOCK

    def lock_wait_ran_out(self, error: Exception) -> bool:
        return bool(error.args) and error.args[0] == ER_LOCK_WAIT_TIMEOUT

    # innodb_lock_wait_timeout is a session setting, in seconds.
    lock_wait_read = "SELECT @@SESSION.innodb_lock_wait_timeout"
    lock_wait_write = "SET SESSION innodb_lock_wait_timeout = {}"
    lock_wait_units = 1

    def streaming_cursor(self, connection: Any) -> Any:
        from MySQLdb.cursors import SSCursor

        connection.ensure_connection()
        with connection.wrap_database_errors:
            raw = connection.connection.cursor(SSCursor)
        if connection.queries_logged:
            return connection.make_debug_cursor(raw)
        return connection.make_cursor(raw)

    buffer_pool = "InnoDB buffer pool"
    buffer_pool_setting = "innodb_buffer_pool_size"

    def buffer_pool_bytes(self, connection: Any) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@innodb_buffer_pool_size")
            return int(cursor.fetchone()[0])

    def table_bytes(self, connection: Any, table: str) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT data_length FROM information_schema.TABLES WHERE table_schema = DATABASE() AND table_name = %s",
                [table],
            )
            row = cursor.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def server_read_only(self, connection: Any) -> bool:
        # read_only: a replica as it is usually set (users with SUPER or
        # READ_ONLY ADMIN may still write, but the index does not).
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@global.read_only")
            return bool(cursor.fetchone()[0])


def _execute_batch(connection: Any, statements: Sequence[tuple[str, Sequence]]) -> list[list[tuple]]:
    """Each statement's rows, the statements sent as one text: one round trip (``multi_statements``)."""
    sql = ";\n".join(text for text, _params in statements)
    params = [value for _text, values in statements for value in values]
    results: list[list[tuple]] = []
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.execute(sql, params)
        while True:
            results.append(list(cursor.fetchall()) if cursor.description else [])
            if not cursor.nextset():
                break
    return results
