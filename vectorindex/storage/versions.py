"""The versions table: one row per indexed vector, its current version and whether it is deleted.

An entry in a posting list whose version is not its vector's current one is
stale; a deleted vector's entries stay until a rewrite of their list drops
them, and its row until no list names it (the sweep).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
from django.db import IntegrityError, transaction

from .base import IN_BATCH, StorageBase, in_batches, integers
from .readers import ROWS_PER_READER, read_by_keys

# Vectors per upsert that returns their versions: 4 parameters each, so
# 4,000 a statement, under SQLite's limit (see IN_BATCH). The value the
# upsert was written with.
VERSIONS_PER_UPSERT = 1_000
# Tries at giving new row keys their vector ids: a try fails only when a
# random id is drawn twice or another writer gave the key meanwhile.
KEY_ATTEMPTS = 5


class VersionRows(StorageBase):
    """Writes, locks and reads of the index's version rows."""

    # mysqlclient turns executemany() into one multi-row INSERT only when the
    # VALUES tuple holds nothing but placeholders: a literal 1 there makes it
    # one round trip per row. Every value is therefore a parameter.

    def next_versions(self, vector_ids: Sequence[int]) -> np.ndarray:
        """Give each vector a new current version (1 when new) and return it.

        Where the database returns rows from an upsert (MariaDB ≥ 10.5, SQLite
        ≥ 3.35), one statement does both; elsewhere the versions are read back.
        """
        ids = [int(i) for i in vector_ids]
        conflict = self.dialect.version_upsert
        upsert = f"INSERT INTO {self.version_table} (index_id, vector_id, version, deleted) VALUES "
        if self.connection.features.can_return_rows_from_bulk_insert:
            versions: dict[int, int] = {}
            for batch in in_batches(ids, VERSIONS_PER_UPSERT):
                values = ", ".join(["(%s, %s, %s, %s)"] * len(batch))
                params = [value for i in batch for value in (self.index_id, i, 1, False)]
                versions.update(self._execute(f"{upsert}{values} {conflict} RETURNING vector_id, version", params))
        else:
            self._executemany(f"{upsert}(%s, %s, %s, %s) {conflict}", [(self.index_id, i, 1, False) for i in ids])
            versions = self.current_versions(ids)
        return np.array([versions[i] for i in ids], dtype=np.uint32)

    def insert_versions(self, vector_ids: Sequence[int], keys: Sequence[str] | None = None) -> None:
        """Version rows at version 1 for new vectors (a build's); *keys*: their rows' keys, for a keyed index."""
        keys = keys if keys is not None else [None] * len(vector_ids)
        self._executemany(
            f"INSERT INTO {self.version_table} (index_id, vector_id, version, deleted, row_key) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(self.index_id, int(i), 1, False, key) for i, key in zip(vector_ids, keys)],
        )

    # Row keys: the vector ids of a model whose primary key is not an integer ---------------

    def ids_of_keys(self, keys: Sequence[str], create: bool = False) -> dict[str, int]:
        """row key -> vector id, for the keys the index knows; with *create*, each other key is given one.

        A new id is random (62 bits: no counter row for writers to queue on);
        its version row is written at version 0, deleted, for
        :meth:`next_versions` to raise to 1 in the same transaction. Two
        writers cannot give one key two ids (the unique ``(index_id, row_key)``):
        the second finds the first's once it has committed.
        """
        found = self._ids_of_keys(keys)
        missing = sorted(set(keys) - set(found)) if create else []
        for _attempt in range(KEY_ATTEMPTS):
            if not missing:
                break
            given = {key: secrets.randbits(62) + 1 for key in missing}
            try:
                with transaction.atomic(using=self.connection.alias):
                    self._executemany(
                        f"INSERT INTO {self.version_table} (index_id, vector_id, version, deleted, row_key) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        [(self.index_id, vector_id, 0, True, key) for key, vector_id in given.items()],
                    )
            except IntegrityError:  # an id drawn twice, or the key given by another writer meanwhile
                found.update(self._ids_of_keys(missing))
                missing = [key for key in missing if key not in found]
                continue
            found.update(given)
            missing = []
        if missing:
            raise IntegrityError(f"vector ids for {len(missing)} row keys could not be given")
        return found

    def _ids_of_keys(self, keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for batch in in_batches(sorted(set(keys))):
            rows = self._execute(
                f"SELECT row_key, vector_id FROM {self.version_table} "
                f"WHERE index_id = %s AND row_key IN ({self._marks(len(batch))})",
                [self.index_id, *batch],
            )
            found.update((key, int(vector_id)) for key, vector_id in rows)
        return found

    def keys_of_ids(self, vector_ids: Sequence[int]) -> dict[int, str]:
        """vector id -> row key, for the ids of a keyed index that have a version row."""
        found: dict[int, str] = {}
        for batch in in_batches(sorted({int(i) for i in vector_ids})):
            rows = self._execute(
                f"SELECT vector_id, row_key FROM {self.version_table} "
                f"WHERE index_id = %s AND vector_id IN ({integers(batch)})",
                [self.index_id],
            )
            found.update((int(vector_id), key) for vector_id, key in rows if key is not None)
        return found

    def bump_versions(self, vector_ids: Sequence[int]) -> None:
        for batch in in_batches([int(i) for i in vector_ids]):
            self._execute(
                f"UPDATE {self.version_table} SET version = version + 1 "
                f"WHERE index_id = %s AND vector_id IN ({self._marks(len(batch))})",
                [self.index_id, *batch],
            )

    def delete_versions(self, vector_ids: Sequence[int]) -> None:
        for batch in in_batches([int(i) for i in vector_ids]):
            self._execute(
                f"UPDATE {self.version_table} SET deleted = %s WHERE index_id = %s AND vector_id IN ({self._marks(len(batch))})",
                [True, self.index_id, *batch],
            )

    def lock_versions(self, vector_ids: Sequence[int]) -> dict[int, tuple[int, bool]]:
        """Lock these vectors' version rows, found by primary key, and read them: vector id -> (version, deleted).

        On MySQL/MariaDB a row another transaction holds is skipped (not in
        the answer): it is being written. Only these rows are locked: a
        locking read that scanned the index's rows would lock every one it
        passed, and wait for every transaction that wrote any.
        """
        ids = [int(i) for i in vector_ids]
        found: dict[int, tuple[int, bool]] = {}
        dialect = self.dialect
        for batch in in_batches(ids, IN_BATCH):
            marks = self._marks(len(batch))
            where = f"index_id = %s AND vector_id IN ({marks})"
            self._write_lock(self.version_table, "deleted", where, [self.index_id, *batch])
            rows = self._execute(
                f"SELECT vector_id, version, deleted FROM {self.version_table}{dialect.primary_key_hint} "
                f"WHERE {where}{dialect.update_lock(skip_locked=True)}",
                [self.index_id, *batch],
            )
            found.update((int(vector_id), (int(version), bool(deleted))) for vector_id, version, deleted in rows)
        return found

    def forget_versions(self, vector_ids: Sequence[int]) -> None:
        """Delete the version rows of these deleted vectors (only while they are deleted)."""
        for batch in in_batches([int(i) for i in vector_ids]):
            self._execute(
                f"DELETE FROM {self.version_table} WHERE index_id = %s AND deleted = %s "
                f"AND vector_id IN ({self._marks(len(batch))})",
                [self.index_id, True, *batch],
            )

    def current_versions(self, vector_ids: Sequence[int]) -> dict[int, int]:
        """vector id -> current version, for the ids whose rows are not deleted."""
        return {vector_id: version for vector_id, version, deleted in self._version_rows(vector_ids) if not deleted}

    def current_versions_with_keys(self, vector_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """:meth:`current_versions` of a keyed index, each with its row's key: one statement for both."""
        rows = self._version_rows(vector_ids, ", row_key")
        return {vector_id: (version, key) for vector_id, version, deleted, key in rows if not deleted and key is not None}

    def _version_rows(self, vector_ids: Sequence[int], more: str = "") -> list[tuple]:
        """(vector id, version, deleted, *more* columns) of these ids' version rows.

        The deleted flag is read, not filtered on: with ``deleted`` in the
        WHERE clause SQLite searches the ``(index_id, deleted)`` index, every
        live row of the index, instead of the primary key's few (1.5 ms
        against 0.04 ms for a query's 51 ids at 20,000 rows).
        """
        def sql(listed: str) -> str:
            return (
                f"SELECT vector_id, version, deleted{more} FROM {self.version_table} WHERE index_id = %s "
                f"AND vector_id IN ({listed})"
            )

        ids = [int(i) for i in vector_ids]
        return read_by_keys(self.connection, sql, [self.index_id], ids, kind="versions", per_reader=ROWS_PER_READER)

    def current_versions_with_rows(
        self, vector_ids: Sequence[int], table: str, key: str, column: str
    ) -> dict[int, tuple[int, bytes | None]]:
        """:meth:`current_versions`, each with its model row's *column* read by the same statement.

        *table*, its primary key *key* and *column* are quoted names; the
        value is None where the row has no value, or no row is there (for the
        one statement's view, the same as its version's). A query's version
        lookup and the read of the rows it re-ranks are then one round trip.
        Its pace is the rows' (:mod:`.readers`): a model's rows are larger than
        the version rows, and the ones that leave the buffer pool first.
        """
        def sql(listed: str) -> str:
            return (
                f"SELECT v.vector_id, v.version, v.deleted, m.{column} FROM {self.version_table} v "
                f"LEFT JOIN {table} m ON m.{key} = v.vector_id "
                f"WHERE v.index_id = %s AND v.vector_id IN ({listed})"
            )

        ids = [int(i) for i in vector_ids]
        rows = read_by_keys(self.connection, sql, [self.index_id], ids, kind="rows", per_reader=ROWS_PER_READER)
        return {
            vector_id: (version, None if value is None else bytes(value))
            for vector_id, version, deleted, value in rows
            if not deleted
        }

    def deleted_versions(self) -> dict[int, int]:
        """vector id -> version of every deleted vector: a plain read, no lock."""
        rows = self._execute(
            f"SELECT vector_id, version FROM {self.version_table} WHERE index_id = %s AND deleted = %s",
            [self.index_id, True],
        )
        return {int(vector_id): int(version) for vector_id, version in rows}

    def all_versions(self) -> dict[int, tuple[int, bool]]:
        rows = self._execute(
            f"SELECT vector_id, version, deleted FROM {self.version_table} WHERE index_id = %s",
            [self.index_id],
        )
        return {vid: (version, bool(deleted)) for vid, version, deleted in rows}

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
