"""A head index's snapshot bytes: a header, the alive heads' ids, then hnswlib's saved index.

``MAGIC``, the dimensions and the number of alive ids (uint64 each), the ids
(int64 each, ascending), then hnswlib's own file (:mod:`.hnswfile`). hnswlib
keeps deleted elements (marked) and cannot list which they are, so the alive
ids travel alongside. Everything is checked before hnswlib reads a byte.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..exceptions import HeadIndexError
from . import hnswfile

MAGIC = b"VIHEAD2\n"
_COUNTS = np.dtype("<u8")
_ID = np.dtype("<i8")


def pack(dimensions: int, alive: Sequence[int], graph: bytes) -> bytes:
    """The snapshot of a head index of *dimensions* whose *alive* heads are in hnswlib's saved *graph*."""
    ids = np.array(sorted(alive), dtype=_ID)
    header = np.array([dimensions, len(ids)], dtype=_COUNTS).tobytes()
    return MAGIC + header + ids.tobytes() + graph


def unpack(data: bytes, dimensions: int) -> tuple[np.ndarray, memoryview, hnswfile.SavedIndex]:
    """(alive ids, hnswlib's bytes, what they hold) of a snapshot; HeadIndexError when anything does not verify.

    Everything is checked before hnswlib reads the bytes: our header, hnswlib's
    layout (:func:`hnswfile.validate`), and that every alive id is an element
    the graph holds and has not marked deleted.
    """
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 2 * _COUNTS.itemsize:
        raise HeadIndexError("the snapshot does not start like a head index")
    offset = len(MAGIC)
    stored_dimensions, count = (int(v) for v in np.frombuffer(data, dtype=_COUNTS, count=2, offset=offset))
    offset += 2 * _COUNTS.itemsize
    if stored_dimensions != dimensions:
        raise HeadIndexError(f"the snapshot has {stored_dimensions} dimensions, expected {dimensions}")
    if len(data) < offset + _ID.itemsize * count:
        raise HeadIndexError("the snapshot is truncated")
    alive = np.frombuffer(data, dtype=_ID, count=count, offset=offset)
    graph = memoryview(data)[offset + _ID.itemsize * count :]
    saved = hnswfile.validate(graph, dimensions)
    if count and not (np.diff(alive) > 0).all():
        raise HeadIndexError("the snapshot's alive heads are not in order or repeat")
    if not np.isin(alive, saved.labels[~saved.deleted]).all():
        raise HeadIndexError("the snapshot lists alive heads that its graph does not hold, or holds as deleted")
    return alive, graph, saved
