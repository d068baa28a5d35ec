"""SQLite.

SQLite has one writer at a time: taking a lock means starting to write, which
an exclusive lock does with a no-op UPDATE; shared row locks are not needed,
since no other writer can run until this transaction ends. For the same
reason a posting row's ``seq`` is simply its list's largest plus one — and a
rewritten list goes on from its largest seq before the rewrite, so that no seq
is given twice to committed rows of a list — and there is nothing to gain from
reading on several connections. Its cursor already steps through a result
lazily. It has no buffer pool of its own: its pages are cached by the
operating system, in whatever memory is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Dialect, IsolationLevel

if TYPE_CHECKING:
    from .. import Storage


class SQLiteDialect(Dialect):
    vendor = "sqlite"
    name = "SQLite"

    row_locks = False
    primary_key_hint = ""
    share_lock = ""

    def update_lock(self, skip_locked: bool = False) -> str:
        return ""  # the write lock (write_lock) is already this transaction's

    def server_read_only(self, connection: Any) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA query_only")
            return bool(cursor.fetchone()[0])

    def write_lock(self, table: str, column: str, where: str) -> str | None:
        return f"UPDATE {table} SET {column} = {column} WHERE {where}"

    version_upsert = (
        "ON CONFLICT (index_id, vector_id) DO UPDATE SET version = version + 1, deleted = excluded.deleted"
    )

    def append_postings(self, storage: Storage, rows: Sequence[tuple[int, int, bytes]]) -> None:
        # This transaction is the only writer; the list's next seq is its
        # largest plus one (a primary-key range lookup).
        next_seq: dict[int, int] = {}
        values = []
        for head, count, payload in rows:
            if head not in next_seq:
                (last,) = storage._execute(
                    f"SELECT COALESCE(MAX(seq), 0) FROM {storage.posting_table} WHERE index_id = %s AND head_id = %s",
                    [storage.index_id, head],
                )[0]
                next_seq[head] = last + 1
            values.append((storage.index_id, head, next_seq[head], count, storage._binary(payload)))
            next_seq[head] += 1
        storage._executemany(
            f"INSERT INTO {storage.posting_table} (index_id, head_id, seq, count, payload) VALUES (%s, %s, %s, %s, %s)",
            values,
        )

    def replace_postings(self, storage: Storage, head_id: int, rows: Sequence[tuple[int, bytes]]) -> None:
        # The new rows go on from the list's largest seq, which the DELETE
        # would otherwise give back to the next append (with other contents
        # under a key a process may have cached). A list rewritten as nothing
        # keeps one empty row there, for the same reason. A rolled-back
        # rewrite may give its seqs again: only committed rows are cached.
        (last,) = storage._execute(
            f"SELECT COALESCE(MAX(seq), 0) FROM {storage.posting_table} WHERE index_id = %s AND head_id = %s",
            [storage.index_id, head_id],
        )[0]
        storage._execute(
            f"DELETE FROM {storage.posting_table} WHERE index_id = %s AND head_id = %s", [storage.index_id, head_id]
        )
        storage._executemany(
            f"INSERT INTO {storage.posting_table} (index_id, head_id, seq, count, payload) VALUES (%s, %s, %s, %s, %s)",
            [
                (storage.index_id, head_id, last + 1 + n, count, storage._binary(payload))
                for n, (count, payload) in enumerate(list(rows) or [(0, b"")])
            ],
        )

    parallel_reads = False
    writers_read_a_snapshot = False  # a transaction that writes sees every commit before it

    def isolate_next_transaction(self, connection: Any, level: IsolationLevel) -> None:
        pass  # SQLite's transactions are serializable: there is no level to choose

    # The busy timeout is a connection setting, in milliseconds; it bounds
    # the wait for the one write lock.
    def deadlocked(self, error: Exception) -> bool:
        return False  # one writer at a time: a wait that would deadlock fails at once, as "locked"

    def lock_wait_ran_out(self, error: Exception) -> bool:
        return "database is locked" in str(error)  # the busy timeout ran out, or a wait would deadlock

    lock_wait_read = "PRAGMA busy_timeout"
    lock_wait_write = "PRAGMA busy_timeout = {}"
    lock_wait_units = 1000
