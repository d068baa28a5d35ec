"""The postings table: each head's posting list, stored as many packed rows under ``(index_id, head_id, seq)``.

An append is one INSERT of new rows, never a read or rewrite of an existing
one (docs/ARCHITECTURE.md §2); how a new row gets its ``seq`` is the dialect's
(:meth:`Dialect.append_postings`). A list is read by one range scan of its
key prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .base import LISTS_PER_STATEMENT, StorageBase, in_batches, integers
from .cache import fillable, posting_cache
from .readers import LISTS_PER_READER, read_by_keys

# Heads whose lists iter_postings reads at once: bounds the memory of a pass
# over every list (a check, a sweep) to that many lists' entries. The first
# version's choice.
HEADS_PER_PASS = 200
# Lists whose rows one statement reads by key (a UNION ALL branch each):
# SQLite takes at most 500 terms in a compound SELECT.
KEYED_LISTS_PER_STATEMENT = 100


class PostingRows(StorageBase):
    """Appends, rewrites and reads of the index's posting lists."""

    def append(self, rows: Sequence[tuple[int, int, bytes]]) -> None:
        """Append (head_id, count, payload) rows: INSERTs only, never a read of old rows."""
        self.dialect.append_postings(self, rows)

    def append_one(
        self, name: str, generation: int, lsn: int, vector_id: int, head_ids: Sequence[int], count: int, payload: bytes
    ) -> tuple[int, dict[int, int]] | None:
        """Index one new vector in one round trip, while the head index is *generation* at *lsn* (where ``self.batches``).

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
        return self.dialect.append_one(self, name, generation, lsn, vector_id, head_ids, count, payload)

    def replace_postings(self, head_id: int, rows: Sequence[tuple[int, bytes]]) -> None:
        """Rewrite one posting list as *rows* (count, payload): defragmenting. New rows get new seqs (the dialect's)."""
        self.dialect.replace_postings(self, head_id, rows)

    def _posting_sql(self, listed: str) -> str:
        return f"SELECT head_id, payload FROM {self.posting_table} WHERE index_id = %s AND head_id IN ({listed})"

    def posting_rows(self, head_ids: Sequence[int]) -> list[tuple[int, bytes]]:
        """(head id, payload) of every row of these posting lists (see :func:`read_by_keys`)."""
        ids = [int(h) for h in head_ids]
        rows = read_by_keys(
            self.connection, self._posting_sql, [self.index_id], ids,
            kind="postings", per_reader=LISTS_PER_READER, batch=LISTS_PER_STATEMENT,
        )
        return [(head_id, bytes(payload)) for head_id, payload in rows]

    def read_postings(self, head_ids: Sequence[int], rows_per_head: dict[int, int] | None = None) -> np.ndarray:
        """Every entry of these posting lists, decoded; *rows_per_head* gets row counts."""
        rows = self.posting_rows(head_ids)
        if rows_per_head is not None:
            for head_id, _payload in rows:
                rows_per_head[head_id] = rows_per_head.get(head_id, 0) + 1
        return self.payload.decode([payload for _head_id, payload in rows])

    def keys_statement(self, head_ids: Sequence[int]) -> tuple[str, list]:
        """The statement (text, parameters) that reads the keys of these lists' rows, for :meth:`search_postings`."""
        return (
            f"SELECT head_id, seq FROM {self.posting_table} WHERE index_id = %s "
            f"AND head_id IN ({integers(sorted({int(h) for h in head_ids}))})",
            [self.index_id],
        )

    def search_postings(
        self, head_ids: Sequence[int], generation: int, rows_per_head: dict[int, int], keys: list[tuple] | None = None
    ) -> np.ndarray:
        """:meth:`read_postings` for a query of *generation*, through this process's cache of rows (``storage/cache.py``).

        With the cache off (``QUERY_CACHE_BYTES`` 0) it is :meth:`read_postings`,
        one statement. Otherwise: the keys of the lists' rows, read as the
        query would read the rows (its transaction, its view); then the rows
        not cached, in one more statement — whole lists where none of a list's
        rows is cached (spread as :meth:`read_postings` spreads them), by key
        where some are. A row asked for by key that is gone was deleted by a
        rewrite that committed since the keys were read (no transaction holds
        the view): that list is read again whole, so that every list is read
        as it stood at one moment, as one statement reads it. The entries come
        in the order of one statement: by head, then by row. *keys*: the
        rows of :meth:`keys_statement` for these lists, read already (with
        the state row, in the query's first round trip).
        """
        if not posting_cache.budget:
            posting_cache.resize()  # turned off since rows were cached: they go (none, usually)
            return self.read_postings(head_ids, rows_per_head)
        ids = sorted({int(h) for h in head_ids})
        build = (self.connection.alias, self.posting_table, self.index_id, generation)
        if keys is None:
            keys = [row for batch in in_batches(ids, LISTS_PER_STATEMENT) for row in self._execute(*self.keys_statement(batch))]
        keys = [(int(head_id), int(seq)) for head_id, seq in keys]
        found = posting_cache.get(build, keys)
        rows: dict[int, dict[int, np.ndarray]] = {head_id: {} for head_id in ids}
        for (head_id, seq), entries in found.items():
            rows[head_id][seq] = entries
        missing: dict[int, list[int]] = {}
        for head_id, seq in keys:
            if (head_id, seq) not in found:
                missing.setdefault(head_id, []).append(seq)
        whole = [head_id for head_id in missing if not rows[head_id]]
        by_key = {head_id: seqs for head_id, seqs in missing.items() if rows[head_id]}
        read: list[tuple[int, int, np.ndarray]] = []
        if whole:
            read += self._decoded(read_by_keys(
                self.connection, self._keyed_posting_sql, [self.index_id], whole,
                kind="postings", per_reader=LISTS_PER_READER, batch=LISTS_PER_STATEMENT,
            ))
        if by_key:
            fetched = self._decoded(self._rows_by_key(by_key))
            got: dict[int, int] = {}
            for head_id, _seq, _entries in fetched:
                got[head_id] = got.get(head_id, 0) + 1
            rewritten = [head_id for head_id, seqs in by_key.items() if got.get(head_id, 0) < len(seqs)]
            for head_id in rewritten:
                rows[head_id] = {}
            read += [row for row in fetched if row[0] not in rewritten]
            if rewritten:
                read += self._decoded(read_by_keys(
                    self.connection, self._keyed_posting_sql, [self.index_id], rewritten,
                    kind="postings", per_reader=LISTS_PER_READER, batch=LISTS_PER_STATEMENT,
                ))
        for head_id, seq, entries in read:
            rows[head_id][seq] = entries
        if read and fillable(self.connection):
            posting_cache.put(build, read)
        parts = []
        for head_id in ids:
            if rows[head_id]:
                rows_per_head[head_id] = rows_per_head.get(head_id, 0) + len(rows[head_id])
                parts.extend(rows[head_id][seq] for seq in sorted(rows[head_id]))
        return self.payload.join(parts)

    def _keyed_posting_sql(self, listed: str) -> str:
        return f"SELECT head_id, seq, payload FROM {self.posting_table} WHERE index_id = %s AND head_id IN ({listed})"

    def _rows_by_key(self, seqs_by_head: dict[int, list[int]]) -> list[tuple]:
        """(head id, seq, payload) of these rows: one statement, a branch a list (each a range of the primary key)."""
        found: list[tuple] = []
        heads = sorted(seqs_by_head)
        for batch in in_batches(heads, KEYED_LISTS_PER_STATEMENT):
            branches, params = [], []
            for head_id in batch:
                seqs = seqs_by_head[head_id]
                branches.append(
                    f"SELECT head_id, seq, payload FROM {self.posting_table} WHERE index_id = %s "
                    f"AND head_id = {int(head_id)} AND seq IN ({integers(seqs)})"
                )
                params.append(self.index_id)
            found += self._execute(" UNION ALL ".join(branches), params)
        return found

    def _decoded(self, rows: Sequence[tuple]) -> list[tuple[int, int, np.ndarray]]:
        """(head id, seq, entries) of (head id, seq, payload) rows: each row decoded on its own, to be cached on its own."""
        return [(int(head_id), int(seq), self.payload.decode([bytes(payload)])) for head_id, seq, payload in rows]

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

    def posting_bytes(self) -> int:
        """Bytes of the index's posting payloads, stale entries and retired heads' lists included.

        A payload is its entries packed and nothing else, so this is the
        entries times an entry's size: the row counts are summed, no payload
        is read (a sum of their lengths would read every list from disk).
        """
        (entries,) = self._execute(
            f"SELECT COALESCE(SUM(count), 0) FROM {self.posting_table} WHERE index_id = %s", [self.index_id]
        )[0]
        return int(entries) * self.payload.dtype.itemsize

    def iter_postings(self, batch_heads: int = HEADS_PER_PASS) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(head id per entry, entries) for all postings, a few heads at a time."""
        heads = [row[0] for row in self._execute(
            f"SELECT DISTINCT head_id FROM {self.posting_table} WHERE index_id = %s", [self.index_id]
        )]
        for batch in in_batches(sorted(heads), batch_heads):
            yield self.read_postings_with_owners(batch)

    def referenced_ids(self) -> np.ndarray:
        """The vector id of every entry of every posting list, retired heads' too (sorted, each once)."""
        found = [np.unique(entries["id"]) for _owners, entries in self.iter_postings()]
        return np.unique(np.concatenate(found)).astype(np.int64) if found else np.empty(0, np.int64)
