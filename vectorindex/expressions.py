"""Distance expressions with pgvector's names and meanings.

``L2Distance``, ``CosineDistance``, ``MaxInnerProduct`` and ``L1Distance`` take a
vector field's name and a query vector. Neither SQLite nor MariaDB can compute
them in SQL, so they are never compiled: a :class:`~vectorindex.orm.queryset.VectorQuerySet`
sees them in ``annotate()``, ``alias()``, ``filter()`` and ``order_by()`` and answers
the query by computing the distances in numpy (see :mod:`vectorindex.orm.exact`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from django.core.exceptions import FieldError
from django.db import DataError, NotSupportedError
from django.db.models import F, FloatField, Func, OuterRef
from django.db.models.functions import Cast

from .engine import codec, distances, sparse

__all__ = [
    "DISTANCE_FOR",
    "CosineDistance",
    "Distance",
    "HammingDistance",
    "JaccardDistance",
    "L1Distance",
    "L2Distance",
    "MaxInnerProduct",
]


class DistanceField(FloatField):
    """A distance's value: compared with a number beyond a float's range, as with ±inf.

    Django's FloatField raises OverflowError for ``d__lt=10**400``; every
    distance is below it.
    """

    def get_prep_value(self, value: Any) -> Any:
        try:
            return super().get_prep_value(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf


class Distance(Func):
    """The distance from a ``VectorField`` to a constant query vector."""

    metric: ClassVar[str]
    # Between bit strings (a BitField's), not vectors of numbers.
    bits: ClassVar[bool] = False
    output_field = DistanceField()

    def __init__(self, expression: str | F | Cast, vector: Any, **extra: Any) -> None:
        name = type(self).__name__
        # Cast("embedding", HalfVectorField(...)): the distance between the
        # field's values and the query vector, both in the cast's precision.
        self.cast: Any = None
        if isinstance(expression, Cast):
            self.cast = expression.output_field
            expression = expression.get_source_expressions()[0]
        if isinstance(expression, str):
            expression = F(expression)
        if not isinstance(expression, F):
            raise TypeError(
                f"{name}: the first argument must be a field name, F() or Cast() of one, "
                f"got {expression!r}."
            )
        self.field_path: str = expression.name
        # A sparse query (a SparseVector, {…}/n text, a dict): compared with a
        # SparseVectorField only. A dense one may be either field's.
        self.sparse: sparse.Parts | None = None
        self.vector: np.ndarray | None = None
        # F("other"): the distance between two vector fields of each row.
        self.other_path: str | None = None
        # OuterRef("embedding"): to the outer row's vector, inside a subquery
        # (answered a row at a time: orm/correlated.py).
        self.outer_path: str | None = None
        sources = [expression]
        if isinstance(vector, OuterRef):
            self.outer_path = vector.name
            sources.append(vector)
        elif isinstance(vector, F):
            self.other_path = vector.name
            sources.append(vector)
        else:
            self._take_query(vector)
        # Named, for Django's "Field 'L2Distance' expected a number but got 'x'."
        super().__init__(*sources, output_field=DistanceField(name=name), **extra)

    def _take_query(self, vector: Any) -> None:
        """Read the query vector: bits, a sparse vector ({…}/n text, a dict, a SparseVector) or a dense one."""
        try:
            if vector is None:
                pass
            elif self.bits:
                self.vector = codec.parse_bits(vector, None)
            elif sparse.looks_sparse(vector):
                self.sparse = sparse.parse(vector, None)
            else:
                self.vector = codec.coerce(vector, None)
        except codec.InvalidVector as error:
            raise ValueError(f"{type(self).__name__}: query vector: {error.message}.") from None

    def bound_to(self, vector: Any) -> Distance:
        """This resolved distance to ``OuterRef(...)``, as the distance to one outer row's *vector*."""
        bound = self.copy()
        bound.outer_path = None
        bound.set_source_expressions(self.get_source_expressions()[:1])
        bound._take_query(vector)
        source = bound.source_expressions[0]
        if isinstance(source, F):  # not resolved yet (an order_by() term): checked when it is
            return bound
        return bound._with_query_for(source.output_field, type(self).__name__)

    def resolve_expression(self, *args: Any, **kwargs: Any) -> Distance:
        from .fields import BitField, SparseVectorField, VectorField

        resolved = super().resolve_expression(*args, **kwargs)
        field = resolved.source_expressions[0].output_field
        name = type(self).__name__
        if not isinstance(field, VectorField) or isinstance(field, BitField) != self.bits:
            wanted = "a BitField" if self.bits else "a VectorField, HalfVectorField or SparseVectorField"
            hint = (
                "; bit strings are compared by HammingDistance or JaccardDistance"
                if isinstance(field, BitField)
                else "; HammingDistance and JaccardDistance compare a BitField's bits"
                if self.bits and isinstance(field, VectorField)
                else ""
            )
            raise FieldError(f"{name}: '{self.field_path}' is a {type(field).__name__}, not {wanted}{hint}.")
        if self.cast is not None and (
            not isinstance(self.cast, VectorField) or not self.cast.indexable or not field.indexable
            or self.cast.dimensions != field.dimensions
        ):
            raise FieldError(
                f"{name}: '{self.field_path}' ({type(field).__name__}, {field.dimensions} dimensions) cannot be "
                f"cast to {type(self.cast).__name__}({getattr(self.cast, 'dimensions', '')}): a vector field's "
                "values cast to a VectorField or HalfVectorField of the same dimensions."
            )
        if self.outer_path is not None:  # the outer row's vector: checked when it is known
            resolved.dimensions = field.dimensions
            return resolved
        if self.other_path is not None:
            other = resolved.source_expressions[1].output_field
            if isinstance(field, SparseVectorField) or isinstance(other, SparseVectorField):
                raise NotSupportedError(
                    f"{name}: a distance between two sparse vector columns ('{self.field_path}', "
                    f"'{self.other_path}') is not computed; compare each row's with a SparseVector query instead."
                )
            if not (
                isinstance(other, VectorField)
                and (type(other) is type(field) or other.indexable and field.indexable)
                and other.dimensions == field.dimensions
            ):
                raise FieldError(
                    f"{name}: '{self.field_path}' ({type(field).__name__}, {field.dimensions} dimensions) and "
                    f"'{self.other_path}' ({type(other).__name__}, {getattr(other, 'dimensions', None)} dimensions) "
                    "are not vectors of one kind and length."
                )
        return resolved._with_query_for(field, name)

    def _with_query_for(self, field: Any, name: str) -> Distance:
        """This distance with its query vector checked against *field* (a sparse field's made sparse)."""
        from .fields import SparseVectorField

        if isinstance(field, SparseVectorField):
            if self.vector is not None:  # a dense query: its non-zero values
                self.sparse = sparse.parse(self.vector, None)
                self.vector = None
            given = None if self.sparse is None else self.sparse.dimensions
        elif self.sparse is not None:
            raise FieldError(
                f"{name}: '{self.field_path}' is a {type(field).__name__} and the query vector a sparse one; "
                "compare it with a dense vector (SparseVector.to_list()), or query a SparseVectorField."
            )
        else:
            given = None if self.vector is None else self.vector.shape[0]
        if given is not None and field.dimensions is not None and given != field.dimensions:
            raise ValueError(
                f"{name}: the query vector has {given} dimensions, but '{self.field_path}' has {field.dimensions}."
            )
        self.dimensions = field.dimensions
        return self

    @property
    def key(self) -> tuple[str, str, bytes | None, str | None]:
        """Two distances with the same key always have the same value."""
        vector = (
            None if self.vector is None and self.sparse is None
            else self.vector.tobytes() if self.sparse is None
            else sparse.to_bytes(self.sparse)
        )
        cast = None if self.cast is None else type(self.cast).__name__
        return (self.metric, self.field_path, vector, cast, self.other_path)

    @property
    def field_paths(self) -> tuple[str, ...]:
        """The vector fields of the row that this distance reads: one, or two (a distance between columns)."""
        return (self.field_path,) if self.other_path is None else (self.field_path, self.other_path)

    def compute(self, matrix: np.ndarray) -> np.ndarray:
        """Distances from each row of *matrix* (sparse.Rows for a SparseVectorField); NaN where there is none (None)."""
        if isinstance(matrix, sparse.Rows):
            if self.sparse is None:
                return np.full(len(matrix), np.nan)
            try:
                return sparse.distances(self.metric, matrix, self.sparse)
            except ValueError as error:  # rows of another length, in a field of no fixed dimensions
                raise DataError(f"{type(self).__name__}('{self.field_path}'): {error}.") from None
        if self.vector is None:
            return np.full(matrix.shape[0], np.nan)
        return distances.distances(self.metric, self._as_cast(matrix), self._as_cast(self.vector))

    def compute_between(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Distances between the two columns' vectors, row by row (a distance to ``F("other")``)."""
        return distances.between_rows(self.metric, self._as_cast(left), self._as_cast(right))

    def _as_cast(self, values: np.ndarray) -> np.ndarray:
        if self.cast is None or self.cast.storage_dtype == codec.STORAGE_DTYPE:
            return values
        # As the cast stores them (beyond float16's range: infinite, and so is the distance).
        with np.errstate(over="ignore"):
            return values.astype(self.cast.storage_dtype).astype(np.float32)

    def estimate(self, entries: np.ndarray, payload: Any) -> np.ndarray:
        """:meth:`compute` estimated on posting entries: close, not exact (for ranking candidates)."""
        if self.vector is None:
            return np.full(len(entries), np.nan, dtype=np.float32)
        return payload.estimate(entries, self.metric, self.vector)

    def error_bound(self, entries: np.ndarray, payload: Any) -> np.ndarray | None:
        """How far :meth:`estimate` may be from :meth:`compute` for each entry; None: exact enough to rank."""
        if self.vector is None:
            return None
        return payload.error_bound(entries, self.metric, self.vector)

    def as_sql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        model = compiler.query.model
        raise NotSupportedError(
            f"{type(self).__name__} is computed in numpy, not in SQL. Query it "
            f"through a manager of {model.__name__ if model else 'the model'} (any manager "
            "whose get_queryset() starts from super().get_queryset(), or a VectorQuerySet), "
            "and not inside a subquery, a union or an aggregation."
        )


class L2Distance(Distance):
    """Euclidean distance (not squared), as pgvector's ``<->``."""

    metric = "l2"


class CosineDistance(Distance):
    """1 − cosine similarity, as pgvector's ``<=>``; None for a zero vector."""

    metric = "cosine"


class MaxInnerProduct(Distance):
    """The negative inner product, as pgvector's ``<#>`` (smaller is nearer)."""

    metric = "ip"


class L1Distance(Distance):
    """Taxicab distance, as pgvector's ``<+>``."""

    metric = "l1"


class HammingDistance(Distance):
    """Bits that differ between a ``BitField`` and a bit string, as pgvector's ``<~>``."""

    metric = "hamming"
    bits = True


class JaccardDistance(Distance):
    """1 − |a ∧ b| / |a ∨ b| of a ``BitField`` and a bit string, as pgvector's ``<%>``."""

    metric = "jaccard"
    bits = True


def contains_distance(expression: Any) -> bool:
    """Whether a distance appears anywhere inside *expression* (or a where tree)."""
    if isinstance(expression, Distance):
        return True
    source = getattr(expression, "source", None)  # a Ref to an annotation
    if source is not None and contains_distance(source):
        return True
    get_sources = getattr(expression, "get_source_expressions", None)
    if get_sources is None:
        return False
    return any(contains_distance(child) for child in get_sources() if child is not None)


# metric -> the expression that computes it (an index's distance, as a query writes it).
DISTANCE_FOR: dict[str, type[Distance]] = {
    cls.metric: cls for cls in (L2Distance, CosineDistance, MaxInnerProduct, L1Distance)
}
