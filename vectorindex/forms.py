"""Form field and widgets for vectors.

The text form is ``[1.0, 2.0, 3.0]``. A form's widget is a plain text input
holding it (``value="[1.0, 2.0, 3.0]"``, pgvector's markup). The admin's
(:class:`VectorPreviewWidget`, through ``VectorAdminMixin``) shows a one-line
summary — the dimensions and the first few values — over the full vector in a
collapsed ``<details>`` element, so that a change page never opens on a
textarea of a thousand numbers; it opens wherever the vector needs a hand: an
unreadable or refused value, or a required vector not given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django import forms
from django.core.exceptions import ValidationError

from .conf import vectorindex_settings
from .engine import codec, sparse

__all__ = ["BitFormField", "SparseVectorFormField", "SparseVectorWidget", "VectorFormField", "VectorPreviewWidget", "VectorWidget"]


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


def _refused(field: forms.Field, error: codec.InvalidVector) -> ValidationError:
    """The form error for a value the codec refused: its message, under the codec's code."""
    return ValidationError(field.error_messages["invalid"], code=error.code, params={"problem": error.message})


def _as_vector(value: Any) -> np.ndarray | None:
    """A stored or submitted value as an array, or None when it cannot be one."""
    if _is_blank(value):
        return None
    try:
        return codec.coerce(value, None)
    except codec.InvalidVector:
        return None


def _as_text(value: Any) -> Any:
    """An array or a ``HalfVector`` as ``[1.0, 2.0, …]`` text; anything else (submitted text) as it is."""
    if isinstance(value, np.ndarray) or codec.is_vector_object(value):
        return codec.to_text(np.asarray(value, dtype=np.float32))
    return value


class VectorWidget(forms.TextInput):
    """The vector as ``[1.0, 2.0, 3.0]`` text in a plain text input."""

    def format_value(self, value: Any) -> str | None:
        return super().format_value(_as_text(value))


class VectorPreviewWidget(forms.Textarea):
    """A collapsed textarea under a compact summary of the vector (the admin's)."""

    template_name = "vectorindex/widgets/vector.html"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"rows": 6, "cols": 80, **(attrs or {})})

    def format_value(self, value: Any) -> str | None:
        return super().format_value(_as_text(value))

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict:
        context = super().get_context(name, value, attrs)
        vector = _as_vector(value)
        context["widget"]["summary"] = (
            codec.preview(vector, vectorindex_settings.ADMIN_PREVIEW_VALUES)
            if vector is not None
            else ("empty" if _is_blank(value) else "not a valid vector")
        )
        # Open when there is something to do: an unreadable value or an error,
        # or a required vector not given (the browser's own check of a
        # required field could not show it, shut in a closed <details>).
        invalid = context["widget"]["attrs"].get("aria-invalid") == "true"
        required = context["widget"]["required"] and _is_blank(value)
        context["widget"]["open"] = invalid or required or (vector is None and not _is_blank(value))
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
        if isinstance(value, (list, tuple)) or codec.is_vector_object(value):
            vector = _as_vector(value)
            return vector if vector is not None else value
        return value

    def to_python(self, value: Any) -> np.ndarray | None:
        if _is_blank(value):
            return None
        try:
            return codec.coerce(value, self.dimensions)
        except codec.InvalidVector as error:
            raise _refused(self, error) from None

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


class BitFormField(forms.CharField):
    """Reads ``101`` text into a bit string of fixed length (a ``BitField``'s form field)."""

    default_error_messages = {"invalid": "%(problem)s."}

    def __init__(self, *, length: int | None = None, **kwargs: Any) -> None:
        self.length = length
        kwargs.pop("max_length", None)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str | None:
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return codec.bits_text(codec.parse_bits(value, self.length))
        except codec.InvalidVector as error:
            raise _refused(self, error) from None


class SparseVectorWidget(forms.TextInput):
    """A sparse vector as pgvector's ``{1:1.0,3:2.0}/5`` text (positions from 1) in a plain text input."""

    def format_value(self, value: Any) -> str | None:
        if sparse.looks_sparse(value) and not isinstance(value, str):
            try:
                value = sparse.to_text(sparse.parse(value, None))
            except codec.InvalidVector:
                pass
        return super().format_value(value)


class SparseVectorFormField(forms.Field):
    """Reads ``{1:1.0,3:2.0}/5`` text (or ``[0, 1, 0]``) into a ``SparseVector`` (a ``SparseVectorField``'s form field)."""

    widget = SparseVectorWidget
    default_error_messages = {"invalid": "%(problem)s."}

    def __init__(self, *, dimensions: int | None = None, **kwargs: Any) -> None:
        self.dimensions = dimensions
        kwargs.pop("max_length", None)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        from .values import SparseVector

        if _is_blank(value):
            return None
        try:
            return SparseVector._of(sparse.parse(value, self.dimensions))
        except codec.InvalidVector as error:
            raise _refused(self, error) from None
