"""Where declared indexes meet their state: the declarations, and their state rows.

Each ``VectorIndex`` in a model's ``Meta.indexes`` is a :class:`Declared` here,
by name; ``sync_states`` gives each its ``IndexState`` row after migrate and
resets a row that another index left behind or whose declaration changed
since its build. The per-process head indexes are :mod:`vectorindex.index.runtime`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, models, router, transaction

from ..fields import VectorField
from ..indexes import VectorIndex
from ..models import IndexState, is_integer_key
from ..storage import Storage, read_only
from ..storage.dialects import DIALECTS, vendor


@dataclass(frozen=True)
class Declared:
    """A VectorIndex as declared on a model."""

    model: type[models.Model]
    field: VectorField
    index: VectorIndex

    @property
    def name(self) -> str:
        return self.index.name

    @property
    def metric(self) -> str:
        return self.index.distance

    @property
    def keyed(self) -> bool:
        """Whether the rows' primary key is not an integer (a UUID, a string): the index then gives its own ids.

        An integer key is the vector id itself; any other is kept as text in
        the vector's version row (``row_key``), which maps it to an id of the
        index's own (:meth:`Storage.ids_of_keys`).
        """
        return not is_integer_key(self.model._meta.pk)

    def key_text(self, pk: Any) -> str:
        """A primary key as the version row keeps it: its canonical text (a UUID's with dashes)."""
        return str(self.model._meta.pk.to_python(pk))

    def key_value(self, text: str) -> Any:
        """The primary key that :meth:`key_text` wrote as *text*."""
        return self.model._meta.pk.to_python(text)

    @property
    def options(self) -> dict[str, Any]:
        """Every tuning option, defaults filled in; ImproperlyConfigured for options the checks refuse.

        Checked once for each set of options (a query reads them several
        times): the declaration's options, checked, are kept on it with what
        they were checked for.
        """
        index = self.index
        key = (index.distance, tuple(index.fields), tuple(index.tuning.items()))
        checked = index.__dict__.get(CHECKED)
        if checked is None or checked[0] != key:
            problems = index.problems()
            if problems:
                raise ImproperlyConfigured(f"{self.model._meta.label}: {' '.join(problems)}")
            checked = (key, index.options)
            index.__dict__[CHECKED] = checked
        return dict(checked[1])


# Where a VectorIndex keeps its options as Declared.options last checked them.
CHECKED = "_vectorindex_checked_options"


_declared_cache: tuple[Any, dict[str, Declared]] | None = None


def declared_indexes() -> dict[str, Declared]:
    """Every VectorIndex on a VectorField of every installed concrete model, by name.

    Options that vectorindex.E101 refuses included: the index is still
    declared, and using it raises ImproperlyConfigured naming them
    (:attr:`Declared.options`) rather than leaving it behind unnoticed.
    Cached until the app registry's model list changes (Django caches
    ``get_models()`` and drops that cache whenever a model is registered).
    """
    global _declared_cache
    models_now = apps.get_models()
    if _declared_cache is not None and _declared_cache[0] is models_now:
        return _declared_cache[1]
    found = {}
    for model, index in _vector_indexes(apps):
        try:
            field = model._meta.get_field(index.field_name)
        except FieldDoesNotExist:
            continue
        if isinstance(field, VectorField) and field.indexable:
            found[index.name] = Declared(model, field, index)
    _declared_cache = (models_now, found)
    return found


def declared_names() -> dict[str, str]:
    """The name of every VectorIndex that a model declares, valid or not, with the model's label.

    What is stored under such a name belongs to that declaration, never to
    the leftovers of a removed index, even while the declaration has an
    option the system checks refuse or names no VectorField.
    """
    return {index.name: model._meta.label for model, index in _vector_indexes(apps)}


def _vector_indexes(app_registry: Any) -> list[tuple[type[models.Model], VectorIndex]]:
    return [
        (model, index)
        for model in app_registry.get_models()
        if not model._meta.proxy
        for index in model._meta.indexes
        if isinstance(index, VectorIndex)
    ]


def index_databases(*, migrated: bool = False, writable: bool = False) -> list[str]:
    """The databases vectorindex's tables may be on, the default first: where the routers allow
    them to be migrated, on a database an index works on (SQLite, MySQL/MariaDB).

    A replica that the routers keep migrations off is not one of them: its
    tables are its primary's. *migrated*: only those where the tables are
    (one read of each database's table names); *writable*: only those that
    take writes (:func:`~vectorindex.storage.read_only`).
    """
    found = []
    for alias in sorted(connections, key=lambda alias: (alias != DEFAULT_DB_ALIAS, alias)):
        if vendor(alias) not in DIALECTS or not router.allow_migrate_model(alias, IndexState):
            continue
        try:
            if migrated and IndexState._meta.db_table not in connections[alias].introspection.table_names():
                continue
            if writable and read_only(alias):
                continue
        except DatabaseError:
            continue  # a database that cannot be reached now holds nothing to do now
        found.append(alias)
    return found


def indexes_of(model: type[models.Model]) -> list[Declared]:
    """The indexes over *model*'s rows: its own and its concrete parents'."""
    model = model._meta.concrete_model
    lineage = {model, *model._meta.get_parent_list()}
    return [d for d in declared_indexes().values() if d.model in lineage]


def index_for(model: type[models.Model], field_name: str, metric: str) -> Declared | None:
    for declared in indexes_of(model):
        if declared.field.name == field_name and declared.metric == metric:
            return declared
    return None


def get_declared(name: str) -> Declared:
    try:
        return declared_indexes()[name]
    except KeyError:
        known = ", ".join(sorted(declared_indexes())) or "none"
        raise LookupError(f"No VectorIndex named {name!r}; declared: {known}.") from None


def sync_states(
    using: str = "default", *, report: Callable[[str], None] | None = None, migrated: Any = None
) -> list[IndexState]:
    """Register every declared index in the state table (run after migrate).

    *migrated* holds the models as the applied migrations left them (the app
    registry of migrate's state; the installed models by default): an index
    they lack is not in the database, its model's table may be gone (``migrate
    app zero``). Its row is registered, marked not declared, and what it holds
    stays (``status`` and ``drop`` treat it as the declared index's).

    An index in the database does not take over what is stored under its
    name for another: contents left behind while no migrated model had the
    index, or stored for another model or field, are deleted and the index is
    marked not built. The migrations that rename an index, its field or its
    model update its row (vectorindex.index.schema, vectorindex.operations). Nor
    are contents kept that were built for other dimensions or another
    distance than the index now declares. *report* is told of each reset,
    with what to run.
    """
    states = []
    present = {index.name: (model._meta.label, index.field_name) for model, index in _vector_indexes(migrated or apps)}
    for name, item in declared_indexes().items():
        values = _row(item)
        if name not in present:
            state, _ = IndexState.objects.using(using).get_or_create(name=name, defaults={**values, "declared": False})
            states.append(state)
            continue
        values["model_label"], values["field_name"] = present[name]
        state, created = IndexState.objects.using(using).get_or_create(name=name, defaults={**values, "declared": True})
        why = None if created else reset_if_left_behind(state, *present[name], item, using)
        IndexState.objects.using(using).filter(pk=state.pk).update(**values, declared=True)
        state.refresh_from_db(using=using)
        changes = reset_if_outdated(state, item, using)
        if report is not None and why is not None:
            report(_left_behind_message(item, why))
        if report is not None and changes:
            report(_reset_message(item, changes))
        states.append(state)
    IndexState.objects.using(using).exclude(name__in=list(present)).update(declared=False)
    return states


def register(declared: Declared, using: str) -> None:
    """*declared*'s state row, if it has none yet (an index used before migrate registered it)."""
    IndexState.objects.using(using).get_or_create(name=declared.name, defaults=_row(declared))


def _row(declared: Declared) -> dict[str, Any]:
    """What a state row says of its declaration."""
    row = {
        "model_label": declared.model._meta.label,
        "field_name": declared.field.name,
        "distance": declared.metric,
        "dimensions": declared.field.dimensions,
    }
    if not declared.index.problems():  # options the checks refuse need not even be JSON
        row["options"] = declared.index.options
    return row


def reset_if_left_behind(state: IndexState, label: str, field_name: str, declared: Declared, using: str) -> str | None:
    """Delete what *state*'s row holds and mark it not built, if it is not the index on *label*'s *field_name*.

    Why, if contents were deleted; None otherwise. The row holds another
    index's contents when it was not declared (its index had left the
    database), or names another model or field.
    """
    was = f"{state.model_label}.{state.field_name}"
    if not state.declared:
        why = "was left behind by an index that had left the database"
        why += "" if was == f"{label}.{field_name}" else f" (on {was})"
    elif was != f"{label}.{field_name}":
        why = f"belonged to an index on {was}"
    else:
        return None
    storage = Storage(connections[using], state.pk, declared.field.dimensions)
    with transaction.atomic(using=using):
        storage.lock_state(exclusive=True)  # a build in progress finishes first
        state.refresh_from_db(using=using, fields=["status"])
        built = state.status != IndexState.Status.EMPTY
        storage.clear()
        # What it was built for was another index's: nothing changed "since it was built".
        storage.set_state(
            status=IndexState.Status.EMPTY, generation=0, wal_lsn=0, payload=json.dumps({}), built_at=None,
            built_dimensions=None, built_distance="", swept_deleted=0,
        )
    return why if built else None


def build_changes(declared: Declared, dimensions: int | None, distance: str) -> list[str]:
    """How *declared* differs from what its index was built for: ``["dimensions 8 → 16"]``.

    Nothing differs from an index never built (no dimensions, no distance).
    """
    changes = []
    if dimensions is not None and dimensions != declared.field.dimensions:
        changes.append(f"dimensions {dimensions} → {declared.field.dimensions}")
    if distance and distance != declared.metric:
        changes.append(f"distance {distance} → {declared.metric}")
    return changes


def reset_if_outdated(state: IndexState, declared: Declared, using: str) -> list[str]:
    """Delete the contents of *state*'s index and mark it not built, if they no longer fit *declared*.

    The changes that made it so, or [] when nothing was reset. The state row
    is locked first, so a build in progress finishes before this looks.
    """

    def changes() -> list[str]:
        if state.status == IndexState.Status.EMPTY:
            return []
        return build_changes(declared, state.built_dimensions, state.built_distance)

    if not changes():
        return []  # the usual case, without a lock
    storage = Storage(connections[using], state.pk, declared.field.dimensions)
    with transaction.atomic(using=using):
        storage.lock_state(exclusive=True)
        state.refresh_from_db(using=using, fields=["status", "built_dimensions", "built_distance"])
        found = changes()
        if not found:
            return []
        storage.clear()
        # built_dimensions and built_distance stay: they say why it is not built.
        storage.set_state(
            status=IndexState.Status.EMPTY, generation=0, wal_lsn=0, payload=json.dumps({}), built_at=None
        )
    state.refresh_from_db(using=using)
    return found


def _left_behind_message(declared: Declared, why: str) -> str:
    return (
        f"Vector index {declared.name} ({declared.model._meta.label}.{declared.field.name}): what was stored under "
        f"this name {why}; it was deleted and the index is not built (queries take the exact path). "
        f"Run `manage.py vectorindex build {declared.name}`."
    )


def _reset_message(declared: Declared, changes: list[str]) -> str:
    field = declared.field
    rows = f" once its rows store {field.dimensions}-dimensional vectors (the build names any that do not)"
    return (
        f"Vector index {declared.name} ({declared.model._meta.label}.{field.name}): {', '.join(changes)} since "
        f"it was built; its contents were deleted and it is not built (queries take the exact path). "
        f"Run `manage.py vectorindex build {declared.name}`"
        f"{rows if any(change.startswith('dimensions') for change in changes) else ''}."
    )


def outdated_message(declared: Declared, changes: list[str]) -> str:
    """What to do about an index built for another declaration than *declared*."""
    return (
        f"{declared.name} was built for another declaration ({', '.join(changes)}); rebuild it with "
        f"`manage.py vectorindex build {declared.name}` (`manage.py migrate` resets it to not built until then)."
    )
