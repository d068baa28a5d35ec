"""Posting-list payloads: packed ``(vector_id, version, vector)`` entries.

An entry is ``int64 vector_id, uint32 version, float32[d] vector``, little-endian
and unpadded: ``12 + 4·d`` bytes. A posting row holds one or more entries; a
posting list is every row of one head, and many rows decode in one
``frombuffer`` call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

# Packed rows stay far below MariaDB's default max_allowed_packet (16 MiB).
ROW_BYTES = 1 << 20


def entry_dtype(dimensions: int) -> np.dtype:
    return np.dtype([("id", "<i8"), ("version", "<u4"), ("vector", "<f4", (dimensions,))])


def encode(ids: np.ndarray, versions: np.ndarray, vectors: np.ndarray) -> bytes:
    entries = np.empty(len(ids), dtype=entry_dtype(vectors.shape[1]))
    entries["id"] = ids
    entries["version"] = versions
    entries["vector"] = vectors
    return entries.tobytes()


def pack(ids: np.ndarray, versions: np.ndarray, vectors: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """(count, payload) rows of at most ROW_BYTES each, for one posting list."""
    per_row = max(1, ROW_BYTES // entry_dtype(vectors.shape[1]).itemsize)
    for start in range(0, len(ids), per_row):
        end = start + per_row
        yield len(ids[start:end]), encode(ids[start:end], versions[start:end], vectors[start:end])


def decode(payloads: Sequence[bytes], dimensions: int) -> np.ndarray:
    """Every entry of *payloads* as one structured array (id, version, vector)."""
    dtype = entry_dtype(dimensions)
    data = b"".join(payloads)
    if len(data) % dtype.itemsize:
        raise ValueError(
            f"posting payload of {len(data)} bytes is not a whole number of "
            f"{dtype.itemsize}-byte entries"
        )
    return np.frombuffer(data, dtype=dtype)
