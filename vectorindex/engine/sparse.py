"""Sparse vectors, as pgvector's ``sparsevec``: a length and its non-zero entries.

A sparse vector is ``(dimensions, indices, values)``: its length, the 0-based
positions of its non-zero values in increasing order (int32) and those values
(finite float32, none zero). Written as text it is pgvector's
``{1:0.5,3:2.0}/5`` (positions from 1); stored as one little-endian blob::

    int32 dimensions, int32 count, int32 indices[count], float32 values[count]

:func:`parse` is the single gate every value passes through, as
:func:`~vectorindex.engine.codec.coerce` is for dense vectors; :func:`stack`
reads a scanned chunk of blobs as :class:`Rows`, and :func:`distances` computes
pgvector's four distances between those rows and one query without ever
making a row dense (a row of a million dimensions costs its non-zero entries).
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from ..exceptions import InvalidVector
from . import codec

# pgvector's limits for sparsevec.
MAX_DIMENSIONS = 1_000_000_000
MAX_NONZERO = 16_000
_WORD = np.dtype("<i4")
_VALUE = np.dtype("<f4")
HEADER_BYTES = 2 * _WORD.itemsize

_TEXT = re.compile(r"\s*\{(?P<entries>[^{}]*)\}\s*/\s*(?P<dimensions>[+-]?\d+)\s*")


@dataclass(frozen=True, eq=False)
class Parts:
    """One sparse vector: its length, increasing 0-based int32 positions and their float32 values (none zero)."""

    dimensions: int
    indices: np.ndarray
    values: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Parts):
            return NotImplemented
        return (
            self.dimensions == other.dimensions
            and np.array_equal(self.indices, other.indices)
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None

    def dense(self) -> np.ndarray:
        vector = np.zeros(self.dimensions, dtype=np.float32)
        vector[self.indices] = self.values
        return vector


def is_sparse_object(value: Any) -> bool:
    """A ``SparseVector`` (anything with ``indices()``, ``values()`` and ``dimensions()``) or a scipy sparse array."""
    if type(value).__module__.startswith("scipy.sparse"):
        return True
    return all(callable(getattr(value, name, None)) for name in ("indices", "values", "dimensions"))


def looks_sparse(value: Any) -> bool:
    """Whether *value* can only be a sparse vector: a ``SparseVector``, a dict, or ``{…}/n`` text."""
    if isinstance(value, str):
        return value.lstrip().startswith("{")
    return isinstance(value, (dict, Parts)) or is_sparse_object(value)


def parse(value: Any, dimensions: int | None) -> Parts:
    """*value* as a sparse vector of *dimensions* (any when None), or InvalidVector saying what is wrong.

    Accepts a ``SparseVector``, a scipy sparse array of one row, ``{1:0.5,3:2.0}/5``
    text, a dict of 0-based position → value (its length from *dimensions*),
    and whatever a dense vector field takes (a list, an array, ``"[0, 0.5, 0]"``).
    """
    if isinstance(value, Parts):
        parts = value
    elif isinstance(getattr(value, "sparse_parts", None), Parts):  # a SparseVector
        parts = value.sparse_parts
    elif isinstance(value, str) and value.lstrip().startswith("{"):
        parts = parse_text(value)
    elif isinstance(value, dict):
        if dimensions is None:
            raise InvalidVector("dimensions", "a dict of positions gives no length: pass a SparseVector(dict, dimensions)")
        parts = from_entries(list(value.items()), dimensions)
    elif type(value).__module__.startswith("scipy.sparse"):
        parts = _from_scipy(value)
    elif is_sparse_object(value):
        parts = from_entries(list(zip(value.indices(), value.values())), value.dimensions())
    else:
        dense = codec.coerce(value, dimensions)
        nonzero = np.flatnonzero(dense)
        parts = _checked(len(dense), nonzero, dense[nonzero])
    if dimensions is not None and parts.dimensions != dimensions:
        raise InvalidVector("dimensions", f"expected {dimensions} dimensions, got {parts.dimensions}")
    return parts


def from_entries(entries: list[tuple[Any, Any]], dimensions: Any) -> Parts:
    """(position, value) pairs, 0-based, in any order, of a vector of *dimensions*: zeros dropped."""
    for index, number in entries:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
            raise InvalidVector("not_numbers", f"expected integer positions, got {codec._describe(index)}")
        if isinstance(number, (bool, np.bool_)) or not isinstance(number, (numbers.Real, Decimal)):
            raise InvalidVector(
                "not_numbers", f"expected numbers, got {codec._describe(number)} at position {int(index)}"
            )
    if isinstance(dimensions, (bool, np.bool_)) or not isinstance(dimensions, numbers.Integral):
        raise InvalidVector("dimensions", f"expected an integer number of dimensions, got {codec._describe(dimensions)}")
    entries = sorted((int(index), number) for index, number in entries)
    indices = np.array([index for index, _ in entries], dtype=np.int64)
    values = codec.coerce([number for _, number in entries], None) if entries else np.empty(0, np.float32)
    keep = values != 0
    return _checked(int(dimensions), indices[keep], values[keep])


def _from_scipy(value: Any) -> Parts:
    coo = value.tocoo()
    if coo.ndim == 1:
        dimensions = coo.shape[0]
    elif coo.ndim == 2 and coo.shape[0] == 1:
        dimensions = coo.shape[1]
    else:
        raise InvalidVector("nested", f"expected a sparse array of one row, got shape {coo.shape}")
    columns = coo.coords[-1] if hasattr(coo, "coords") else coo.col
    return from_entries(list(zip(columns.tolist(), coo.data.tolist())), dimensions)


def parse_text(text: str) -> Parts:
    """``{1:0.5,3:2.0}/5`` (positions from 1, as pgvector writes them) as a sparse vector."""
    match = _TEXT.fullmatch(text)
    if match is None:
        raise InvalidVector(
            "invalid_text",
            f"expected a sparse vector written as {{1:0.5,3:2.0}}/5, got the string {codec._describe(text)}",
        )
    entries = []
    body = match["entries"].strip()
    for item in body.split(",") if body else ():
        index, colon, number = item.partition(":")
        try:
            entries.append((int(index) - 1, float(number)))
        except ValueError:
            raise InvalidVector(
                "invalid_text", f"expected position:value entries, got {codec._describe(item.strip())}"
            ) from None
        if not colon:
            raise InvalidVector("invalid_text", f"expected position:value entries, got {codec._describe(item.strip())}")
    if len({index for index, _ in entries}) != len(entries):
        raise InvalidVector("duplicate", "a position is given twice")
    return from_entries(entries, int(match["dimensions"]))


def _checked(dimensions: int, indices: np.ndarray, values: np.ndarray) -> Parts:
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        raise InvalidVector("dimensions", f"expected 1 to {MAX_DIMENSIONS:,} dimensions, got {dimensions}")
    if len(indices) > MAX_NONZERO:
        raise InvalidVector("dimensions", f"expected at most {MAX_NONZERO:,} non-zero values, got {len(indices)}")
    if len(indices) and (indices[0] < 0 or indices[-1] >= dimensions):
        wrong = int(indices[0] if indices[0] < 0 else indices[-1])
        raise InvalidVector(
            "dimensions", f"expected positions from 1 to {dimensions}, got {wrong + 1}"
        )
    if len(indices) > 1 and not (np.diff(indices) > 0).all():
        raise InvalidVector("duplicate", "a position is given twice")
    return Parts(dimensions, indices.astype(np.int32), np.ascontiguousarray(values, dtype=np.float32))


def number_text(value: np.float32) -> str:
    """A stored value as pgvector-python writes it: the shortest float32 text, as a Python float (``1.0``)."""
    return repr(float(str(value)))


def to_text(parts: Parts) -> str:
    """``{1:0.5,3:2.0}/5``: positions from 1, as pgvector writes a sparsevec."""
    entries = ",".join(f"{index + 1}:{number_text(value)}" for index, value in zip(parts.indices.tolist(), parts.values))
    return f"{{{entries}}}/{parts.dimensions}"


def to_bytes(parts: Parts) -> bytes:
    header = np.array([parts.dimensions, len(parts.indices)], dtype=_WORD)
    return header.tobytes() + parts.indices.astype(_WORD).tobytes() + parts.values.astype(_VALUE).tobytes()


def problem(data: bytes, dimensions: int | None) -> str | None:
    """What is wrong with one stored blob, or None when it reads as a sparse vector of *dimensions*."""
    size = len(data)
    if size < HEADER_BYTES or size % _WORD.itemsize:
        return f"{size} bytes, not a sparse vector"
    stored_dimensions, count = np.frombuffer(data[:HEADER_BYTES], dtype=_WORD).tolist()
    if count < 0 or size != HEADER_BYTES + 8 * count:
        return f"{size} bytes, not a sparse vector of {count} values"
    if not 1 <= stored_dimensions <= MAX_DIMENSIONS or (dimensions is not None and stored_dimensions != dimensions):
        return f"a sparse vector of {stored_dimensions} dimensions"
    indices = np.frombuffer(data, dtype=_WORD, count=count, offset=HEADER_BYTES)
    if count and (indices[0] < 0 or indices[-1] >= stored_dimensions or (np.diff(indices) <= 0).any()):
        return "a sparse vector with positions out of order or range"
    return None


def from_bytes(data: bytes | bytearray | memoryview, dimensions: int | None = None) -> Parts:
    """One stored blob back into a sparse vector, or InvalidVector("corrupt") saying what it holds instead."""
    data = bytes(data)
    wrong = problem(data, dimensions)
    if wrong is not None:
        raise InvalidVector("corrupt", f"expected a sparse vector, got {wrong}")
    stored_dimensions, count = np.frombuffer(data[:HEADER_BYTES], dtype=_WORD).tolist()
    indices = np.frombuffer(data, dtype=_WORD, count=count, offset=HEADER_BYTES).astype(np.int32)
    values = np.frombuffer(data, dtype=_VALUE, count=count, offset=HEADER_BYTES + 4 * count).astype(np.float32)
    return Parts(stored_dimensions, indices, values)


@dataclass
class Rows:
    """Sparse vectors of a scanned chunk, row after row (CSR): row *i*'s entries are ``indptr[i]:indptr[i + 1]``."""

    dimensions: np.ndarray  # per row
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.dimensions), int(self.dimensions.max(initial=0)))

    def __len__(self) -> int:
        return len(self.dimensions)

    def row_of_entry(self) -> np.ndarray:
        return np.repeat(np.arange(len(self)), np.diff(self.indptr))


