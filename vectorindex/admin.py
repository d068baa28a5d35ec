"""Admin integration: vectors shown compactly, never as a thousand numbers.

Editable vector fields use :class:`~vectorindex.forms.VectorWidget` (a summary
line over a collapsed textarea) with any ModelAdmin. Read-only display — in
``readonly_fields``, for users with view permission only, and in
``list_display`` — goes through Django's ``display_for_field``, which cannot show
a numpy array (it asks ``array in EMPTY_VALUES``). :class:`VectorAdminMixin`
swaps those places for a preview: the dimensions and the first few values, with
the full vector on demand.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from django.contrib import admin
from django.utils.html import format_html

from .conf import vectorindex_settings
from .engine import codec
from .fields import VectorField

__all__ = ["VectorAdminMixin", "VectorModelAdmin"]

PREVIEW_PREFIX = "vector_preview__"


def preview_html(vector: Any, full: bool = True) -> str:
    if vector is None:
        return "-"
    vector = np.asarray(vector, dtype=np.float32)
    summary = codec.preview(vector, vectorindex_settings.ADMIN_PREVIEW_VALUES)
    if not full:
        return format_html('<span title="{}">{}</span>', summary, summary)
    return format_html(
        '<details class="vectorindex-vector"><summary>{}</summary>'
        '<code style="white-space: pre-wrap; word-break: break-all">{}</code></details>',
        summary,
        codec.to_text(vector),
    )


class VectorAdminMixin:
    """Shows a model's vector fields compactly wherever the admin displays them."""

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

    def get_list_display(self, request: Any) -> list:
        vector_names = self._vector_field_names()
        return [
            f"{PREVIEW_PREFIX}{name}__list" if name in vector_names else name
            for name in super().get_list_display(request)
        ]


class VectorModelAdmin(VectorAdminMixin, admin.ModelAdmin):
    """A ModelAdmin that shows vector fields compactly."""
