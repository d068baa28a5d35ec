"""Values that vector fields hand back other than numpy arrays: ``HalfVector``, as pgvector-python has it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import codec

__all__ = ["HalfVector"]


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