class Unreadable(InvalidVector):
    """Stored blobs of a chunk that do not read as sparse vectors: their positions, sizes and problems."""

    def __init__(self, positions: list[int], sizes: list[int], problems: list[str]) -> None:
        super().__init__("corrupt", f"expected sparse vectors, got {problems[0]} at position {positions[0]}")
        self.positions = np.asarray(positions)
        self.sizes = np.asarray(sizes)
        self.problems = problems


def stack(blobs: list[bytes], dimensions: int | None) -> Rows:
    """Many stored blobs as :class:`Rows`, each checked (Unreadable names those that are not sparse vectors)."""
    if not blobs:
        empty = np.empty(0, dtype=np.int64)
        return Rows(empty, np.zeros(1, dtype=np.int64), empty.astype(np.int32), empty.astype(np.float32))
    sizes = np.fromiter(map(len, blobs), np.int64, len(blobs))
    if (sizes < HEADER_BYTES).any() or (sizes % _WORD.itemsize).any():
        raise _unreadable(blobs, dimensions)
    words = np.frombuffer(b"".join(blobs), dtype=_WORD)
    starts = np.concatenate(([0], np.cumsum(sizes // _WORD.itemsize)[:-1])).astype(np.int64)
    stored_dimensions = words[starts].astype(np.int64)
    counts = words[starts + 1].astype(np.int64)
    wanted = stored_dimensions if dimensions is None else dimensions
    if (
        (counts < 0).any()
        or (sizes != HEADER_BYTES + 8 * counts).any()
        or (stored_dimensions < 1).any()
        or (stored_dimensions > MAX_DIMENSIONS).any()
        or (stored_dimensions != wanted).any()
    ):
        raise _unreadable(blobs, dimensions)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    row = np.repeat(np.arange(len(blobs)), counts)
    within = np.arange(indptr[-1]) - indptr[row]
    indices = words[starts[row] + 2 + within].astype(np.int64)
    same_row = row[1:] == row[:-1]
    if (
        (indices < 0).any()
        or (indices >= stored_dimensions[row]).any()
        or (np.diff(indices)[same_row] <= 0).any()
    ):
        raise _unreadable(blobs, dimensions)
    values = words[starts[row] + 2 + counts[row] + within].view(_VALUE).astype(np.float32)
    return Rows(stored_dimensions, indptr, indices.astype(np.int32), values)


def _unreadable(blobs: list[bytes], dimensions: int | None) -> Unreadable:
    found = [(position, len(blob), problem(bytes(blob), dimensions)) for position, blob in enumerate(blobs)]
    positions, sizes, texts = zip(*[item for item in found if item[2] is not None])
    return Unreadable(list(positions), list(sizes), list(texts))


def distances(metric: str, rows: Rows, query: Parts) -> np.ndarray:
    """pgvector's ``l2``, ``ip``, ``cosine`` or ``l1`` from *query* to each row, in float64 (NaN: undefined).

    Each row's entries are matched to the query's by position; what either has
    alone counts against the other's zero. Rows of another length than the
    query's raise ValueError (pgvector: "different sparsevec dimensions").
    """
    n = len(rows)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    other = np.flatnonzero(rows.dimensions != query.dimensions)
    if len(other):
        raise ValueError(
            f"different sparse vector dimensions: {int(rows.dimensions[other[0]])} and {query.dimensions}"
        )
    row = rows.row_of_entry()
    q_indices, q_values = query.indices, query.values.astype(np.float64)
    at = np.searchsorted(q_indices, rows.indices)
    found = at < len(q_indices)
    found[found] = q_indices[at[found]] == rows.indices[found]
    matched = np.zeros(len(rows.indices), dtype=np.float64)
    matched[found] = q_values[at[found]]
    values = rows.values.astype(np.float64)

    def per_row(weights: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=weights, minlength=n)

    if metric == "ip":
        return -per_row(values * matched)
    if metric == "cosine":
        norms = np.sqrt(per_row(values * values)) * np.sqrt(q_values @ q_values)
        with np.errstate(divide="ignore", invalid="ignore"):
            similarity = per_row(values * matched) / norms
        np.clip(similarity, -1.0, 1.0, out=similarity)
        return 1.0 - similarity
    if metric == "l2":
        # The query's entries a row lacks count whole: its squares less those matched.
        alone = np.maximum(q_values @ q_values - per_row(matched * matched), 0.0)
        return np.sqrt(per_row((values - matched) ** 2) + alone)
    if metric == "l1":
        alone = np.maximum(np.abs(q_values).sum() - per_row(np.abs(matched)), 0.0)
        return per_row(np.abs(values - matched)) + alone
    raise ValueError(f"sparse vectors have no {metric!r} distance")
