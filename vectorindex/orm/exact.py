"""The exact path: distances computed in numpy over a streamed scan.

Neither SQLite nor MariaDB can compute a vector distance, so a query that needs
one is answered in two steps:

1. **scan** — the query's ordinary (SQL) conditions select the rows; only their
   primary keys and vectors are read, in chunks of ``EXACT_CHUNK_SIZE`` rows
   through a streaming cursor, and each chunk's distances are computed at once
   in numpy. Conditions on distances are applied to each chunk; when the result
   is ordered by distance and sliced (``[:k]``), only the best ``k`` rows seen so
   far are kept, so memory stays bounded on any table size.
2. **fetch** — the chosen rows are loaded by primary key, a batch at a time,
   through the same queryset minus its distances, so that everything else
   Django does (``select_related()``, ``only()``, ``prefetch_related()``, …)
   works unchanged. Model instances are put in order and given their distances
   in Python; for ``values()`` and ``values_list()`` rows, which may not carry
   the key, the distances and the rank go into SQL as constants
   (``CASE WHEN pk = … THEN …``).

This path is exact: it is the oracle that the index's recall is measured against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import (
    BooleanField,
    Case,
    FloatField,
    IntegerField,
    Value,
    When,
    prefetch_related_objects,
)
from django.db.models.functions import Length
from django.db.models.query import ModelIterable
from django.db.models.sql.where import WhereNode

from ..conf import vectorindex_settings
from ..engine import codec, sparse
from ..exceptions import ROWS_NAMED, CorruptVector, WrongSizedChunk
from ..expressions import Distance
from ..fields import SparseVectorField
from ..storage.backends import stream_rows
from .planner import Cases, Column, Derived, DistancePlan, evaluate, returned


@dataclass
class Chunk:
    """Rows of one scan chunk that passed every condition."""

    pks: np.ndarray
    values: list[np.ndarray]  # per plan term: distances, NaN for NULL
    vectors: dict[str, tuple[np.ndarray, np.ndarray]]  # path -> (present mask, matrix)

    def __len__(self) -> int:
        return self.pks.shape[0]


def sql_queryset(queryset: Any, plan: DistancePlan, *, for_scan: bool = True) -> Any:
    """*queryset* without its distances: the rows SQL selects, in the scan's order."""
    qs = queryset._chain()
    query = qs.query
    names = set(plan.annotations)
    query.annotations = {
        name: annotation
        for name, annotation in query.annotations.items()
        if name not in names
    }
    if query.annotation_select_mask is not None:
        query.set_annotation_mask(set(query.annotation_select_mask) - names)
    query.where = plan.where_sql.clone() if plan.where_sql is not None else WhereNode()
    query.clear_limits()
    if for_scan:
        query.select_for_update = False
    if plan.order_keys:
        # Ordinary ordering terms after a distance break its ties: scanning in
        # their order and then sorting stably by distance gives the whole order.
        query.clear_ordering(force=True)
        query.add_ordering(*plan.order_tail, "pk")
    qs._prefetch_related_lookups = ()
    return qs


