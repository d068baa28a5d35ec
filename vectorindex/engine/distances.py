"""Exact distances between one query vector and a block of stored vectors.

The meanings are pgvector's: ``l2`` is the Euclidean distance (not squared),
``cosine`` is 1 − cosine similarity, ``ip`` is the *negative* inner product (so
that smaller is nearer for every metric) and ``l1`` is the taxicab distance.

Vectors are stored as float32; these kernels compute in float64 so that the
exact path is an oracle the approximate index can be measured against, not a
second approximation. A cosine distance that is undefined (a zero vector has no
direction) is NaN here; the query layer turns it into ``None``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _widen(matrix: np.ndarray) -> np.ndarray:
    # A float64 copy of our own, so that the kernels can work on it in place
    # instead of allocating another block-sized temporary.
    return matrix.astype(np.float64)


def l2(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    block = _widen(matrix)
    block -= query.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", block, block))


def cosine(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    block = _widen(matrix)
    q = query.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", block, block)) * np.sqrt(q @ q)
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = (block @ q) / norms
    # Rounding can push |similarity| a hair past 1; pgvector clamps the same way.
    np.clip(similarity, -1.0, 1.0, out=similarity)
    return 1.0 - similarity


def inner_product(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    return -(_widen(matrix) @ query.astype(np.float64))


def l1(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    block = _widen(matrix)
    block -= query.astype(np.float64)
    np.abs(block, out=block)
    return block.sum(axis=1)


KERNELS: dict[str, Kernel] = {
    "l2": l2,
    "cosine": cosine,
    "ip": inner_product,
    "l1": l1,
}


def hamming(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Bits that differ, of 0/1 vectors (a BitField's), as pgvector's ``<~>``."""
    return l1(matrix, query)


def jaccard(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """1 − |a ∧ b| / |a ∨ b| of 0/1 vectors, as pgvector's ``<%>``: 1 when they share no set bit."""
    block = _widen(matrix)
    q = query.astype(np.float64)
    both = block @ q
    either = block.sum(axis=1) + q.sum() - both
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(both > 0, 1.0 - both / either, 1.0)


KERNELS.update(hamming=hamming, jaccard=jaccard)


def _estimate_l2(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    block = matrix - query
    return np.sqrt(np.einsum("ij,ij->i", block, block))


def _estimate_cosine(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix)) * np.sqrt(query @ query)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - np.clip((matrix @ query) / norms, -1.0, 1.0)


ESTIMATES: dict[str, Kernel] = {
    "l2": _estimate_l2,
    "cosine": _estimate_cosine,
    "ip": lambda matrix, query: -(matrix @ query),
    "l1": lambda matrix, query: np.abs(matrix - query).sum(axis=1),
}


def estimates(metric: str, matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Distances in float32 arithmetic: for ranking many candidates, never for reporting.

    About four times cheaper than :func:`distances` on a few thousand rows
    (no float64 copy of the block, single-precision BLAS); the few candidates
    that win are scored again exactly.
    """
    if matrix.shape[0] == 0:
        return np.empty(0, dtype=np.float32)
    return ESTIMATES[metric](np.asarray(matrix, dtype=np.float32), np.asarray(query, dtype=np.float32))


def distances(metric: str, matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Distances from *query* to each row of *matrix*, as float64 (NaN: undefined)."""
    if matrix.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    return KERNELS[metric](matrix, query)


def between_rows(metric: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Distances between each row of *left* and the same row of *right* (two columns of one table), as float64."""
    if left.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    a, b = _widen(left), _widen(right)
    both = np.einsum("ij,ij->i", a, b)
    if metric == "ip":
        return -both
    if metric == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", a, a)) * np.sqrt(np.einsum("ij,ij->i", b, b))
        with np.errstate(divide="ignore", invalid="ignore"):
            similarity = both / norms
        np.clip(similarity, -1.0, 1.0, out=similarity)
        return 1.0 - similarity
    if metric == "jaccard":
        either = a.sum(axis=1) + b.sum(axis=1) - both
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(both > 0, 1.0 - both / either, 1.0)
    a -= b
    if metric == "l2":
        return np.sqrt(np.einsum("ij,ij->i", a, a))
    if metric in ("l1", "hamming"):
        return np.abs(a).sum(axis=1)
    raise ValueError(f"no distance {metric!r}")
