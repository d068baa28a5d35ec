"""The indexed model's rows, as the index reads them: every vector (streamed), or some by primary key."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from django.db import connections

from ..engine import codec
from ..exceptions import CorruptVector
from ..storage import ROWS_PER_READER, read_by_keys
from .registry import Declared

Progress = Callable[[str, int, int], None]  # (stage, done, total): a build's, a calibration's


def stream_vectors(declared: Declared, using: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pks, vectors) of every row whose vector is not NULL, a chunk at a time."""
    from ..orm import exact
    from ..orm.planner import DistancePlan

    queryset = declared.model._base_manager.using(using).filter(**{f"{declared.field.name}__isnull": False})
    plan = DistancePlan(where_sql=queryset.query.where)
    for chunk in exact.scan(queryset, plan, terms=False, vectors=(declared.field.name,)):
        _present, matrix = chunk.vectors[declared.field.name]
        yield chunk.pks.astype(np.int64), matrix


def model_vectors(declared: Declared, using: str, pks: list[int]) -> dict[int, np.ndarray]:
    """pk -> the vector in the indexed model's row (the table that holds the field)."""
    connection = connections[using]
    table, key, column = row_source(declared, connection)

    def sql(listed: str) -> str:
        return f"SELECT {key}, {column} FROM {table} WHERE {key} IN ({listed})"

    rows = read_by_keys(connection, sql, [], sorted(set(pks)), kind="rows", per_reader=ROWS_PER_READER)
    return decoded_vectors(declared, [(pk, blob) for pk, blob in rows if blob is not None])


def row_source(declared: Declared, connection) -> tuple[str, str, str]:
    """The quoted (table, primary key, vector column) of the model's rows that hold the indexed field."""
    owner = declared.field.model._meta
    quote = connection.ops.quote_name
    return quote(owner.db_table), quote(owner.pk.column), quote(declared.field.column)


def decoded_vectors(declared: Declared, rows: list[tuple[int, bytes]]) -> dict[int, np.ndarray]:
    """pk -> vector of (pk, stored bytes) rows; :class:`CorruptVector` for bytes of another dimension."""
    field = declared.field
    dtype = field.storage_dtype
    size = field.dimensions * dtype.itemsize
    wrong = sorted((pk, len(blob)) for pk, blob in rows if len(blob) != size)
    if wrong:
        raise CorruptVector.in_rows(f"{field.model._meta.label}.{field.name}", field.dimensions, wrong, width=dtype.itemsize)
    return {pk: codec.from_bytes(bytes(blob), dtype) for pk, blob in rows}
