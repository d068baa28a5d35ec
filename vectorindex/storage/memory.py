"""Posting data against the memory the database server keeps table pages in (its buffer pool).

A query reads a few dozen posting lists; while every list fits in the buffer
pool they are read from memory, and once the posting data is larger, from the
disk, several times slower. What the pool is called, the setting that sizes
it and how big it is are the dialect's; a database without one (SQLite, whose
pages the operating system caches) is never too small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..models import Posting
from .dialects import DIALECTS

if TYPE_CHECKING:
    from . import Storage

MiB = 1024**2
GiB = 1024**3
# The pool advised holds the posting data and a quarter more: the version rows
# a query checks its candidates against, the rows it re-ranks, the heads.
HEADROOM = 1.25


@dataclass(frozen=True)
class BufferPool:
    """The memory a database server keeps table pages in: its name, the setting that sizes it, its size in bytes."""

    name: str
    setting: str
    size: int


@dataclass(frozen=True)
class PostingMemory:
    """Bytes of posting data against the server's buffer pool (None: the database has none)."""

    posting_bytes: int
    buffer_pool: BufferPool | None

    @property
    def too_large(self) -> bool:
        """The posting data does not fit in the buffer pool: queries read lists from disk."""
        return self.buffer_pool is not None and self.posting_bytes > self.buffer_pool.size

    @property
    def advised_pool_bytes(self) -> int:
        """A buffer pool that holds the posting data with headroom: rounded up to 128 MiB below 1 GiB, to 1 GiB above.

        128 MiB is InnoDB's default chunk, which the pool's size is rounded up to anyway.
        """
        wanted = self.posting_bytes * HEADROOM
        step = 128 * MiB if wanted <= GiB else GiB
        return -(-int(wanted) // step) * step


def buffer_pool(connection: Any) -> BufferPool | None:
    """*connection*'s server's buffer pool; None where the database has none of its own, or no dialect says."""
    dialect = DIALECTS.get(connection.vendor)
    size = None if dialect is None else dialect.buffer_pool_bytes(connection)
    if size is None:
        return None
    return BufferPool(dialect.buffer_pool, dialect.buffer_pool_setting, size)


def posting_memory(storage: Storage) -> PostingMemory:
    """One index's posting data (counted exactly) against its server's buffer pool."""
    return PostingMemory(storage.posting_bytes(), buffer_pool(storage.connection))


def posting_table_memory(connection: Any) -> PostingMemory | None:
    """Every index's posting data on *connection*'s database against its buffer pool, by the server's statistics.

    Two cheap reads, no scan: for start-up checks and pages that list every
    index. None where the database has no buffer pool or keeps no statistics
    of the table (not migrated yet).
    """
    pool = buffer_pool(connection)
    if pool is None:
        return None
    size = DIALECTS[connection.vendor].table_bytes(connection, Posting._meta.db_table)
    return None if size is None else PostingMemory(size, pool)
