"""What a migration does to an index's stored contents (``RemoveIndex``, ``AddIndex``, a model's rename).

An index keeps its heads, posting lists, versions, head WAL and snapshots in
vectorindex's tables under its state row, which is found by the index's name.
``RemoveIndex`` deletes them at the end of its migration, unless the same
migration adds the index back (Django writes a change of options, a rename
where the database has no ``RENAME INDEX``, and the rename of the indexed
field as a removal and an addition): then the added index takes them over.
What an index left behind otherwise, :mod:`vectorindex.index.removal` lists
and drops.

``VectorIndex``'s DDL hooks call :func:`defer_drop` and :func:`adopt`, and the
model-rename operation :func:`relabel`: this module imports nothing of the
index layer, so that the index's declaration never imports back what reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import router
from django.db.backends.ddl_references import Statement

from ..models import (
    Head,
    IndexState,
    JobRun,
    Posting,
    Snapshot,
    SnapshotChunk,
    Version,
    WalEntry,
)

__all__ = ["adopt", "defer_drop", "drop_statements", "relabel", "rename_statements"]


def drop_statements(connection: Any, name: str) -> list[tuple[str, list[str]]]:
    """(sql, params) that delete index *name*'s contents, then its state row.

    The state row goes last: a drop cut short (MySQL runs a migration's
    statements outside a transaction) leaves it, and what is left is still a
    leftover that ``status`` lists and ``drop`` finishes. The index is found
    with ``= (SELECT …)``, not ``IN (SELECT …)``: MariaDB before 11.1 reads the
    whole table for an IN-subquery of a DELETE, but range-scans by a scalar one.
    """
    quote = connection.ops.quote_name
    state = quote(IndexState._meta.db_table)
    snapshot = quote(Snapshot._meta.db_table)
    index_id = f"(SELECT id FROM {state} WHERE name = %s)"
    statements = [
        f"DELETE FROM {quote(model._meta.db_table)} WHERE index_id = {index_id}"
        for model in (Posting, Version, WalEntry)
    ]
    statements += [
        f"DELETE FROM {quote(SnapshotChunk._meta.db_table)} "
        f"WHERE snapshot_id IN (SELECT id FROM {snapshot} WHERE index_id = {index_id})",
        f"DELETE FROM {snapshot} WHERE index_id = {index_id}",
        f"DELETE FROM {quote(Head._meta.db_table)} WHERE index_id = {index_id}",
        f"DELETE FROM {quote(JobRun._meta.db_table)} WHERE index_id = {index_id}",
        f"DELETE FROM {state} WHERE name = %s",
    ]
    return [(sql, [name]) for sql in statements]


def rename_statements(connection: Any, old: str, new: str) -> list[tuple[str, list[str]]]:
    """(sql, params) that store index *old*'s contents as *new*'s, dropping whatever *new* had.

    Index names are unique in a project, so a state row already named *new*
    is a leftover, or the empty row registered when a migration was unapplied.
    """
    state = connection.ops.quote_name(IndexState._meta.db_table)
    return [*drop_statements(connection, new), (f"UPDATE {state} SET name = %s WHERE name = %s", [new, old])]


class _Deferred(Statement):
    """A statement left in the schema editor's deferred SQL, run at the end of the migration.

    Its parts are plain text, so Django's clean-ups of deferred SQL that
    refers to a dropped table or index leave it alone.
    """

    def __init__(self, schema_editor: Any, sql: str, params: list[str]) -> None:
        # Deferred SQL is executed without parameters: the values are written
        # in as literals, with "%" doubled for the %-formatting still applied.
        literals = tuple(str(schema_editor.quote_value(value)).replace("%", "%%") for value in params)
        super().__init__("%(sql)s", sql=sql % literals)


@dataclass(eq=False)
class _Removal:
    """A VectorIndex removed in this migration: its contents go at the end, unless an addition takes them over."""

    index: Any
    table: str
    field_name: str  # as a rename later in the migration calls the field
    statements: list[_Deferred]


class _Pending:
    """The VectorIndex removals of one migration (one schema editor) that no addition took over yet.

    What they pair on lives here, not in the deferred SQL, which only carries
    their statements to the end of the migration: there ``migrate`` runs them
    (in the migration's transaction where it has one) and ``sqlmigrate``
    prints them. Django's SQLite schema editor alters a table by remaking it,
    and a remake runs every statement deferred so far and forgets it (it
    means the indexes of the new table). Ours would then delete an index's
    contents before the ``AddIndex`` after it could keep them, so around a
    remake they are set aside and put back. And a field renamed in between
    is followed: makemigrations writes the rename of an indexed field as
    RemoveIndex, RenameField, AddIndex on the new name.
    """

    def __init__(self, schema_editor: Any) -> None:
        self.schema_editor = schema_editor
        self.removals: list[_Removal] = []
        # Wrapped on this schema editor alone, which lives for one migration.
        schema_editor.alter_field = self._following_renames(schema_editor.alter_field)
        remake = getattr(schema_editor, "_remake_table", None)
        if remake is not None:
            schema_editor._remake_table = self._setting_ours_aside(remake)

    def remove(self, index: Any, table: str) -> None:
        statements = self._defer(drop_statements(self.schema_editor.connection, index.name))
        self.removals.append(_Removal(index, table, index.field_name, statements))

    def add(self, index: Any, table: str) -> None:
        """Take over the contents of a removal that fits *index*, if there is one.

        It must be on the same table and field with the same distance (its
        contents are then right for this one); other options (``probes``,
        ``posting_limit``, …) take effect as they are registered. One of the
        same name is preferred; one of another name is renamed.
        """
        candidates = [
            removal
            for removal in self.removals
            if removal.table == table
            and removal.field_name == index.field_name
            and removal.index.distance == index.distance
        ]
        if not candidates:
            return
        taken = next((removal for removal in candidates if removal.index.name == index.name), candidates[0])
        self._forget(taken)
        if taken.index.name != index.name:
            # The rename deletes what was stored under the new name first: a
            # removal of that name has nothing left for anyone to take over.
            for removal in [removal for removal in self.removals if removal.index.name == index.name]:
                self._forget(removal)
            self._defer(rename_statements(self.schema_editor.connection, taken.index.name, index.name))
        if taken.index.field_name != index.field_name:
            # The state row names the field from this migration on.
            state = self.schema_editor.connection.ops.quote_name(IndexState._meta.db_table)
            self._defer([(f"UPDATE {state} SET field_name = %s WHERE name = %s", [index.field_name, index.name])])

    def _defer(self, statements: list[tuple[str, list[str]]]) -> list[_Deferred]:
        deferred = [_Deferred(self.schema_editor, sql, params) for sql, params in statements]
        self.schema_editor.deferred_sql.extend(deferred)
        return deferred

    def _forget(self, removal: _Removal) -> None:
        self.removals.remove(removal)
        mine = {id(statement) for statement in removal.statements}
        self.schema_editor.deferred_sql[:] = [s for s in self.schema_editor.deferred_sql if id(s) not in mine]

    def _following_renames(self, alter_field: Callable[..., Any]) -> Callable[..., Any]:
        def follow(model: Any, old_field: Any, new_field: Any, *args: Any, **kwargs: Any) -> Any:
            done = alter_field(model, old_field, new_field, *args, **kwargs)
            for removal in self.removals:
                if removal.table == model._meta.db_table and removal.field_name == old_field.name:
                    removal.field_name = new_field.name
            return done

        return follow

    def _setting_ours_aside(self, remake: Callable[..., Any]) -> Callable[..., Any]:
        def remake_table(*args: Any, **kwargs: Any) -> Any:
            deferred = self.schema_editor.deferred_sql
            ours = [statement for statement in deferred if isinstance(statement, _Deferred)]
            deferred[:] = [statement for statement in deferred if not isinstance(statement, _Deferred)]
            try:
                return remake(*args, **kwargs)
            finally:
                self.schema_editor.deferred_sql.extend(ours)  # a new list: the remake replaced it

        return remake_table


_PENDING = "_vectorindex_pending"


def _stored_here(connection: Any) -> bool:
    """Whether vectorindex's tables are in this database (allowed there, and migrated already)."""
    return router.allow_migrate_model(connection.alias, IndexState) and (
        IndexState._meta.db_table in connection.introspection.table_names()
    )


def defer_drop(index: Any, model: Any, schema_editor: Any) -> None:
    """``RemoveIndex``: delete *index*'s stored contents at the end of the migration.

    Deferred rather than run at once, so that an ``AddIndex`` of the same
    field later in the migration can take them over (:func:`adopt`). The
    statements are the schema editor's, so ``sqlmigrate`` prints them and an
    atomic migration runs them in its transaction.
    """
    if not _stored_here(schema_editor.connection):
        return
    pending = getattr(schema_editor, _PENDING, None)
    if pending is None:
        pending = _Pending(schema_editor)
        setattr(schema_editor, _PENDING, pending)
    pending.remove(index, model._meta.db_table)


def adopt(index: Any, model: Any, schema_editor: Any) -> None:
    """``AddIndex``: take over the contents of an index removed earlier in this migration (:meth:`_Pending.add`)."""
    pending = getattr(schema_editor, _PENDING, None)
    if pending is not None:
        pending.add(index, model._meta.db_table)


def relabel(schema_editor: Any, names: list[str], old: str, new: str) -> None:
    """In a migration that renames model *old* to *new*: the state rows of its indexes *names* say so."""
    if not names or not _stored_here(schema_editor.connection):
        return
    state = schema_editor.connection.ops.quote_name(IndexState._meta.db_table)
    for name in names:
        schema_editor.execute(f"UPDATE {state} SET model_label = %s WHERE name = %s AND model_label = %s", [new, name, old])
