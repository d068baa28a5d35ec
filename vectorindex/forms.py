"""Form field and widget for vectors.

The text form is ``[1.0, 2.0, 3.0]``. The widget shows a one-line summary (the
dimensions and the first few values) and keeps the full vector in a collapsed
``<details>`` element, so that a form or the admin never opens on a textarea of a
thousand numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django import forms
from django.core.exceptions import ValidationError

from .conf import vectorindex_settings
from .engine import codec

__all__ = ["VectorFormField", "VectorWidget"]


class EmptyValues(list):
    """Django's ``value in field.empty_values`` without comparing arrays.

    ``array in [None, "", [], (), {}]`` asks numpy for an element-wise ``==`` and
    then for its truth value, which raises for any array of more than one value:
    model validation and the admin both do that test.
    """

    def __contains__(self, value: object) -> bool:
        if value is None:
            return True
        if isinstance(value, np.ndarray):
            return value.size == 0
        if isinstance(value, (str, list, tuple, dict)):
            return len(value) == 0
        return False


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_vector(value: Any) -> np.ndarray | None:
    """A stored or submitted value as an array, or None when it cannot be one."""
    if _is_blank(value):
        return None
    try:
        return codec.coerce(value, None)
    except codec.InvalidVector:
        return None


class VectorWidget(forms.Textarea):
    """A collapsed textarea under a compact summary of the vector."""

    template_name = "vectorindex/widgets/vector.html"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"rows": 6, "cols": 80, **(attrs or {})})

    def format_value(self, value: Any) -> str | None:
        vector = value if isinstance(value, np.ndarray) else None
        if vector is not None:
            return codec.to_text(vector)
        return super().format_value(value)

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict:
        context = super().get_context(name, value, attrs)
        vector = _as_vector(value)
        context["widget"]["summary"] = (
            codec.preview(vector, vectorindex_settings.ADMIN_PREVIEW_VALUES)
            if vector is not None
            else ("empty" if _is_blank(value) else "not a valid vector")
        )
        # Open when there is something to fix: an unreadable value or an error.
        invalid = context["widget"]["attrs"].get("aria-invalid") == "true"
        context["widget"]["open"] = invalid or (vector is None and not _is_blank(value))
        return context


class VectorFormField(forms.Field):
    """Reads ``[1, 2, 3]`` text into a float32 vector of fixed dimensions."""

    widget = VectorWidget
    empty_values = EmptyValues([None, "", [], (), {}])
    default_error_messages = {"invalid": "%(problem)s."}

    def __init__(self, *, dimensions: int | None = None, **kwargs: Any) -> None:
        self.dimensions = dimensions
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            vector = _as_vector(value)
            return vector if vector is not None else value
        return value

    def to_python(self, value: Any) -> np.ndarray | None:
        if _is_blank(value):
            return None
        try:
            return codec.coerce(value, self.dimensions)
        except codec.InvalidVector as error:
            raise ValidationError(
                self.error_messages["invalid"],
                code=error.code,
                params={"problem": error.message},
            ) from None

    def has_changed(self, initial: Any, data: Any) -> bool:
        if self.disabled:
            return False
        try:
            submitted = self.to_python(data)
        except ValidationError:
            return True
        before = _as_vector(initial)
        if before is None or submitted is None:
            return (before is None) != (submitted is None)
        return not np.array_equal(before, submitted)
