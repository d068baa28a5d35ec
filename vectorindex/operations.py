"""Migration operations: a renamed VectorIndex, or the model under one, keeps what the index stored.

``makemigrations`` writes Django's ``RenameIndex`` when only an index's name
changes. Django renames with ``ALTER TABLE … RENAME INDEX`` where the database
can (MySQL, MariaDB), and by removing and adding the index elsewhere. A
VectorIndex has no index in the database to rename, so the first fails; its
contents live in vectorindex's tables under its name. ``migrate`` therefore
runs each ``RenameIndex`` as :class:`RenameIndex` below (a ``pre_migrate``
receiver swaps them), which removes and adds a VectorIndex on every database:
the addition takes the removed index's contents over under the new name
(:func:`vectorindex.index.schema.adopt`). Other indexes are renamed as Django does.

An index's state row also names its model, and the end of ``migrate`` resets
an index whose row names another one (what it holds is then some other
index's). A ``RenameModel`` runs as :class:`RenameModel`, which says the new
name in the rows of the model's indexes, in the migration that renames it.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

from .index.schema import relabel
from .indexes import VectorIndex

__all__ = ["RenameIndex", "RenameModel", "VectorExtension", "rename_vector_indexes"]


class RenameIndex(migrations.RenameIndex):
    """Django's ``RenameIndex``, which moves a VectorIndex's stored contents to its new name."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        # Backwards, Django swaps the names and comes here too.
        old = self._vector_index(from_state, app_label, self.old_name)
        if old is None:
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            new = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.new_name)
            schema_editor.remove_index(model, old)
            schema_editor.add_index(model, new)

    def _vector_index(self, state: Any, app_label: str, name: str | None) -> VectorIndex | None:
        if name is None:  # an unnamed index of index_together
            return None
        index = state.models[app_label, self.model_name_lower].get_index_by_name(name)
        return index if isinstance(index, VectorIndex) else None


class VectorExtension(migrations.operations.base.Operation):
    """pgvector's ``VectorExtension``: ``CREATE EXTENSION vector`` there, nothing here.

    Migrations written for pgvector run unchanged: vectors need no extension
    in this app's databases.
    """

    reversible = True
    reduces_to_sql = False

    def __init__(self, hints: dict[str, Any] | None = None) -> None:
        self.hints = hints or {}

    def deconstruct(self) -> tuple[str, list, dict]:
        return "vectorindex.VectorExtension", [], {"hints": self.hints} if self.hints else {}

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        pass

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        pass

    def describe(self) -> str:
        return "Creates extension vector (nothing to do: vectors need no extension here)"

    @property
    def migration_name_fragment(self) -> str:
        return "create_extension_vector"


class RenameModel(migrations.RenameModel):
    """Django's ``RenameModel``, which also renames the model in its VectorIndexes' state rows."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        # Backwards, Django swaps the names and comes here too.
        super().database_forwards(app_label, schema_editor, from_state, to_state)
        new_model = to_state.apps.get_model(app_label, self.new_name)
        if self.allow_migrate_model(schema_editor.connection.alias, new_model):
            old_model = from_state.apps.get_model(app_label, self.old_name)
            names = [index.name for index in new_model._meta.indexes if isinstance(index, VectorIndex)]
            relabel(schema_editor, names, old_model._meta.label, new_model._meta.label)


def rename_vector_indexes(plan: list[tuple[Any, bool]] | None = None, **kwargs: Any) -> None:
    """``pre_migrate``: the migrations about to run rename indexes with :class:`RenameIndex`, models with :class:`RenameModel`."""
    for migration, _backwards in plan or ():
        migration.operations = [_ours(op) for op in migration.operations]


def _ours(operation: Any) -> Any:
    if type(operation) is migrations.RenameIndex:
        return RenameIndex(
            operation.model_name, operation.new_name, old_name=operation.old_name, old_fields=operation.old_fields
        )
    if type(operation) is migrations.RenameModel:
        return RenameModel(operation.old_name, operation.new_name)
    return operation