def scan(
    queryset: Any,
    plan: DistancePlan,
    *,
    terms: bool = True,
    vectors: tuple[str, ...] = (),
) -> Iterator[Chunk]:
    """Chunks of (primary key, distances, vectors) of the rows *queryset* selects.

    ``terms=False`` skips the distances that no condition needs (``count()``);
    *vectors* names fields whose raw vectors are wanted (``aggregate()``).
    """
    model = queryset.model
    needed = range(len(plan.terms)) if terms else _with_parts(plan, set(plan.lookup_terms.values()))
    paths = sorted(
        {path for i in needed if isinstance(plan.terms[i], Distance) for path in plan.terms[i].field_paths}
        | set(vectors)
    )
    # Ordinary expressions inside ones over distances (Column terms): SQL computes them, as extra columns.
    computed = {index: f"vectorindex_term_{index}" for index in needed if isinstance(plan.terms[index], Column)}
    base = sql_queryset(queryset, plan)
    for index, alias in computed.items():
        base.query.annotations[alias] = plan.terms[index].expression
    if computed and base.query.annotation_select_mask is not None:
        base.query.append_annotation_mask(computed.values())
    base = base.values_list("pk", *paths, *computed.values())
    connection = connections[base.db]
    compiler = base.query.get_compiler(using=base.db)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return
    pk_converters = compiler.get_converters([compiler.select[0][0]])
    first_computed = 1 + len(paths)
    computed_converters = [
        compiler.get_converters([compiler.select[first_computed + position][0]]) for position in range(len(computed))
    ]
    fields = {path: _field(model, path) for path in paths}
    size = vectorindex_settings.EXACT_CHUNK_SIZE
    wrong: tuple[str, list[tuple[Any, int]]] | None = None
    stream = stream_rows(connection, sql, params, size)
    try:
        for rows in stream:
            columns = list(zip(*rows))
            if pk_converters:
                rows_of_pk = compiler.apply_converters(([pk] for pk in columns[0]), pk_converters)
                pks = [row[0] for row in rows_of_pk]
            else:
                pks = columns[0]
            try:
                matrices = {
                    path: _matrix(columns[position + 1], fields[path], path)
                    for position, path in enumerate(paths)
                }
            except WrongSizedChunk as error:
                wrong = (error.path, [(pks[i], nbytes) for i, nbytes in error.rows])
                break
            values = [np.full(len(rows), np.nan) for _ in plan.terms]
            for position, index in enumerate(computed):
                values[index] = _numbers(columns[first_computed + position], compiler, computed_converters[position])
            for index in needed:
                term = plan.terms[index]
                if isinstance(term, Column):
                    continue
                if isinstance(term, (Derived, Cases)):  # after the terms it is made of
                    values[index] = term.combine(values, plan)
                    continue
                present, matrix = matrices[term.field_path]
                if term.other_path is None:
                    values[index][present] = term.compute(matrix)
                else:  # NULL where either is
                    other_present, other_matrix = matrices[term.other_path]
                    both = present & other_present
                    values[index][both] = term.compute_between(matrix[both[present]], other_matrix[both[other_present]])
            chunk = Chunk(np.asarray(pks), values, {p: matrices[p] for p in vectors})
            if plan.where_numpy is not None:
                keep, _ = evaluate(plan.where_numpy, values, plan)
                chunk = _take(chunk, keep)
            if len(chunk):
                yield chunk
    finally:
        stream.close()  # before the wrong rows are counted: MySQL reads one result at a time
    if wrong is not None:
        path, seen = wrong
        raise _wrong_sized(sql_queryset(queryset, plan), path, seen)


def _wrong_sized(queryset: Any, path: str, seen: list[tuple[Any, int]]) -> CorruptVector:
    """The error naming the rows of *queryset* whose *path* vector has the wrong size.

    Counted in SQL, by the length of each stored blob. *seen* — (primary key,
    bytes) of wrong rows the scan found — stands in should none be counted
    (another transaction fixed them meanwhile).
    """
    field = _field(queryset.model, path)
    label = f"{field.model._meta.label}.{field.name}"
    if isinstance(field, SparseVectorField):  # no one stored size to count by: the rows the scan met
        return CorruptVector.sparse_rows(label, field.dimensions, seen)
    *relations, _name = path.split("__")
    pk_path = "__".join([*relations, "pk"])
    wrong = (
        queryset.annotate(vectorindex_stored_bytes=Length(path))
        .filter(**{f"{path}__isnull": False})
        .exclude(vectorindex_stored_bytes=field.dimensions * field.storage_dtype.itemsize)
        .values_list(pk_path, "vectorindex_stored_bytes")
        .distinct()
        .order_by(pk_path)
    )
    count = wrong.count()
    rows = list(wrong[:ROWS_NAMED]) if count else list(seen)
    return CorruptVector.in_rows(label, field.dimensions, rows, max(count, len(rows)), field.storage_dtype.itemsize)


# The field of a term's values, as constants in SQL (values() rows).
OUTPUT_FIELDS = {"float": FloatField(), "int": IntegerField(), "bool": BooleanField()}


