"""Decoded posting rows kept in this process for the next queries, under a byte budget (``QUERY_CACHE_BYTES``).

Why a row read once may be used again without reading it: a posting row never
changes once written. Appends insert new rows; a list is only ever rewritten
or removed whole (its rows deleted, new rows inserted); nothing UPDATEs one.
And a row's key ``(index_id, head_id, seq)`` never names other contents: on
MySQL/MariaDB ``seq`` comes from AUTO_INCREMENT, which gives no value twice
(MariaDB ≥ 10.2.4 and MySQL ≥ 8.0 keep the counter across restarts, rolled
back values included); on SQLite a list's new rows go on from its largest seq,
a rewritten one's too (``dialects/sqlite.py``); head ids are never given again
either. So a query first reads the keys of its lists' rows (in its own
transaction, as it would read the rows) and takes from here the contents of
the keys it finds here: whatever the query may see, a key it sees means the
contents cached under it.

What may be put here: only rows read outside any transaction. Those are
committed (a statement in autocommit mode sees nobody's uncommitted rows),
whereas a transaction's own uncommitted rows may roll back, and SQLite then
gives their seqs again. Inside a transaction the cache is read, not filled.

The key also holds the database alias, the posting table and the index's
*generation*, a random number drawn by every build: an index built again, or
created anew under the same id after its tables were emptied (as between
tests, where ids and AUTO_INCREMENT counters start again), has other keys.
A database restored from a backup under running processes is the one case
this does not see: restart them (their head indexes are as stale).

The cache is per process, shared by its threads (reader threads included),
and evicts the least recently used rows first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..conf import vectorindex_settings

# Bytes a cached row costs beyond its entries: its key, its array object and
# its place in the dict (about 340 measured on CPython 3.11, rounded up).
ROW_OVERHEAD = 400

# (alias, posting table, index id, generation): one build of one index.
Build = tuple[str, str, int, int]


class PostingCache:
    """Decoded posting rows (read-only numpy arrays) by ``(*build, head_id, seq)``, least recently used out first."""

    def __init__(self) -> None:
        self._rows: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0  # rows found here
        self.misses = 0  # rows read from the database instead

    @property
    def budget(self) -> int:
        return vectorindex_settings.QUERY_CACHE_BYTES

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, build: Build, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
        """The cached rows among *keys* ((head_id, seq) pairs of *build*), each now the most recently used."""
        found: dict[tuple[int, int], np.ndarray] = {}
        wanted = 0
        with self._lock:
            for key in keys:
                wanted += 1
                full = (*build, *key)
                rows = self._rows.get(full)
                if rows is not None:
                    self._rows.move_to_end(full)
                    found[key] = rows
            self.hits += len(found)
            self.misses += wanted - len(found)
        return found

    def put(self, build: Build, rows: Sequence[tuple[int, int, np.ndarray]]) -> None:
        """Keep these (head_id, seq, entries) rows of *build*: committed rows only (see the module's docstring)."""
        budget = self.budget
        with self._lock:
            for head_id, seq, entries in rows:
                size = entries.nbytes + ROW_OVERHEAD
                key = (*build, head_id, seq)
                if size > budget or key in self._rows:
                    continue
                entries.flags.writeable = False  # shared by every query that finds it
                self._rows[key] = entries
                self.bytes += size
            self._evict(budget)

    def _evict(self, budget: int) -> None:
        while self.bytes > budget and self._rows:
            _key, entries = self._rows.popitem(last=False)
            self.bytes -= entries.nbytes + ROW_OVERHEAD

    def forget(self, alias: str, index_id: int) -> None:
        """Drop the rows of every build of this index (built again, or dropped): their memory, at once."""
        with self._lock:
            for key in [key for key in self._rows if key[0] == alias and key[2] == index_id]:
                self.bytes -= self._rows.pop(key).nbytes + ROW_OVERHEAD

    def resize(self) -> None:
        """Evict down to the budget as the settings now give it (``QUERY_CACHE_BYTES`` changed: the next read calls this)."""
        budget = self.budget
        with self._lock:
            self._evict(budget)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self.bytes = self.hits = self.misses = 0


posting_cache = PostingCache()


def fillable(connection: Any) -> bool:
    """Whether rows read on *connection* now are committed ones, which may be cached: outside any transaction."""
    return connection.get_autocommit() and not connection.in_atomic_block
