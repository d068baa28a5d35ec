"""The interface every database backend's dialect implements.

The tables' SQL (``storage/state.py``, ``heads.py``, ...) is written once; what
it needs to differ per backend it asks of the connection's dialect: the clause
that makes a read lock its rows, the statement that takes a lock where no read
can, the conflict clause of an upsert, how a posting row gets its ``seq`` (one
never given to other contents), how a job's transaction is isolated, how long a
lock wait may last, whether reads may be spread over several connections, and
how much memory the server keeps table pages in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from django.db import NotSupportedError

if TYPE_CHECKING:
    from .. import Storage

IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ"]


class Dialect(ABC):
    """What a VectorIndex's storage does its own way on one database backend."""

    vendor: ClassVar[str]  # Django's ``connection.vendor``
    name: ClassVar[str]  # the backend as messages name it

    # Locking reads -------------------------------------------------------------

    # Whether a SELECT can lock the rows it reads. Where it cannot (SQLite),
    # the one write lock is taken by writing (write_lock) and shared locks
    # are not needed: no other writer runs until this transaction ends.
    row_locks: ClassVar[bool]
    # After a table's name in a locking read: the lock is taken through the
    # primary key (the record a conflicting lock is on), not a covering index.
    primary_key_hint: ClassVar[str]
    # Appended to a SELECT that share-locks the rows it reads.
    share_lock: ClassVar[str]

    @abstractmethod
    def update_lock(self, skip_locked: bool = False) -> str:
        """Appended to a SELECT that locks the rows it reads exclusively; with *skip_locked*, rows another transaction holds are left out."""

    @abstractmethod
    def write_lock(self, table: str, column: str, where: str) -> str | None:
        """The statement that takes an exclusive lock on *table*'s rows matching *where* before they are read; None where the read's own ``update_lock`` does."""

    # Writes --------------------------------------------------------------------

    # Conflict clause of an INSERT of version rows: a vector already there
    # gets the next version and the inserted row's deleted flag.
    version_upsert: ClassVar[str]

    @abstractmethod
    def append_postings(self, storage: Storage, rows: Sequence[tuple[int, int, bytes]]) -> None:
        """Append (head_id, count, payload) rows to *storage*'s posting lists: INSERTs only, never a read of old rows."""

    def replace_postings(self, storage: Storage, head_id: int, rows: Sequence[tuple[int, bytes]]) -> None:
        """Rewrite one posting list as (count, payload) *rows*: its rows deleted, these appended.

        The new rows' seqs are never ones the list had: a key of a posting row
        names one content for as long as the index's build lasts, which the
        query cache relies on (``storage/cache.py``).
        """
        storage._execute(
            f"DELETE FROM {storage.posting_table} WHERE index_id = %s AND head_id = %s", [storage.index_id, head_id]
        )
        self.append_postings(storage, [(head_id, count, payload) for count, payload in rows])

    def read_batch(self, connection: Any, statements: Any) -> list[list[tuple]]:
        """Each of these (text, parameters) statements' rows, in one round trip (where :meth:`multi_statements`)."""
        raise NotSupportedError(f"{self.name} sends one statement a round trip (multi_statements() is False).")

    def multi_statements(self, connection: Any) -> bool:
        """Whether *connection* runs several statements sent as one text (see :meth:`append_one`)."""
        return False

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
        """:meth:`Storage.append_one`, where :meth:`multi_statements` allows it."""
        raise NotSupportedError(f"{self.name} has no one-round-trip append (multi_statements() is False).")

    def binary(self, connection: Any, data: bytes) -> Any:
        """*data* as the driver's binary parameter (sqlite3: memoryview; mysqlclient: bytes)."""
        return connection.Database.Binary(data)

    # Connections and transactions ------------------------------------------------

    # Whether a query outside a transaction may spread its reads over reader
    # threads' own connections (storage/readers.py).
    parallel_reads: ClassVar[bool]
    # Whether a transaction that writes may read rows as they were when it
    # began while other transactions commit (InnoDB's REPEATABLE READ): the
    # newest commit is then read on another connection.
    writers_read_a_snapshot: ClassVar[bool]

    @abstractmethod
    def isolate_next_transaction(self, connection: Any, level: IsolationLevel) -> None:
        """Run *connection*'s next transaction at *level*, where the backend lets it be chosen; nothing inside a transaction."""

    # Failures a job runs again after (index/jobs.py) ------------------------------

    @abstractmethod
    def deadlocked(self, error: Exception) -> bool:
        """The database broke *error*'s transaction off to end a deadlock: it left nothing, and may simply run again."""

    @abstractmethod
    def lock_wait_ran_out(self, error: Exception) -> bool:
        """*error* is a statement that gave up waiting for a lock another transaction holds."""

    # How long a statement waits for a lock another transaction holds:
    # the statement reading the setting, the one writing it ("{}" for the
    # value), and the setting's units in a second.
    lock_wait_read: ClassVar[str]
    lock_wait_write: ClassVar[str]
    lock_wait_units: ClassVar[int]

    def streaming_cursor(self, connection: Any) -> Any:
        """A cursor whose rows come from the server as they are fetched, not all at once."""
        return connection.cursor()

    # The server's page memory ------------------------------------------------------

    # The memory the server keeps table pages in, as messages name it, and the
    # setting that sizes it; None where the database has none of its own
    # (SQLite's pages are cached by the operating system, in whatever memory is free).
    buffer_pool: ClassVar[str | None] = None
    buffer_pool_setting: ClassVar[str | None] = None

    def buffer_pool_bytes(self, connection: Any) -> int | None:
        """The size of *connection*'s server's :attr:`buffer_pool`, in bytes; None where there is none."""
        return None

    def table_bytes(self, connection: Any, table: str) -> int | None:
        """What *table*'s rows take on disk by the server's statistics, read without a scan; None where it keeps none or the table does not exist."""
        return None

    def server_read_only(self, connection: Any) -> bool:
        """Whether *connection*'s server takes no writes (a replica set ``read_only``), as far as it says."""
        return False
