"""System checks for what can be known at start-up."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db import DatabaseError, connections, models

from .fields import SparseVectorField, VectorField
from .models import ROW_KEY_LENGTH, IndexState, is_integer_key
from .orm.queryset import VectorQuerySet
from .storage import PostingMemory, posting_table_memory
from .storage.dialects import DIALECTS, supported_databases, vendor
from .wording import posting_table_hint, posting_table_warning


def _key_problem(pk: models.Field) -> str | None:
    """What keeps an index from keying its vectors by this primary key, or None."""
    composite = getattr(models, "CompositePrimaryKey", None)
    if composite is not None and isinstance(pk, composite):
        return "is a CompositePrimaryKey"
    if is_integer_key(pk):
        return None
    length = getattr(pk, "max_length", None)
    if length is not None and length > ROW_KEY_LENGTH:
        return f"is a {type(pk).__name__} of up to {length} characters"
    return None


def _vector_models() -> list[Any]:
    return [
        model
        for model in apps.get_models()
        if any(isinstance(field, VectorField) for field in model._meta.concrete_fields)
    ]


@checks.register(checks.Tags.models)
def check_managers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A model with a VectorField needs a default manager whose querysets understand distances.

    Every manager is given such querysets when its model is prepared
    (:func:`vectorindex.orm.queryset.give_vector_querysets`); one whose
    ``get_queryset()`` builds a queryset of its own making is not.
    """
    messages = []
    for model in _vector_models():
        if app_configs is None or model._meta.app_config in app_configs:
            messages.extend(check_model_manager(model))
    return messages


def check_model_manager(model: Any) -> list[checks.CheckMessage]:
    manager = model._default_manager
    if isinstance(manager.get_queryset(), VectorQuerySet):
        return []
    return [
        checks.Warning(
            f"{model._meta.label} has a VectorField, but its default manager "
            f"'{manager.name}' does not return a VectorQuerySet, so distance "
            "expressions (L2Distance, …) cannot be evaluated through it.",
            hint="Let its get_queryset() start from super().get_queryset(), or build "
            "a vectorindex.VectorQuerySet (or a subclass of one).",
            obj=model,
            id="vectorindex.W001",
        )
    ]


