"""Admin integration: vectors shown compactly, never as a thousand numbers.

Editable vector fields are a plain text input of ``[1.0, 2.0, …]`` with any
ModelAdmin; :class:`VectorAdminMixin` gives them
:class:`~vectorindex.forms.VectorPreviewWidget` (a summary line over a
collapsed textarea, open when a required vector is missing). Read-only display — in
``readonly_fields``, for users with view permission only, and in
``list_display`` — goes through Django's ``display_for_field``, which cannot show
a numpy array (it asks ``array in EMPTY_VALUES``). :class:`VectorAdminMixin`
swaps those places for a preview: the dimensions and the first few values, with
the full vector on demand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode

import numpy as np
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponse, HttpResponseRedirect, QueryDict
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from .conf import vectorindex_settings
from .engine import codec
from .engine.calibration import Calibration
from .exceptions import InvariantViolated, VectorIndexError
from .fields import VectorField
from .forms import VectorPreviewWidget
from .index.registry import index_databases
from .models import Head, IndexState, JobRun, Version
from .storage import posting_table_memory
from .values import SparseVector
from .wording import (
    buffer_pool_warning,
    posting_data,
    posting_table_hint,
    posting_table_warning,
)

__all__ = ["IndexStateAdmin", "VectorAdminMixin", "VectorModelAdmin"]

PREVIEW_PREFIX = "vector_preview__"


def preview_html(vector: Any, full: bool = True) -> str:
    """A stored value as the admin shows it: a one-line summary, over the whole value when *full* and it is long."""
    if vector is None:
        return "-"
    if isinstance(vector, str):  # a BitField's bits
        shown = vector if len(vector) <= BITS_SHOWN else vector[:BITS_SHOWN] + "…"
        return _summary_html(f"{len(vector):,} bits: {shown}", vector, full and len(vector) > BITS_SHOWN)
    if isinstance(vector, SparseVector):
        shown = vectorindex_settings.ADMIN_PREVIEW_VALUES
        nonzero = len(vector.indices())
        entries = [f"{i + 1}:{v:.4g}" for i, v in zip(vector.indices()[:shown], vector.values()[:shown])]
        more = ", …" if nonzero > shown else ""
        summary = f"{vector.dimensions():,} dimensions, {nonzero:,} non-zero: {{{', '.join(entries)}{more}}}"
        return _summary_html(summary, vector.to_text(), full and nonzero > shown)
    vector = np.asarray(vector, dtype=np.float32)
    return _summary_html(codec.preview(vector, vectorindex_settings.ADMIN_PREVIEW_VALUES), codec.to_text(vector), full)


# Bits a preview shows before "…".
BITS_SHOWN = 64


def _summary_html(summary: str, whole: str, details: bool) -> str:
    """*summary* alone (its text as the title), or over *whole* in a collapsed ``<details>``."""
    if not details:
        return format_html('<span title="{}">{}</span>', summary, summary)
    return format_html(
        '<details class="vectorindex-vector"><summary>{}</summary>'
        '<code style="white-space: pre-wrap; word-break: break-all">{}</code></details>',
        summary,
        whole,
    )


# The annotation that carries each row's distance in a changelist listed by similarity.
SIMILARITY = "vectorindex_similarity"


@dataclass
class Neighbours:
    """What a change page's "nearest rows" panel shows."""

    field: Any
    distance: str
    rows: list[tuple[Any, float | None, str | None]]  # (row, distance, change or view URL or None)
    answered_by: str | None  # "index", "exact", or None (the row has no vector)
    milliseconds: float
    listing: str  # the changelist of every row, nearest first


