"""Values that vector fields hand back other than numpy arrays: ``HalfVector`` and ``SparseVector``, as pgvector-python has them."""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import codec, sparse

__all__ = ["HalfVector", "SparseVector"]


class HalfVector:
    """A vector of float16 values: what a ``HalfVectorField`` returns, as pgvector-python 0.4's does.

    ``HalfVector([1, 2, 3])`` takes what a vector field takes (a list, an
    array, ``"[1, 2, 3]"``) and refuses what it refuses, values beyond
    float16's ±65,504 included, with ``ValueError``. ``to_list()`` and
    ``to_numpy()`` give the values; ``numpy.asarray(half)`` works too.
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        try:
            self._value = codec.to_half(codec.coerce(value, None))
        except codec.InvalidVector as error:
            raise ValueError(f"HalfVector: {error.message}.") from None

    def __repr__(self) -> str:
        return f"HalfVector({self.to_list()})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HalfVector):
            return np.array_equal(self._value, other._value)
        return NotImplemented

    __hash__ = None  # mutable through to_numpy(), like pgvector's

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._value if dtype is None else self._value.astype(dtype)

    def dimensions(self) -> int:
        return len(self._value)

    def to_list(self) -> list[float]:
        return self._value.tolist()

    def to_numpy(self) -> np.ndarray:
        return self._value

    def to_text(self) -> str:
        return codec.to_text(self._value.astype(np.float32))


_NO_DIMENSIONS = object()


class SparseVector:
    """A sparse vector: what a ``SparseVectorField`` takes and returns, as pgvector-python's ``SparseVector``.

    ``SparseVector([0, 2.5, 0])`` (from a dense list or array),
    ``SparseVector({1: 2.5}, 3)`` (0-based positions and the length) or
    ``SparseVector(scipy_sparse_array)``; ``SparseVector.from_text("{2:2.5}/3")``
    reads pgvector's text (positions from 1). ``dimensions()``, ``indices()`` and
    ``values()`` give its parts; ``to_list()``, ``to_numpy()``, ``to_text()``
    and ``to_coo()`` (with scipy) its other forms. Values are float32, as
    stored; a bad value raises ``ValueError`` saying what is wrong.
    """

    __slots__ = ("_parts",)

    def __init__(self, value: Any, dimensions: Any = _NO_DIMENSIONS, /) -> None:
        if isinstance(value, dict) and dimensions is _NO_DIMENSIONS:
            raise ValueError("SparseVector: a dict of positions needs the dimensions: SparseVector({0: 1.5}, 3).")
        if not isinstance(value, dict) and dimensions is not _NO_DIMENSIONS:
            raise ValueError("SparseVector: dimensions are given only with a dict of positions.")
        try:
            if isinstance(value, dict):
                self._parts = sparse.from_entries(list(value.items()), dimensions)
            elif isinstance(value, str):
                raise codec.InvalidVector("invalid_text", "text is read by SparseVector.from_text()")
            else:
                self._parts = sparse.parse(value, None)
        except codec.InvalidVector as error:
            raise ValueError(f"SparseVector: {error.message}.") from None

    @classmethod
    def from_text(cls, text: str) -> SparseVector:
        """pgvector's text form, ``{1:0.5,3:2.0}/5`` (positions from 1)."""
        try:
            return cls._of(sparse.parse_text(text))
        except codec.InvalidVector as error:
            raise ValueError(f"SparseVector: {error.message}.") from None

    @classmethod
    def _of(cls, parts: sparse.Parts) -> SparseVector:
        vector = cls.__new__(cls)
        vector._parts = parts
        return vector

    def __repr__(self) -> str:
        return f"SparseVector({dict(zip(self.indices(), self.values()))}, {self.dimensions()})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SparseVector):
            return self._parts == other._parts
        return NotImplemented

    __hash__ = None

    @property
    def sparse_parts(self) -> sparse.Parts:
        return self._parts

    def dimensions(self) -> int:
        return self._parts.dimensions

    def indices(self) -> list[int]:
        """The 0-based positions of the non-zero values, increasing."""
        return self._parts.indices.tolist()

    def values(self) -> list[float]:
        """The non-zero values, each the shortest decimal that is its float32 (``0.1``, not ``0.10000000149``)."""
        return [float(sparse.number_text(value)) for value in self._parts.values]

    def to_list(self) -> list[float]:
        return self.to_numpy().tolist()

    def to_numpy(self) -> np.ndarray:
        return self._parts.dense()

    def to_text(self) -> str:
        return sparse.to_text(self._parts)

    def to_coo(self) -> Any:
        from scipy.sparse import coo_array

        coords = ([0] * len(self._parts.indices), self._parts.indices)
        return coo_array((self._parts.values, coords), shape=(1, self._parts.dimensions))