@checks.register(checks.Tags.admin)
def check_admin(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Admins of models with vector fields should show vectors compactly."""
    if not apps.is_installed("django.contrib.admin"):
        return []
    from django.contrib import admin

    from .admin import VectorAdminMixin

    messages = []
    for model, model_admin in admin.site._registry.items():
        if app_configs is not None and model._meta.app_config not in app_configs:
            continue
        if model in _vector_models() and not isinstance(model_admin, VectorAdminMixin):
            messages.append(
                checks.Warning(
                    f"The admin of {model._meta.label} does not use VectorAdminMixin: "
                    "its vector fields cannot be shown read-only or in list_display.",
                    hint="Register it with vectorindex.admin.VectorModelAdmin, or add "
                    "VectorAdminMixin to its ModelAdmin's bases.",
                    obj=model_admin.__class__,
                    id="vectorindex.W002",
                )
            )
    return messages


@checks.register(checks.Tags.models)
def check_vector_indexes(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """VectorIndex declarations: options, field, primary key, manager."""
    messages: list[checks.CheckMessage] = []
    for model in apps.get_models():
        if app_configs is None or model._meta.app_config in app_configs:
            messages.extend(check_model_vector_indexes(model))
    return messages


def check_model_vector_indexes(model: Any) -> list[checks.CheckMessage]:
    from .indexes import IvfflatIndex, VectorIndex

    messages: list[checks.CheckMessage] = []
    first: dict[tuple[str, str], VectorIndex] = {}  # (field, distance) -> the index that serves it
    for index in model._meta.indexes:
        if not isinstance(index, VectorIndex):
            continue
        label = f"{model._meta.label}: {type(index).__name__} {index.name!r}"
        served = index if index.problems() else first.setdefault((index.field_name, index.distance), index)
        if served is not index:
            messages.append(
                checks.Warning(
                    f"{label} indexes {index.field_name!r} for the {index.distance} distance, as "
                    f"{type(served).__name__} {served.name!r} does: every write keeps both, and queries "
                    f"read {served.name!r}.",
                    hint="One index a field and distance is enough: remove this one (pgvector projects "
                    "often declare an HNSW and an IVFFlat index, or a half-precision one, side by side).",
                    obj=model,
                    id="vectorindex.W008",
                )
            )
        for problem in index.problems():
            messages.append(checks.Error(f"{label}: {problem}", obj=model, id="vectorindex.E101"))
        if isinstance(index, IvfflatIndex) and index.lists is not None:
            messages.append(
                checks.Warning(
                    f"{label}: lists={index.lists!r} is not used; this index sizes its posting lists "
                    "from its rows as they come and go.",
                    hint="Remove lists=, or tune head_fraction and posting_limit (see the README).",
                    obj=model,
                    id="vectorindex.W007",
                )
            )
        if len(index.fields) == 1:
            try:
                field = model._meta.get_field(index.field_name)
            except FieldDoesNotExist:
                field = None
            if not isinstance(field, VectorField) or not field.indexable:
                kind = "no field" if field is None else f"a {type(field).__name__}"
                messages.append(
                    checks.Error(
                        f"{label} is on {index.field_name!r}, which is {kind}, not a VectorField or HalfVectorField"
                        + (
                            " (no index serves sparse vectors: their distances are answered by the exact scan)."
                            if isinstance(field, SparseVectorField)
                            else " (no index serves bit strings: HammingDistance and JaccardDistance are answered "
                            "by the exact scan)."
                            if isinstance(field, VectorField)
                            else "."
                        ),
                        obj=model,
                        id="vectorindex.E102",
                    )
                )
        key_problem = _key_problem(model._meta.pk)
        if key_problem:
            messages.append(
                checks.Error(
                    f"{label} needs a primary key of one column, an integer or one written in up to "
                    f"{ROW_KEY_LENGTH} characters (a UUID, a string); {model._meta.label}'s {key_problem}.",
                    hint="An integer key is the vector's id; any other is kept, as text, beside the id the index "
                    "gives the vector.",
                    obj=model,
                    id="vectorindex.E103",
                )
            )
        if not isinstance(model._default_manager.get_queryset(), VectorQuerySet):
            messages.append(
                checks.Error(
                    f"{label} needs a VectorQuerySet default manager: bulk_create(), "
                    "update() and bulk_update() through any other manager would leave "
                    "the index behind.",
                    hint="Let its get_queryset() start from super().get_queryset(), or build "
                    "a vectorindex.VectorQuerySet (or a subclass of one).",
                    obj=model,
                    id="vectorindex.E104",
                )
            )
        used, unrouted = _databases(model)
        supported = supported_databases()
        for alias, kind in _unsupported(used):
            messages.append(
                checks.Error(
                    f"{label} is on database '{alias}', which is {kind}: the index needs {supported}.",
                    hint=f"Keep {model._meta.label} on {supported} (a database router decides where "
                    "it is read, written and migrated), or remove the VectorIndex: a VectorField "
                    "without an index works on any database, its queries answered exactly.",
                    obj=model,
                    id="vectorindex.E105",
                )
            )
        for alias, kind in _unsupported(unrouted):
            messages.append(
                checks.Warning(
                    f"{label}: no database router keeps {model._meta.label} off database '{alias}', "
                    f"which is {kind}; `migrate --database {alias}` would create its table there, "
                    f"where the index cannot work (it needs {supported}).",
                    hint=f"Add a database router whose allow_migrate() returns False for "
                    f"{model._meta.label} on '{alias}', or never migrate it there.",
                    obj=model,
                    id="vectorindex.W005",
                )
            )
    return messages


def _databases(model: Any) -> tuple[set[str], set[str]]:
    """(aliases *model* is read from, written to, or routed to be migrated on; aliases only Django's default would migrate it on).

    With no router that says otherwise, Django lets every model be migrated
    on every database: a project with an unrelated extra database (a
    PostgreSQL one for other apps) would have *model* there only if someone
    ran ``migrate --database`` for it.
    """
    from django.db import connections, router

    used = {router.db_for_read(model), router.db_for_write(model)}
    unrouted = set()
    for alias in connections:
        if alias in used:
            continue
        allowed = _routed_migrate(alias, model)
        if allowed:
            used.add(alias)
        elif allowed is None:
            unrouted.add(alias)
    return used, unrouted


def _routed_migrate(alias: str, model: Any) -> bool | None:
    """What the first router with an opinion says of migrating *model* on *alias*; None when none has one.

    Django's ``router.allow_migrate_model`` answers True for "no opinion" too.
    """
    from django.db import router

    for each in router.routers:
        method = getattr(each, "allow_migrate", None)
        if method is None:
            continue
        allowed = method(alias, model._meta.app_label, model_name=model._meta.model_name, model=model)
        if allowed is not None:
            return bool(allowed)
    return None


def _unsupported(aliases: set[str]) -> list[tuple[str, str]]:
    """(alias, vendor) of those of *aliases* on a database the index has no dialect for."""
    found = [(alias, vendor(alias)) for alias in sorted(aliases)]
    return [(alias, name) for alias, name in found if name not in DIALECTS]


@checks.register()
def check_jobs(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Maintenance jobs need somewhere to run, and a periodic scan to catch lost ones."""
    from django.conf import settings

    from .conf import vectorindex_settings
    from .index.registry import declared_indexes

    if not declared_indexes() or vectorindex_settings.JOBS in ("inline", "manual"):
        return []
    broker = getattr(settings, "CELERY_BROKER_URL", None)
    if vectorindex_settings.JOBS == "celery" and not broker:
        return [
            checks.Warning(
                "VECTORINDEX['JOBS'] is 'celery' but CELERY_BROKER_URL is not set: "
                "index maintenance (splits, merges, snapshots) has nowhere to run.",
                hint="Set CELERY_BROKER_URL (redis://… or amqp://…), or VECTORINDEX['JOBS'] = 'inline'.",
                id="vectorindex.W003",
            )
        ]
    schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", {}) or {}
    if broker and not any(entry.get("task") == "vectorindex.scan" for entry in schedule.values()):
        return [
            checks.Warning(
                "Maintenance jobs go to Celery, but no beat schedule runs 'vectorindex.scan': "
                "a job whose enqueue was lost would never run.",
                hint="Add {'task': 'vectorindex.scan', 'schedule': 60} to CELERY_BEAT_SCHEDULE "
                "and run `celery beat`.",
                id="vectorindex.W004",
            )
        ]
    return []


@checks.register(checks.Tags.database)
def check_buffer_pool(app_configs: Any = None, databases: list[str] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Posting data larger than the database server's buffer pool: queries read their lists from disk.

    A database check: Django runs it for the databases ``check --database``
    names and the one ``migrate`` migrates, and for none otherwise. It reads
    the server's statistics, not the tables; a database that cannot be
    reached, or not migrated yet, has nothing to say.
    """
    messages: list[checks.CheckMessage] = []
    for alias in databases or ():
        dialect = DIALECTS.get(vendor(alias))
        if dialect is None or dialect.buffer_pool is None:
            continue  # never connects: SQLite's pages are the operating system's to cache
        try:
            memory = _posting_table_memory(alias)
        except DatabaseError:
            continue
        if memory is not None and memory.too_large:
            messages.append(
                checks.Warning(
                    posting_table_warning(alias, memory),
                    hint=posting_table_hint(memory),
                    id="vectorindex.W006",
                )
            )
    return messages


def _posting_table_memory(alias: str) -> PostingMemory | None:
    """The posting table's size on *alias* against its buffer pool, when an index there is ready; else None."""
    if not IndexState.objects.using(alias).filter(status=IndexState.Status.READY).exists():
        return None
    return posting_table_memory(connections[alias])
