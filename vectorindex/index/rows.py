"""The indexed model's rows, as the index reads them: every vector (streamed), or some by primary key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from django.db import connections

from ..engine import codec
from ..exceptions import CorruptVector
from ..storage import ROWS_PER_READER, read_by_keys
from .registry import Declared

Progress = Callable[[str, int, int], None]  # (stage, done, total): a build's, a calibration's


def stream_vectors(
    declared: Declared, using: str, storage: Any = None
) -> Iterator[tuple[np.ndarray, np.ndarray, list | None]]:
    """(vector ids, vectors, primary keys) of every row whose vector is not NULL, a chunk at a time.

    For an integer primary key the ids are the keys, and the third item is
    None. For another key (:attr:`Declared.keyed`) the ids are those its
    version rows give (read through *storage*), -1 for a row the index does
    not know, and the third item lists the chunk's keys.
    """
    from ..orm import exact
    from ..orm.planner import DistancePlan

    queryset = declared.model._base_manager.using(using).filter(**{f"{declared.field.name}__isnull": False})
    plan = DistancePlan(where_sql=queryset.query.where)
    for chunk in exact.scan(queryset, plan, terms=False, vectors=(declared.field.name,)):
        _present, matrix = chunk.vectors[declared.field.name]
        if not declared.keyed:
            yield chunk.pks.astype(np.int64), matrix, None
            continue
        pks = chunk.pks.tolist()
        known = storage.ids_of_keys([declared.key_text(pk) for pk in pks]) if storage is not None else {}
        ids = np.array([known.get(declared.key_text(pk), -1) for pk in pks], dtype=np.int64)
        yield ids, matrix, pks


def model_vectors(declared: Declared, using: str, ids: list[int], storage: Any = None) -> dict[int, np.ndarray]:
    """vector id -> the vector in the indexed model's row (the table that holds the field).

    For a keyed index (:attr:`Declared.keyed`) the ids are turned into the
    rows' keys through *storage*'s version rows first.
    """
    if declared.keyed:
        keys = storage.keys_of_ids(ids)
        pks = {declared.key_value(key): vector_id for vector_id, key in keys.items()}
        return {vector_id: vector for pk, vector in rows_by_pk(declared, using, list(pks)).items()
                for vector_id in [pks[pk]]}
    connection = connections[using]
    table, key, column = row_source(declared, connection)

    def sql(listed: str) -> str:
        return f"SELECT {key}, {column} FROM {table} WHERE {key} IN ({listed})"

    rows = read_by_keys(connection, sql, [], sorted(set(ids)), kind="rows", per_reader=ROWS_PER_READER)
    return decoded_vectors(declared, [(pk, blob) for pk, blob in rows if blob is not None])


def rows_by_pk(declared: Declared, using: str, pks: list[Any]) -> dict[Any, np.ndarray]:
    """primary key -> vector of the rows with these keys (of any type) that have one, through the ORM."""
    field = declared.field
    rows = declared.model._base_manager.using(using).filter(pk__in=pks, **{f"{field.name}__isnull": False})
    return {pk: np.asarray(value, dtype=np.float32) for pk, value in rows.values_list("pk", field.attname)}


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