def _output_field(term: Any) -> Any:
    """The field of *term*'s values as constants in SQL: its labels' (CharField for text) or its kind's."""
    if getattr(term, "labels", None) is not None:
        return term.field
    return OUTPUT_FIELDS[getattr(term, "kind", "float")]


def _numbers(column: tuple, compiler: Any, converters: dict) -> np.ndarray:
    """A computed column's values as floats, NaN for NULL (through the backend's converters: SQLite's decimals)."""
    if converters:
        column = [row[0] for row in compiler.apply_converters(([value] for value in column), converters)]
    return np.array([np.nan if value is None else float(value) for value in column], dtype=np.float64)


def _with_parts(plan: DistancePlan, wanted: set[int]) -> list[int]:
    """*wanted* terms and the terms each derived one is made of, in the plan's order (parts first)."""
    found: set[int] = set()
    pending = list(wanted)
    while pending:
        index = pending.pop()
        if index in found:
            continue
        found.add(index)
        term = plan.terms[index]
        if not isinstance(term, Distance):
            pending.extend(term.term_parts(plan))
    return sorted(found)


def _field(model: Any, path: str) -> Any:
    opts = model._meta
    *relations, name = path.split("__")
    for relation in relations:
        opts = opts.get_field(relation).related_model._meta
    return opts.get_field(name)


def _matrix(blobs: tuple, field: Any, path: str) -> tuple[np.ndarray, Any]:
    """(present mask, float32 matrix — sparse.Rows for a SparseVectorField — of the present rows) of one chunk's column."""
    if None in blobs:
        present = np.fromiter((blob is not None for blob in blobs), bool, len(blobs))
        blobs = tuple(blob for blob in blobs if blob is not None)
    else:
        present = np.ones(len(blobs), bool)
    try:
        return present, field.stack(list(blobs))
    except (codec.WrongSize, sparse.Unreadable) as error:
        in_chunk = np.flatnonzero(present)[error.positions]
        raise WrongSizedChunk(path, list(zip(in_chunk.tolist(), error.sizes.tolist()))) from None


def _take(chunk: Chunk, keep: np.ndarray) -> Chunk:
    vectors = {}
    for path, (present, matrix) in chunk.vectors.items():
        vectors[path] = (present[keep], matrix[keep[present]])
    return Chunk(chunk.pks[keep], [v[keep] for v in chunk.values], vectors)


# Selecting ---------------------------------------------------------------------


def _order(values: list[np.ndarray], keys: list[tuple[int, bool, bool]], position: np.ndarray) -> np.ndarray:
    """Indices that sort rows by the distance keys, then by scan position."""
    sort_keys = [position]
    for term, descending, nulls_first in reversed(keys):
        column = values[term]
        null = np.isnan(column)
        sort_keys.append(np.where(null, 0.0, -column if descending else column))
        sort_keys.append((~null if nulls_first else null).astype(np.int8))
    return np.lexsort(sort_keys)


def select(queryset: Any, plan: DistancePlan) -> tuple[list, list[np.ndarray]]:
    """The primary keys of the result, in order and sliced, and their distances."""
    keys = plan.order_keys_effective()
    wanted = plan.high  # rows needed from the start of the order, None = all
    pks: list[np.ndarray] = []
    values: list[list[np.ndarray]] = [[] for _ in plan.terms]
    positions: list[np.ndarray] = []
    seen = buffered = 0
    for chunk in scan(queryset, plan):
        pks.append(chunk.pks)
        for column, chunk_values in zip(values, chunk.values):
            column.append(chunk_values)
        positions.append(np.arange(seen, seen + len(chunk)))
        seen += len(chunk)
        buffered += len(chunk)
        if wanted is None:
            continue
        if not keys:
            if seen >= wanted:
                break  # scan order is the result order: the first rows suffice
        elif buffered > 2 * wanted:
            pks, values, positions = _best(pks, values, positions, keys, wanted)
            buffered = wanted
    if not pks:
        return [], [np.empty(0) for _ in plan.terms]
    all_pks = np.concatenate(pks)
    all_values = [np.concatenate(column) for column in values]
    if keys:
        order = _order(all_values, keys, np.concatenate(positions))
        all_pks = all_pks[order]
        all_values = [column[order] for column in all_values]
    end = plan.high if plan.high is not None else len(all_pks)
    result = slice(plan.low, end)
    return all_pks[result].tolist(), [column[result] for column in all_values]