class SimilarToFilter(admin.SimpleListFilter):
    """``?similar_to=<pk>``: the changelist lists every row by its distance to that row's vector, nearest first."""

    title = "similar to"
    parameter_name = "similar_to"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        if value is None:
            return []
        try:
            row = self.admin_queryset.filter(pk=value).first()
        except (ValueError, ValidationError):  # not a key of this model
            row = None
        return [(value, str(row) if row is not None else f"{value} (not found)")]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        if self.value() is None:
            return queryset
        field, distance = self.model_admin_similarity
        try:  # through the admin's queryset: a row this user may not see is no row
            visible = self.admin_queryset.filter(pk=self.value())
            row = visible.values_list(field.attname, flat=True).first()
        except (ValueError, ValidationError):  # not a key of this model
            row = None
        if row is None:  # no such row, or no vector: nothing is nearer than anything
            return queryset.none()
        return queryset.annotate(**{SIMILARITY: distance(field.name, row)})

    def __init__(self, request: Any, params: Any, model: Any, model_admin: Any) -> None:
        self.model_admin_similarity = model_admin.similarity()
        self.admin_queryset = model_admin.get_queryset(request)
        super().__init__(request, params, model, model_admin)


class VectorAdminMixin:
    """Shows a model's vector fields compactly wherever the admin displays them; finds a row's nearest rows.

    ``similar_items`` (10; 0 for none): the nearest rows a change page lists,
    by ``similar_field`` (the field an index serves, else the first vector
    field) and the index's distance (L2 without one). The changelist gets an
    action that lists every row by its distance to a chosen one, and the
    filter that does it (``?similar_to=<pk>``).
    """

    similar_items = 10
    similar_field: str | None = None
    change_form_template = "vectorindex/admin/change_form.html"

    def similarity(self) -> tuple[Any, type]:
        """(the vector field rows are compared by, the distance expression): the index's where one serves it."""
        from .expressions import DISTANCE_FOR, L2Distance
        from .index.registry import indexes_of

        indexed = {declared.field.name: declared.metric for declared in indexes_of(self.model)}
        name = self.similar_field or next(iter(indexed), None) or next(iter(sorted(self._comparable_fields())), None)
        if name is None:
            raise ImproperlyConfigured(f"{type(self).__name__}: {self.model._meta.label} has no vector field to compare.")
        return self.model._meta.get_field(name), DISTANCE_FOR.get(indexed.get(name), L2Distance)

    def _comparable_fields(self) -> set[str]:
        return {
            field.name
            for field in self.model._meta.concrete_fields
            if isinstance(field, VectorField) and field.indexable
        }

    def get_list_filter(self, request: Any) -> list:
        found = list(super().get_list_filter(request))
        return [*found, SimilarToFilter] if self._comparable_fields() else found

    def get_actions(self, request: Any, action_location: Any = None) -> dict:
        # action_location: Django 6.1's (the changelist's actions, or a change form's); 5.2 passes none.
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)
        if self._comparable_fields() and getattr(action_location, "value", "CHANGE_LIST") == "CHANGE_LIST":
            actions["list_similar"] = (
                type(self).list_similar, "list_similar", "List rows by similarity to the selected one"
            )
        return actions

    def list_similar(self, request: Any, queryset: QuerySet) -> HttpResponseRedirect | None:
        """The changelist action: every row, nearest to the one selected first."""
        chosen = list(queryset.values_list("pk", flat=True)[:2])
        if len(chosen) != 1:
            self.message_user(request, "Select one row to list the rows most similar to it.", messages.WARNING)
            return None
        opts = self.model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=self.admin_site.name)
        return HttpResponseRedirect(f"{url}?{urlencode({SimilarToFilter.parameter_name: chosen[0]})}")

    def get_changelist(self, request: Any, **kwargs: Any) -> type:
        base = super().get_changelist(request, **kwargs)
        if SimilarToFilter.parameter_name not in request.GET or not self._comparable_fields():
            return base

        class SimilarChangeList(base):
            # Nearest first, ties by key: the order the index can answer.
            def get_ordering(self, request: Any, queryset: QuerySet) -> list:
                if SIMILARITY not in queryset.query.annotations:  # no such row: the filter left none
                    return super().get_ordering(request, queryset)
                return [SIMILARITY, "pk"]

        return SimilarChangeList

    def get_list_display(self, request: Any) -> list:
        shown = self._list_display_with_previews(request)
        if SimilarToFilter.parameter_name in request.GET and self._comparable_fields():
            shown.append("similarity_distance")
        return shown

    @admin.display(description="distance")
    def similarity_distance(self, obj: Any) -> str:
        value = getattr(obj, SIMILARITY, None)
        return "-" if value is None else f"{value:.4g}"

    def render_change_form(self, request: Any, context: dict, add: bool = False, change: bool = False,
                           form_url: str = "", obj: Any = None) -> Any:
        if obj is not None and not add and self.similar_items and self._comparable_fields():
            context["vector_neighbours"] = self.nearest_rows(request, obj)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def nearest_rows(self, request: Any, obj: Any) -> Neighbours:
        """The rows nearest to *obj* that this user may see, by :meth:`similarity`, and what answered."""
        field, distance = self.similarity()
        opts = self.model._meta
        listing = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=self.admin_site.name)
        listing = f"{listing}?{urlencode({SimilarToFilter.parameter_name: obj.pk})}"
        vector = getattr(obj, field.attname)
        if vector is None:
            return Neighbours(field, distance.__name__, [], None, 0.0, listing)
        started = time.perf_counter()
        queryset = (
            self.get_queryset(request)
            .exclude(pk=obj.pk)
            .filter(**{f"{field.name}__isnull": False})
            .annotate(**{SIMILARITY: distance(field.name, vector)})
            .order_by(SIMILARITY, "pk")[: self.similar_items]
        )
        found = list(queryset)
        elapsed = (time.perf_counter() - started) * 1000
        may_open = self.has_view_or_change_permission(request)
        rows = [
            (
                row,
                getattr(row, SIMILARITY),
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk], current_app=self.admin_site.name)
                if may_open
                else None,
            )
            for row in found
        ]
        return Neighbours(field, distance.__name__, rows, getattr(queryset, "answered_by", None), elapsed, listing)

    def formfield_for_dbfield(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(db_field, VectorField) and db_field.indexable and "widget" not in kwargs:
            kwargs["widget"] = VectorPreviewWidget
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def _vector_field_names(self) -> set[str]:
        return {
            field.name
            for field in self.model._meta.concrete_fields
            if isinstance(field, VectorField)
        }

    def __getattr__(self, name: str) -> Callable[[Any], str]:
        # Resolves the preview names used below; admin looks them up on the
        # ModelAdmin like any display method.
        if name.startswith(PREVIEW_PREFIX):
            field_name = name.removeprefix(PREVIEW_PREFIX)
            in_list = field_name.endswith("__list")
            field_name = field_name.removesuffix("__list")
            if field_name not in self._vector_field_names():
                raise AttributeError(name)
            field = self.model._meta.get_field(field_name)

            def show(obj: Any) -> str:
                return preview_html(getattr(obj, field.attname), full=not in_list)

            show.short_description = field.verbose_name
            return show
        raise AttributeError(name)

    def _swap(self, names: Any, vector_names: set[str]) -> list:
        return [PREVIEW_PREFIX + name if name in vector_names else name for name in names]

    def get_readonly_fields(self, request: Any, obj: Any = None) -> list:
        return self._swap(super().get_readonly_fields(request, obj), self._vector_field_names())

    def get_fieldsets(self, request: Any, obj: Any = None) -> list:
        fieldsets = super().get_fieldsets(request, obj)
        vector_names = self._vector_field_names()
        if obj is None or self.has_change_permission(request, obj):
            readonly = set(super().get_readonly_fields(request, obj))
            vector_names &= readonly
        swapped = []
        for title, options in fieldsets:
            options = dict(options)
            options["fields"] = [
                tuple(self._swap(line, vector_names))
                if isinstance(line, (list, tuple))
                else self._swap([line], vector_names)[0]
                for line in options.get("fields", ())
            ]
            swapped.append((title, options))
        return swapped

    def _list_display_with_previews(self, request: Any) -> list:
        vector_names = self._vector_field_names()
        return [
            f"{PREVIEW_PREFIX}{name}__list" if name in vector_names else name
            for name in super().get_list_display(request)
        ]


class VectorModelAdmin(VectorAdminMixin, admin.ModelAdmin):
    """A ModelAdmin that shows vector fields compactly."""


# Index health ----------------------------------------------------------------------


class DatabaseFilter(admin.SimpleListFilter):
    """Which database's indexes the list shows (``?database=``), where vectorindex's tables are on more than one.

    Each database has indexes of its own (heads, lists, WAL), under the same
    names: the list shows one database at a time, the default first; the
    pages and actions reached from it keep to that database.
    """

    title = "database"
    parameter_name = "database"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        databases = index_databases()
        return [(alias, alias) for alias in databases] if len(databases) > 1 else []

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        return queryset  # IndexStateAdmin.get_queryset() reads the database

    def choices(self, changelist: Any) -> Any:
        current = self.value() or DEFAULT_DB_ALIAS
        for alias, title in self.lookup_choices:
            yield {
                "selected": current == alias,
                "query_string": changelist.get_query_string({self.parameter_name: alias}),
                "display": title,
            }


def requested_database(request: Any) -> str:
    """The database an index page or action is for: ``?database=`` (or the list's, kept by its links), else the default."""
    alias = request.GET.get(DatabaseFilter.parameter_name)
    if alias is None:
        alias = QueryDict(request.GET.get("_changelist_filters", "")).get(DatabaseFilter.parameter_name)
    return alias if alias in index_databases() else DEFAULT_DB_ALIAS


@admin.register(IndexState)
class IndexStateAdmin(admin.ModelAdmin):
    """Each vector index at a glance: status, size, WAL, posting data against the buffer pool; snapshot and check actions."""

    list_display = [
        "name", "model_label", "field_name", "distance", "dimensions", "status", "heads", "vectors", "probes",
        "wal_lsn", "built_at",
    ]
    list_filter = [DatabaseFilter, "status", "distance", "declared"]
    actions = ["build_indexes", "maintain_indexes", "check_invariants", "recover_indexes", "take_snapshot"]
    exclude = ["payload", "calibration"]  # shown as payload_format and calibration_summary
    SHOWN_AS = {"payload": "payload_format", "calibration": "calibration_summary"}

    def get_readonly_fields(self, request: Any, obj: Any = None) -> list[str]:
        return [
            *(["database"] if len(index_databases()) > 1 else []),
            "health",
            *(self.SHOWN_AS.get(field.name, field.name) for field in IndexState._meta.fields),
            "posting_data",
        ]

    def get_list_display(self, request: Any) -> list[str]:
        shown = list(super().get_list_display(request))
        return [*shown[:1], "database", *shown[1:]] if len(index_databases()) > 1 else shown

    @admin.display(description="database")
    def database(self, obj: IndexState) -> str:
        return obj._state.db

    @admin.display(description="health")
    def health(self, obj: IndexState) -> str:
        """What ``vectorindex status`` reports, at a glance, with the posting lists' sizes drawn (server-side SVG)."""
        from .index.recovery import status
        from .index.registry import get_declared

        try:
            declared = get_declared(obj.name)
            report = status(declared, obj._state.db)
            if "heads" in report:
                sizes = _list_sizes(declared, obj._state.db)
                report["due"] = _due(declared, obj._state.db)
                report["stale"] = _stale(declared, obj._state.db)
                report["head_changes"] = _head_changes(obj)
                report["jobs"] = _recent_jobs(obj)
            else:
                sizes = []
        except (LookupError, VectorIndexError) as error:
            return f"- ({error})"
        return health_html(report, sizes)

    @admin.display(description="probes")
    def probes(self, obj: IndexState) -> str:
        """Lists a query reads by default: declared, or calibrated (with the recall measured)."""
        from .index.registry import declared_indexes

        declared = declared_indexes().get(obj.name)
        fixed = declared.index.tuning.get("probes") if declared is not None else None
        if fixed is not None:
            return f"{fixed} (declared)"
        found = Calibration.from_state(obj.calibration)
        if found is None:
            return "- (not calibrated)"
        if not found.queries:
            return f"{found.probes} (every list)"
        return f"{found.probes} (recall {found.recall:.3f})"

    @admin.display(description="calibration")
    def calibration_summary(self, obj: IndexState) -> str:
        """What the last calibration measured, and its curve: the recall within reach at each number of probes."""
        found = Calibration.from_state(obj.calibration)
        if found is None:
            return "not calibrated yet: `manage.py vectorindex calibrate` measures it"
        curve = ", ".join(f"{p} → {share:.3f}" for p, share in found.curve)
        return (
            f"{found.describe()} (of {found.vectors:,} vectors, {found.heads:,} heads), {found.at[:16].replace('T', ' ')}; "
            f"neighbours within reach by probes: {curve}"
        )

    @admin.display(description="posting data")
    def posting_data(self, obj: IndexState) -> str:
        """The index's posting data against the server's buffer pool, as ``status`` shows it (one index: its rows are summed)."""
        from .index.recovery import memory
        from .index.registry import get_declared

        try:
            found = memory(get_declared(obj.name), obj._state.db)
        except (LookupError, VectorIndexError):
            found = None  # no model declares it, or it cannot be opened
        if found is None:
            return "-"
        warning = buffer_pool_warning(found)
        if warning is None:
            return posting_data(found)
        return format_html("{}<br><strong>Warning: {}</strong>", posting_data(found), warning)

    def changelist_view(self, request: Any, extra_context: dict | None = None) -> HttpResponse:
        # The list weighs the posting table by the server's statistics: one
        # cheap read a page, not a sum over every listed index's rows.
        if request.method == "GET":
            using = self.get_queryset(request).db
            memory = posting_table_memory(connections[using])
            if memory is not None and memory.too_large:
                warning = f"{posting_table_warning(using, memory)} {posting_table_hint(memory)}"
                self.message_user(request, warning, messages.WARNING)
        return super().changelist_view(request, extra_context)

    @admin.display(description="payload")
    def payload_format(self, obj: IndexState) -> str:
        """The stored format and how many values each of its parameters holds,
        not the parameters themselves (int8's centre is a number a dimension)."""
        payload = dict(obj.payload or {})
        if not payload:
            return "-"
        parts = [str(payload.pop("format", "?"))]
        for key, value in payload.items():
            parts.append(f"{key}: {len(value)} values" if isinstance(value, list) else f"{key}: {value}")
        return ", ".join(parts)

    def has_add_permission(self, request: Any) -> bool:
        return False  # indexes are declared in models, not here

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # removing the VectorIndex from Meta.indexes does that

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        # Nothing here is edited by hand, and a save would write back every
        # column over what a job changed meanwhile: the page is for viewing.
        return False

    def get_queryset(self, request: Any) -> QuerySet:
        # The counts come with the list's one query, not one query per row.
        return super().get_queryset(request).using(requested_database(request)).annotate(
            alive_heads=_count(Head.objects.filter(index=OuterRef("pk"), alive=True), "index"),
            live_vectors=_count(Version.objects.filter(index_id=OuterRef("pk"), deleted=False), "index_id"),
        )

    @admin.display(description="alive heads", ordering="alive_heads")
    def heads(self, obj: IndexState) -> int:
        return obj.alive_heads

    @admin.display(description="vectors", ordering="live_vectors")
    def vectors(self, obj: IndexState) -> int:
        return obj.live_vectors

    # The actions need permissions of their own (IndexState.Meta.permissions):
    # a user who may only view the list is neither offered them nor can post them.

    def _has_permission(self, request: Any, action: str) -> bool:
        codename = get_permission_codename(action, self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def has_snapshot_permission(self, request: Any) -> bool:
        return self._has_permission(request, "snapshot")

    def has_check_permission(self, request: Any) -> bool:
        return self._has_permission(request, "check")

    def has_build_permission(self, request: Any) -> bool:
        return self._has_permission(request, "build")

    def has_maintain_permission(self, request: Any) -> bool:
        return self._has_permission(request, "maintain")

    def has_recover_permission(self, request: Any) -> bool:
        return self._has_permission(request, "recover")

    @admin.action(description="Build the selected indexes again", permissions=["build"])
    def build_indexes(self, request: Any, queryset: Any) -> None:
        from .index.build import build
        from .wording import built_lines

        self._each(request, queryset, lambda declared, using: "; ".join(built_lines(declared.name, build(declared, using))))

    @admin.action(description="Run the selected indexes' due maintenance now", permissions=["maintain"])
    def maintain_indexes(self, request: Any, queryset: Any) -> None:
        from .index.maintenance import maintain

        def run(declared: Any, using: str) -> str:
            result = maintain(declared, using)
            ran = [outcome.job for outcome in result.outcomes if not outcome.busy]
            done = f"{len(ran)} jobs ({', '.join(sorted(set(ran)))})" if ran else "nothing was due"
            if result.finished:
                return f"{done}; the index is in shape"
            return f"{done}; more is due (other jobs held locks): run it again, or let the workers do it"

        self._each(request, queryset, run)

    @admin.action(description="Reload the selected indexes' head indexes (recover)", permissions=["recover"])
    def recover_indexes(self, request: Any, queryset: Any) -> None:
        from .index.recovery import recover

        def run(declared: Any, using: str) -> str:
            found = recover(declared, using)
            loaded = f"head index loaded from the {found.source}, {found.heads} heads at LSN {found.lsn}"
            if found.problems:
                return f"{loaded}; found and replaced: {'; '.join(found.problems)}; take a snapshot to start from it"
            return loaded

        self._each(request, queryset, run)

    def _each(self, request: Any, queryset: Any, work: Callable[[Any, str], str]) -> None:
        # The name is quoted: the admin capitalises a message's first letter,
        # which would misspell an index name that began it.
        from .index.registry import get_declared

        where = "" if queryset.db == DEFAULT_DB_ALIAS else f" on database “{queryset.db}”"
        for state in queryset:
            try:
                text = work(get_declared(state.name), queryset.db)
                self.message_user(request, f"“{state.name}”{where}: {text}", messages.SUCCESS)
            except (LookupError, VectorIndexError) as error:
                self.message_user(request, f"“{state.name}”{where}: {error}", messages.ERROR)

    @admin.action(description="Take a snapshot of the selected indexes", permissions=["snapshot"])
    def take_snapshot(self, request: Any, queryset: Any) -> None:
        from .index.recovery import take_snapshot

        self._each(request, queryset, lambda declared, using: f"snapshot at LSN {take_snapshot(declared, using).lsn}")

    @admin.action(description="Check the selected indexes' invariants", permissions=["check"])
    def check_invariants(self, request: Any, queryset: Any) -> None:
        from .index.recovery import check

        def run(declared: Any, using: str) -> str:
            violations, warnings = check(declared, using)
            if violations:
                raise InvariantViolated("; ".join(violations))
            return "ok" + (f" ({'; '.join(warnings)})" if warnings else "")

        self._each(request, queryset, run)


# Posting lists the index page reads to tell the share of stale entries: all of a small index's, a sample of a large one's.
STALE_SAMPLE = 32


def _stale(declared: Any, using: str) -> str:
    """The share of posting entries no longer at their vector's version (changed or deleted since): what rewrites drop."""
    from .index.maintenance.lists import current
    from .index.runtime import open_index

    storage = open_index(declared, using).storage
    alive = sorted(storage.alive_head_ids())
    read = alive if len(alive) <= STALE_SAMPLE else sorted(np.random.default_rng(0).choice(alive, STALE_SAMPLE, replace=False))
    entries = storage.read_postings(read)
    if not len(entries):
        return "-"
    stale = int((~current(storage, entries)).sum())
    of = "every list" if len(read) == len(alive) else f"a sample of {len(read)} of {len(alive):,} lists"
    return f"{_share(stale, len(entries))} ({stale:,} of {len(entries):,} entries in {of})"


def _due(declared: Any, using: str) -> str:
    """What the maintenance scan finds to do now (what a worker is asked for next, or was and has not done yet)."""
    from collections import Counter

    from .index.maintenance.scanning import scan

    found = Counter(job for job, _arguments in scan(declared, using))
    if not found:
        return "nothing: the index is in shape"
    return ", ".join(f"{count} {job}" for job, count in sorted(found.items()))


# Head changes (splits, merges) the index page lists, newest first.
HEAD_CHANGES = 5


def _recent_jobs(state: IndexState) -> str:
    """The last maintenance jobs that ran on the index, newest first: what, when, and what they said."""
    runs = JobRun.objects.using(state._state.db).filter(index=state).order_by("-finished_at", "-pk")[:HEAD_CHANGES]
    now = timezone.now()
    lines = [f"{run.job} {_age((now - run.finished_at).total_seconds())} ago: {run.detail}" for run in runs]
    return "; ".join(lines) if lines else "none yet"


def _head_changes(state: IndexState) -> str:
    """The last splits and merges, from the heads they retired (kept until the grace period has passed)."""
    retired = (
        Head.objects.using(state._state.db)
        .filter(index=state, retired_at__isnull=False)
        .order_by("-retired_at", "-pk")
        .values_list("pk", "retired_at", "split_into")[:HEAD_CHANGES]
    )
    now = timezone.now()
    lines = []
    for head_id, retired_at, split_into in retired:
        what = f"split into {len(split_into)}, its reassign pending" if split_into else "retired by a split or a merge"
        lines.append(f"head {head_id} {what}, {_age((now - retired_at).total_seconds())} ago")
    return "; ".join(lines) if lines else "none since the build"


def _list_sizes(declared: Any, using: str) -> list[int]:
    """The entries of each alive head's posting list."""
    from .index.runtime import open_index

    storage = open_index(declared, using).storage
    sizes = storage.posting_sizes()
    return [sizes.get(head_id, (0, 0))[0] for head_id in storage.alive_head_ids()]


# The histogram's size, in SVG user units, and its bars at most.
CHART_WIDTH, CHART_HEIGHT, CHART_BARS = 480, 120, 24


def size_chart(sizes: list[int], limit: int | None = None) -> str:
    """A histogram of posting-list sizes as inline SVG (no script): lists per size range, the limit marked."""
    if not sizes:
        return ""
    top = max(max(sizes), limit or 0, 1)
    width = max(1, -(-top // CHART_BARS))  # entries a bar spans
    counts = np.bincount(np.asarray(sizes) // width, minlength=-(-top // width) + 1)
    tallest = max(int(counts.max()), 1)
    bar = CHART_WIDTH / len(counts)
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{CHART_HEIGHT - CHART_HEIGHT * n / tallest:.1f}" width="{max(bar - 1, 1):.1f}" '
        f'height="{CHART_HEIGHT * n / tallest:.1f}" fill="#417690"><title>{i * width}–{(i + 1) * width - 1} entries: '
        f"{n} lists</title></rect>"
        for i, n in enumerate(counts.tolist())
        if n
    )
    mark = ""
    if limit:
        x = CHART_WIDTH * limit / (len(counts) * width)
        mark = f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{CHART_HEIGHT}" stroke="#ba2121" stroke-dasharray="4 3"><title>posting_limit {limit}</title></line>'
    return (
        f'<svg class="vectorindex-chart" role="img" width="{CHART_WIDTH}" height="{CHART_HEIGHT + 16}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT + 16}" aria-label="posting lists by size">'
        f"<title>{len(sizes)} posting lists by number of entries</title>{bars}{mark}"
        f'<text x="0" y="{CHART_HEIGHT + 13}" font-size="11">0</text>'
        f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT + 13}" font-size="11" text-anchor="end">{len(counts) * width} entries</text>'
        "</svg>"
    )


def health_html(report: dict[str, Any], sizes: list[int]) -> str:
    """``vectorindex status``'s report as a table, with the posting lists' sizes drawn."""
    from .index.registry import get_declared
    from .wording import counted

    if "heads" not in report:
        waiting = report.get("rows_with_vectors")
        text = f"{report['status']}" + (f": {counted(waiting, 'row')} with vectors wait for a build" if waiting else "")
        return format_html("<p>{}</p>", text)
    probes = report["probes"]
    rows = [
        ("status", report["status"]),
        ("vectors", f"{report['vectors']:,} ({report['deleted_versions']:,} deleted and not yet swept: "
                    f"{_share(report['deleted_versions'], report['vectors'] + report['deleted_versions'])})"),
        ("stale entries", report.get("stale", "-")),
        ("heads", f"{report['heads']:,} alive, {report['retired_heads']:,} retired"),
        ("posting lists", f"{report['posting_lists']:,} lists, {report['posting_entries']:,} entries; "
                          f"entries a list {_spread(report['posting_sizes'])}"),
        ("rows a list", _spread(report["posting_rows_per_list"])),
        ("WAL", f"{counted(report['wal_entries'], 'entry', 'entries')} to replay after the snapshot "
                f"(LSN {report['snapshot_lsn'] or 0} → {report['wal_lsn']})"),
        ("snapshot", "none" if report["snapshot_age_s"] is None else f"{_age(report['snapshot_age_s'])} old, "
                     f"{report['snapshot_bytes']:,} bytes"),
        ("head index in memory", f"{report['head_index_bytes']:,} bytes, {_share(report['head_index_bytes'], report['raw_vector_bytes'])}"
                                 f" of the raw vectors ({report['raw_vector_bytes']:,} bytes)"),
        ("queries read", f"{probes['probes']} lists ({probes['source']}"
                         + (f"; recall {probes['measured_recall']:.3f} measured for a target of {probes['target']}"
                            if "measured_recall" in probes else "") + ")"),
        ("entries", f"{report['payload']}, {report['entry_bytes']} bytes each"),
        ("maintenance due", report.get("due", "-")),
        ("last jobs", report.get("jobs", "-")),
        ("recent head changes", report.get("head_changes", "-")),
    ]
    try:
        limit = get_declared(report["name"]).options["posting_limit"]
    except LookupError:
        limit = None
    table = format_html(
        '<table class="vectorindex-health">{}</table>',
        format_html("".join("<tr><th>{}</th><td>{}</td></tr>" for _ in rows), *[x for row in rows for x in row]),
    )
    caption = (
        f"{counted(len(sizes), 'posting list')} by entries: a bar's height is the lists whose size falls in its range"
        + (f"; the dashed line is posting_limit ({limit}), past which a list is split" if limit else "")
        + "."
    )
    return format_html('{}{}<p class="help">{}</p>', table, mark_safe(size_chart(sizes, limit)), caption)


def _share(part: int, whole: int) -> str:
    return "-" if not whole else f"{100 * part / whole:.1f} %"


def _spread(found: dict[str, float]) -> str:
    if not found:
        return "-"
    return f"median {found['p50']:g}, p90 {found['p90']:g}, max {found['max']:g} (mean {found['mean']:g})"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _count(rows: QuerySet, key: str) -> Coalesce:
    """The number of *rows* (filtered on the outer row) as a subquery; 0 when there are none."""
    counted = rows.order_by().values(key).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)
