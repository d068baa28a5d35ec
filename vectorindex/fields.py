"""``VectorField``: one float32 vector per row, on databases with no vector type.

The column is a BLOB (``LONGBLOB`` on MariaDB/MySQL, ``BLOB`` on SQLite) holding
the vector as little-endian float32. Values come back as numpy float32 arrays,
or as lists of floats with ``VECTORINDEX = {"VECTORS_AS_LISTS": True}``.
Every value is checked by :func:`vectorindex.engine.codec.coerce` before it can
reach the database, so a bad vector raises ``ValidationError`` and writes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.core import checks
from django.core.exceptions import ValidationError
from django.db import models

from .conf import vectorindex_settings
from .engine import codec, sparse
from .exceptions import CorruptVector, stored_size
from .forms import BitFormField, EmptyValues, SparseVectorFormField, VectorFormField

__all__ = ["BitField", "HalfVectorField", "SparseVectorField", "VectorField", "as_returned"]


def as_returned(vector: np.ndarray) -> np.ndarray | list[float]:
    """A vector as the app hands it to the project: the array, or its list of floats (``VECTORS_AS_LISTS``)."""
    return vector.tolist() if vectorindex_settings.VECTORS_AS_LISTS else vector


class VectorField(models.Field):
    """A fixed-length vector of float32 values, stored as a little-endian BLOB."""

    description = "Vector of %(dimensions)s float32 values"
    # How a value is stored: little-endian float32 (HalfVectorField: float16).
    storage_dtype = codec.STORAGE_DTYPE
    # Whether a VectorIndex can be declared on it (not on a BitField or a SparseVectorField).
    indexable = True
    # Whether its values are averaged and summed by Avg() and Sum().
    summable = True
    empty_strings_allowed = False
    empty_values = EmptyValues([None, "", [], (), {}])
    # Only these make sense on a vector; the rest (lt, contains, …) would
    # compare raw bytes.
    allowed_lookups = frozenset({"exact", "in", "isnull"})

    def __init__(self, *args: Any, dimensions: int | None = None, **kwargs: Any) -> None:
        if (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not 1 <= dimensions <= codec.MAX_DIMENSIONS
        ):
            raise ValueError(
                "VectorField.dimensions must be an integer from 1 to "
                f"{codec.MAX_DIMENSIONS}, got {dimensions!r}."
            )
        self.dimensions = dimensions
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, str, list, dict]:
        name, path, args, kwargs = super().deconstruct()
        if path == f"vectorindex.fields.{type(self).__name__}":
            path = f"vectorindex.{type(self).__name__}"
        kwargs["dimensions"] = self.dimensions
        return name, path, args, kwargs

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        if self.primary_key or self.unique:
            errors.append(
                checks.Error(
                    "A VectorField cannot be a primary key or unique.",
                    obj=self,
                    id="vectorindex.E001",
                )
            )
        return errors

    def get_internal_type(self) -> str:
        # The storage is a binary column: LONGBLOB on MySQL, BLOB on SQLite.
        return "BinaryField"

    def get_lookup(self, lookup_name: str):
        if lookup_name not in self.allowed_lookups:
            return None
        return super().get_lookup(lookup_name)

    def get_transform(self, name: str):
        return None

    # Conversions -----------------------------------------------------------

    def vector_of(self, value: Any) -> np.ndarray:
        """*value* as the float32 vector the row will hold (InvalidVector if it cannot be one of this field's)."""
        return codec.coerce(value, self.dimensions)

    def returned(self, vector: np.ndarray) -> Any:
        """A stored vector (float32) as the field hands it back: an array, or a list (``VECTORS_AS_LISTS``)."""
        return as_returned(vector)

    def stack(self, blobs: list) -> np.ndarray:
        """Stored blobs of one scanned chunk as a float32 matrix (codec.WrongSize names those of another size)."""
        return codec.stack_bytes(blobs, self.dimensions, self.storage_dtype)

    def _coerce(self, value: Any) -> np.ndarray:
        try:
            return self.vector_of(value)
        except codec.InvalidVector as error:
            raise ValidationError(
                "%(field)s: %(problem)s.",
                code=error.code,
                params={"field": self.name, "problem": error.message},
            ) from None

    def to_python(self, value: Any) -> Any:
        if value is None:
            return None
        return self.returned(self._coerce(value))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        if len(value) != self.dimensions * self.storage_dtype.itemsize:
            # The row is not known here (a converter sees one value); the exact
            # path's scan, which has the keys, names every such row.
            raise CorruptVector(
                f"{self.model._meta.label}.{self.name}: a row stores "
                f"{stored_size(len(value), self.storage_dtype.itemsize)}, "
                f"expected {self.dimensions}; fix or clear such rows (a distance query over them "
                f"names them, and .defer({self.name!r}) loads them)."
            )
        return self.returned(codec.from_bytes(value, self.storage_dtype))

    def get_prep_value(self, value: Any) -> bytes | None:
        # The prepared form is the stored bytes, not an array: Django compares
        # prepared lookup values with "" and None, which an array cannot answer.
        value = super().get_prep_value(value)
        if value is None:
            return None
        return codec.to_bytes(self._coerce(value), self.storage_dtype)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        return connection.Database.Binary(value)

    def value_to_string(self, obj: models.Model) -> str | None:
        value = self.value_from_object(obj)
        if value is None:
            return None
        return codec.to_text(self._coerce(value))

    def formfield(self, **kwargs: Any):
        return super().formfield(
            **{"form_class": VectorFormField, "dimensions": self.dimensions, **kwargs}
        )


class HalfVectorField(VectorField):
    """A fixed-length vector of float16 values (half the bytes), as pgvector's ``halfvec``.

    Stored as a little-endian float16 BLOB; values beyond ±65,504 are refused.
    A value comes back as a :class:`~vectorindex.values.HalfVector`, as
    pgvector-python 0.4 returns it (a list with ``VECTORS_AS_LISTS``).
    Indexed, searched and validated like a ``VectorField``: the index and the
    distances work on its values widened to float32.
    """

    description = "Vector of %(dimensions)s float16 values"
    storage_dtype = codec.HALF_DTYPE

    def vector_of(self, value: Any) -> np.ndarray:
        return codec.to_half(codec.coerce(value, self.dimensions)).astype(np.float32)

    def returned(self, vector: np.ndarray) -> Any:
        from .values import HalfVector

        return vector.tolist() if vectorindex_settings.VECTORS_AS_LISTS else HalfVector(vector)


class BitField(VectorField):
    """A fixed-length string of bits, as pgvector's ``bit``: ``"101"`` in, ``"101"`` out.

    ``BitField(length=3)``. Stored a byte a bit; compared by
    ``HammingDistance`` and ``JaccardDistance``, answered by the exact scan
    (no index serves them). A value is a string of 0s and 1s, or a sequence
    of 0/1 or booleans.
    """

    description = "String of %(dimensions)s bits"
    storage_dtype = codec.BIT_DTYPE
    indexable = False
    summable = False  # pgvector has no avg(bit) either

    def __init__(self, *args: Any, length: int | None = None, **kwargs: Any) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= codec.MAX_DIMENSIONS:
            raise ValueError(f"BitField.length must be an integer from 1 to {codec.MAX_DIMENSIONS}, got {length!r}.")
        super().__init__(*args, dimensions=length, **kwargs)

    @property
    def length(self) -> int:
        return self.dimensions

    def deconstruct(self) -> tuple[str, str, list, dict]:
        name, path, args, kwargs = super().deconstruct()
        kwargs["length"] = kwargs.pop("dimensions")
        return name, path, args, kwargs

    def vector_of(self, value: Any) -> np.ndarray:
        return codec.parse_bits(value, self.dimensions)

    def returned(self, vector: np.ndarray) -> str:
        return codec.bits_text(vector)

    def value_to_string(self, obj: models.Model) -> str | None:
        value = self.value_from_object(obj)
        return None if value is None else codec.bits_text(self._coerce(value))

    def formfield(self, **kwargs: Any):
        return models.Field.formfield(self, **{"form_class": BitFormField, "length": self.dimensions, **kwargs})


class SparseVectorField(VectorField):
    """A sparse vector, as pgvector's ``sparsevec``: a length and its non-zero values.

    ``SparseVectorField(dimensions=30000)``, or without ``dimensions`` for
    vectors of any length (up to a billion, with up to 16,000 non-zero values).
    Takes a :class:`~vectorindex.values.SparseVector`, a dense list or array,
    ``{1:0.5,3:2.0}/5`` text or a scipy sparse row; returns a ``SparseVector``
    (with ``VECTORS_AS_LISTS`` too, as pgvector-python does). Stored as its
    non-zero entries only; ``L2Distance``, ``MaxInnerProduct``,
    ``CosineDistance`` and ``L1Distance`` compare it with a sparse query,
    answered by the exact scan (no index serves it).
    """

    description = "Sparse vector"
    indexable = False
    summable = False  # pgvector has no avg(sparsevec) either

    def __init__(self, *args: Any, dimensions: int | None = None, **kwargs: Any) -> None:
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= sparse.MAX_DIMENSIONS
        ):
            raise ValueError(
                f"SparseVectorField.dimensions must be None or an integer from 1 to {sparse.MAX_DIMENSIONS:,}, "
                f"got {dimensions!r}."
            )
        self.dimensions = dimensions
        models.Field.__init__(self, *args, **kwargs)

    def deconstruct(self) -> tuple[str, str, list, dict]:
        name, path, args, kwargs = super().deconstruct()
        if self.dimensions is None:
            del kwargs["dimensions"]
        return name, path, args, kwargs

    def vector_of(self, value: Any) -> sparse.Parts:
        return sparse.parse(value, self.dimensions)

    def returned(self, parts: sparse.Parts) -> Any:
        from .values import SparseVector

        return SparseVector._of(parts)

    def stack(self, blobs: list) -> sparse.Rows:
        return sparse.stack(blobs, self.dimensions)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        try:
            return self.returned(sparse.from_bytes(value, self.dimensions))
        except codec.InvalidVector as error:
            raise CorruptVector(
                f"{self.model._meta.label}.{self.name}: a row stores {error.message.removeprefix('expected a sparse vector, got ')}, "
                f"expected a sparse vector{'' if self.dimensions is None else f' of {self.dimensions} dimensions'}; "
                f"fix or clear such rows (a distance query over them names them, and .defer({self.name!r}) loads them)."
            ) from None

    def get_prep_value(self, value: Any) -> bytes | None:
        value = models.Field.get_prep_value(self, value)
        if value is None:
            return None
        return sparse.to_bytes(self._coerce(value))

    def value_to_string(self, obj: models.Model) -> str | None:
        value = self.value_from_object(obj)
        return None if value is None else sparse.to_text(self._coerce(value))

    def formfield(self, **kwargs: Any):
        return models.Field.formfield(
            self, **{"form_class": SparseVectorFormField, "dimensions": self.dimensions, **kwargs}
        )