def _best(pks, values, positions, keys, wanted):
    all_pks = np.concatenate(pks)
    all_values = [np.concatenate(column) for column in values]
    all_positions = np.concatenate(positions)
    order = _order(all_values, keys, all_positions)[:wanted]
    return (
        [all_pks[order]],
        [[column[order]] for column in all_values],
        [all_positions[order]],
    )


def count(queryset: Any, plan: DistancePlan) -> int:
    """How many rows the query returns, slice included."""
    if plan.where_numpy is None:
        total = sql_queryset(queryset, plan).count()
    else:
        total = sum(len(chunk) for chunk in scan(queryset, plan, terms=False))
    total = max(0, total - plan.low)
    if plan.high is not None:
        total = min(total, plan.high - plan.low)
    return total


# Fetching -----------------------------------------------------------------------


def fetch(
    queryset: Any,
    plan: DistancePlan,
    *,
    prefetch: bool = False,
    selected: tuple[list, list[np.ndarray]] | None = None,
) -> Iterator[Any]:
    """The rows of the result, in order: model instances, dicts or tuples.

    *selected* is (primary keys, distances) chosen by the index; without it
    the exact scan chooses. *prefetch* runs the queryset's
    ``prefetch_related()`` lookups batch by batch (for ``iterator()``;
    ``list()`` runs them once over the whole result).
    """
    pks, values = selected if selected is not None else select(queryset, plan)
    size = vectorindex_settings.RESULT_BATCH_SIZE
    instances = queryset._iterable_class is ModelIterable
    lookups = queryset._prefetch_related_lookups
    for start in range(0, len(pks), size):
        batch_pks = pks[start : start + size]
        batch_values = [column[start : start + size] for column in values]
        if instances:
            rows = _fetch_instances(queryset, plan, batch_pks, batch_values)
            if prefetch and lookups:
                prefetch_related_objects(rows, *lookups)
            yield from rows
        else:
            yield from _fetch_rows(queryset, plan, batch_pks, batch_values)


def _fetch_instances(queryset: Any, plan: DistancePlan, pks: list, values: list[np.ndarray]) -> list:
    """Model instances by primary key, put in order and given their distances here."""
    qs = sql_queryset(queryset, plan, for_scan=False)
    qs.query.clear_ordering(force=True)
    found = {obj.pk: obj for obj in qs.filter(pk__in=pks)}
    selected = [
        (name, plan.terms[term], values[term].tolist())
        for name, term in plan.annotations.items()
        if name in queryset.query.annotation_select
    ]
    rows = []
    for position, pk in enumerate(pks):
        obj = found.get(pk)
        if obj is None:  # deleted by another transaction since the scan
            continue
        for name, term, column in selected:
            setattr(obj, name, returned(term, column[position]))
        rows.append(obj)
    return rows


def _fetch_rows(queryset: Any, plan: DistancePlan, pks: list, values: list[np.ndarray]) -> Any:
    """values() / values_list() rows: distances and rank go into SQL as constants."""
    qs = queryset._chain()
    query = qs.query
    query.clear_limits()
    for name, term in plan.annotations.items():
        constants = Case(
            *[
                When(pk=pk, then=Value(returned(plan.terms[term], value)))
                for pk, value in zip(pks, values[term].tolist())
            ],
            default=Value(None),
            output_field=_output_field(plan.terms[term]),
        )
        query.annotations[name] = constants.resolve_expression(query, allow_joins=True)
    query._annotation_select_cache = None
    query.where = plan.where_sql.clone() if plan.where_sql is not None else WhereNode()
    # The scan fixed the order; pass it on as each row's rank.
    rank = Case(
        *[When(pk=pk, then=Value(index)) for index, pk in enumerate(pks)],
        output_field=IntegerField(),
    )
    query.clear_ordering(force=True)
    query.standard_ordering = True
    query.add_ordering(rank.asc())
    qs._prefetch_related_lookups = ()
    return qs.filter(pk__in=pks)
