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
from django.db import connections
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from .conf import vectorindex_settings
from .engine import codec
from .engine.calibration import Calibration
from .exceptions import InvariantViolated, VectorIndexError
from .fields import VectorField
from .forms import VectorPreviewWidget
from .models import Head, IndexState, Version
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

    def get_actions(self, request: Any) -> dict:
        actions = super().get_actions(request)
        if self._comparable_fields():
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


@admin.register(IndexState)
class IndexStateAdmin(admin.ModelAdmin):
    """Each vector index at a glance: status, size, WAL, posting data against the buffer pool; snapshot and check actions."""

    list_display = [
        "name", "model_label", "field_name", "distance", "dimensions", "status", "heads", "vectors", "probes",
        "wal_lsn", "built_at",
    ]
    list_filter = ["status", "distance", "declared"]
    actions = ["take_snapshot", "check_invariants"]
    exclude = ["payload", "calibration"]  # shown as payload_format and calibration_summary
    SHOWN_AS = {"payload": "payload_format", "calibration": "calibration_summary"}

    def get_readonly_fields(self, request: Any, obj: Any = None) -> list[str]:
        return [*(self.SHOWN_AS.get(field.name, field.name) for field in IndexState._meta.fields), "posting_data"]

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
        return super().get_queryset(request).annotate(
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

    def _each(self, request: Any, queryset: Any, work: Callable[[Any, str], str]) -> None:
        # The name is quoted: the admin capitalises a message's first letter,
        # which would misspell an index name that began it.
        from .index.registry import get_declared

        for state in queryset:
            try:
                text = work(get_declared(state.name), queryset.db)
                self.message_user(request, f"“{state.name}”: {text}", messages.SUCCESS)
            except (LookupError, VectorIndexError) as error:
                self.message_user(request, f"“{state.name}”: {error}", messages.ERROR)

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


def _count(rows: QuerySet, key: str) -> Coalesce:
    """The number of *rows* (filtered on the outer row) as a subquery; 0 when there are none."""
    counted = rows.order_by().values(key).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)
