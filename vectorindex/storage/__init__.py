"""The narrow interface between the engine and the database.

Plain SQL on a Django connection, inside whatever transaction that connection is
in: the caller's, for user writes and queries; the job's, for builds and
maintenance. The one exception: a query outside any transaction may spread its
reads over reader threads' own connections (:func:`read_by_keys`), which in
autocommit mode see what the query's connection would.

:class:`Storage` is one index's rows through one connection, a part per table:

* ``state.py``     the state row (:class:`StateRow`) and its locks
* ``heads.py``     head rows, and the locks appenders and jobs take on them
* ``postings.py``  posting lists: appends, rewrites, reads
* ``versions.py``  version rows: new versions, deletes, locks, reads
* ``wal.py``       the head WAL
* ``snapshots.py`` snapshots of the head index, in chunks

What differs between backends — locks, the posting sequence, upserts, batches
of statements, isolation, lock waits, streaming — is each backend's dialect
(``dialects/``); a database without one is refused. ``readers.py`` spreads a
query's reads over several connections; ``backends.py`` has a job's
transaction, its lock waits and streamed scans; ``memory.py`` weighs the
posting data against the server's buffer pool.
"""

from __future__ import annotations

from .backends import job_transaction, lock_timeout, stream_rows
from .base import IN_BATCH, LISTS_PER_STATEMENT
from .dialects import Dialect, dialect_for, read_only, supported_databases
from .heads import HeadRows
from .memory import (
    BufferPool,
    PostingMemory,
    buffer_pool,
    posting_memory,
    posting_table_memory,
)
from .postings import PostingRows
from .readers import LISTS_PER_READER, ROWS_PER_READER, on_own_connection, read_by_keys
from .snapshots import SNAPSHOT_CHUNK, SnapshotRows
from .state import StateRow, StateRows
from .versions import VersionRows
from .wal import WalRows

__all__ = [
    "IN_BATCH",
    "LISTS_PER_READER",
    "LISTS_PER_STATEMENT",
    "ROWS_PER_READER",
    "SNAPSHOT_CHUNK",
    "BufferPool",
    "Dialect",
    "PostingMemory",
    "StateRow",
    "Storage",
    "buffer_pool",
    "dialect_for",
    "job_transaction",
    "lock_timeout",
    "on_own_connection",
    "posting_memory",
    "posting_table_memory",
    "read_by_keys",
    "read_only",
    "stream_rows",
    "supported_databases",
]


class Storage(StateRows, HeadRows, PostingRows, VersionRows, WalRows, SnapshotRows):
    """One index's rows, through one database connection.

    ``Storage(connection, index_id, dimensions, payload=None)``; a connection
    to a database without a dialect raises NotSupportedError.
    """

    def clear(self) -> None:
        """Delete all of the index's contents (a rebuild starts from nothing)."""
        for table in (self.posting_table, self.version_table, self.wal_table):
            self._execute(f"DELETE FROM {table} WHERE index_id = %s", [self.index_id])
        self.delete_snapshots()
        self._execute(f"DELETE FROM {self.head_table} WHERE index_id = %s", [self.index_id])
