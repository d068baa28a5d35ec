"""Turning user input into float32 vectors, and vectors into bytes and text.

A vector is stored as a little-endian float32 blob of exactly ``4 * dimensions``
bytes. :func:`coerce` is the single gate every value passes through before it is
stored, compared or searched: it either returns a C-contiguous float32 array of the
expected length with only finite values, or raises :class:`InvalidVector` saying
what was expected and what was received.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from decimal import Decimal, localcontext
from typing import Any

import numpy as np

from ..exceptions import (  # raised here, defined with the app's other errors
    InvalidVector,
    WrongSize,
)

MAX_DIMENSIONS = 16_383
STORAGE_DTYPE = np.dtype("<f4")
BYTES_PER_DIMENSION = STORAGE_DTYPE.itemsize  # 4: one float32
# A HalfVectorField's: little-endian float16, 2 bytes per dimension.
HALF_DTYPE = np.dtype("<f2")
# A BitField's: one byte a bit, 0 or 1.
BIT_DTYPE = np.dtype("u1")
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65,504
# float32's largest value, 3.4e38, has 39 digits: an int written with more
# characters than this (a sign and 39 digits) is beyond float32's range.
_INT_DIGITS = 40
# Significant digits of a number too large for a float, in a message: about
# what float32 holds.
_SCIENTIFIC_DIGITS = 7


def _describe(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Python's spellings of the special floats, as a whole item of the list; JSON
# knows only NaN, Infinity and -Infinity.
_SPECIAL_FLOAT = re.compile(r"(?<=[\[,])(\s*)([+-]?)(inf|infinity|nan)(?=\s*[,\]])", re.IGNORECASE)


def _json_special(match: re.Match) -> str:
    space, sign, word = match.groups()
    if word.lower() == "nan":
        return space + "NaN"
    return space + ("-Infinity" if sign == "-" else "Infinity")


def _parse_float(text: str) -> float | Decimal:
    # A finite number beyond a float's range ("1e400") stays a Decimal, so that
    # coerce() can say it is out of range instead of calling it infinite.
    number = float(text)
    return number if math.isfinite(number) else Decimal(text)


def _parse_int(text: str) -> int | Decimal:
    # Python refuses to read an int of over 4,300 digits; any of over 40 is
    # beyond float32's range, and as a Decimal it is refused as that.
    return int(text) if len(text) <= _INT_DIGITS else Decimal(text)


def _loads(text: str) -> Any:
    try:
        values = json.loads(text)
    except ValueError:  # not JSON, or an int of over 4,300 digits
        return json.loads(text, parse_float=_parse_float, parse_int=_parse_int)
    if isinstance(values, list) and (math.inf in values or -math.inf in values):
        # Infinity, or a number beyond a float's range: read again to tell which.
        return json.loads(text, parse_float=_parse_float, parse_int=_parse_int)
    return values


def parse_text(text: str) -> Any:
    """Parse ``"[1, 2, 3]"`` (the text form of a vector) into a list of numbers.

    ``inf``, ``-inf`` and ``nan`` are read as numbers (to be refused as not
    finite, like JSON's ``Infinity`` and ``NaN``), not as unreadable text.
    """
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            return _loads(stripped)
        except ValueError:
            pass
        try:
            return _loads(_SPECIAL_FLOAT.sub(_json_special, stripped))
        except ValueError:
            pass
    raise InvalidVector(
        "invalid_text",
        f"expected a vector written as [1.0, 2.0, …], got the string {_describe(text)}",
    )


def coerce(value: Any, dimensions: int | None) -> np.ndarray:
    """Return *value* as a float32 vector of *dimensions* values, or raise InvalidVector.

    Accepts a list or a tuple of real numbers (int, float, Fraction, Decimal,
    numpy scalars), a numpy array of any real dtype (booleans are not numbers
    here), a ``HalfVector`` (anything with ``to_numpy()``), and the text form
    ``"[1, 2, 3]"``. ``dimensions=None`` accepts any length of at least one.
    """
    if isinstance(value, str):
        value = parse_text(value)
    elif is_vector_object(value):
        value = np.asarray(value.to_numpy())
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidVector(
            "not_a_sequence",
            f"expected a sequence of numbers, got a {type(value).__name__} value",
        )
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (list, tuple)):
        array = _from_sequence(value)
    else:
        raise InvalidVector(
            "not_a_sequence",
            f"expected a sequence of numbers, got {_describe(value)} "
            f"({type(value).__name__})",
        )
    if array.ndim == 0:
        raise InvalidVector(
            "not_a_sequence",
            f"expected a sequence of numbers, got a 0-d array {_describe(value)}",
        )
    if array.ndim > 1:
        raise InvalidVector(
            "nested",
            "expected a flat sequence of numbers, got a nested sequence of shape "
            f"{array.shape}",
        )
    if array.dtype.kind not in "iuf":
        raise InvalidVector(
            "not_numbers",
            f"expected real numbers, got an array of dtype {array.dtype}",
        )
    if dimensions is not None and array.shape[0] != dimensions:
        raise InvalidVector(
            "dimensions",
            f"expected {dimensions} dimensions, got {array.shape[0]}",
        )
    if array.shape[0] == 0:
        raise InvalidVector("dimensions", "expected at least 1 dimension, got 0")
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            position = int(np.argmin(finite))
            raise InvalidVector(
                "not_finite",
                f"expected finite numbers, got {array[position]} at position {position}",
            )
    with np.errstate(over="ignore"):
        vector = np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:
        overflow = np.isinf(vector)
        if overflow.any():
            position = int(np.argmax(overflow))
            raise _out_of_range(str(array[position]), position)
    return vector


def parse_bits(value: Any, length: int | None) -> np.ndarray:
    """A bit string (``"101"``) or a sequence of 0/1 or booleans as a float32 vector of 0s and 1s, or InvalidVector."""
    if isinstance(value, str):
        if value.strip("01"):
            raise InvalidVector("not_bits", f"expected a string of 0s and 1s, got {_describe(value)}")
        array = np.frombuffer(value.encode("ascii"), dtype=np.uint8) - ord("0")
    elif isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.ndim != 1 or array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all():
            raise InvalidVector("not_bits", f"expected bits (0 or 1, or booleans), got {_describe(value)}")
    else:
        raise InvalidVector(
            "not_bits", f"expected a string of 0s and 1s, got {_describe(value)} ({type(value).__name__})"
        )
    if length is not None and len(array) != length:
        raise InvalidVector("dimensions", f"expected {length} bits, got {len(array)}")
    if not len(array):
        raise InvalidVector("dimensions", "expected at least 1 bit, got 0")
    return array.astype(np.float32)


def bits_text(vector: Any) -> str:
    """0/1 values as ``"101"``."""
    return "".join("1" if bit else "0" for bit in np.asarray(vector).tolist())


def is_vector_object(value: Any) -> bool:
    """A vector value that is not an array: a ``HalfVector`` (anything with ``to_numpy()``)."""
    return not isinstance(value, np.ndarray) and callable(getattr(value, "to_numpy", None))


def to_half(vector: np.ndarray) -> np.ndarray:
    """A float32 vector as float16 values (what a HalfVectorField stores), or InvalidVector beyond ±65,504."""
    beyond = np.abs(vector) > FLOAT16_MAX
    if beyond.any():
        position = int(np.argmax(beyond))
        raise InvalidVector(
            "out_of_range",
            f"expected numbers within float16 range (±{FLOAT16_MAX:g}), got {vector[position]:g} at position {position}",
        )
    return vector.astype(np.float16)


def _out_of_range(number: str, position: int) -> InvalidVector:
    return InvalidVector(
        "out_of_range",
        f"expected numbers within float32 range (±{FLOAT32_MAX:.7g}), got {number} at position {position}",
    )


def _from_sequence(values: list | tuple) -> np.ndarray:
    for position, item in enumerate(values):
        if isinstance(item, (list, tuple, np.ndarray)):
            raise InvalidVector(
                "nested",
                f"expected a flat sequence of numbers, got a nested sequence "
                f"at position {position}",
            )
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (numbers.Real, Decimal)):
            raise InvalidVector(
                "not_numbers",
                f"expected numbers, got {_describe(item)} at position {position}",
            )
    # float64 first, so that values beyond float32's range are caught, not
    # silently turned into infinities.
    try:
        array = np.asarray([float(item) for item in values], dtype=np.float64)
    except (OverflowError, ValueError):
        array = None
    if array is None or not np.isfinite(array).all():
        _refuse_beyond_float(values)
    return array


def _refuse_beyond_float(values: list | tuple) -> None:
    """Raise for the first finite number too large for a float (and a signalling NaN).

    An int or Fraction that large raises OverflowError in ``float()``; a
    Decimal or a long double becomes an infinity, which is not what was written.
    """
    for position, item in enumerate(values):
        try:
            number = float(item)
        except OverflowError:
            raise _out_of_range(_scientific(item), position) from None
        except ValueError:  # Decimal("sNaN")
            raise InvalidVector(
                "not_finite", f"expected finite numbers, got {_describe(item)} at position {position}"
            ) from None
        if math.isinf(number) and item != number:
            raise _out_of_range(_scientific(item), position)


def _scientific(number: numbers.Real | Decimal) -> str:
    """A number too large for a float, in 7 significant digits: ``1e+400``."""
    with localcontext(prec=_SCIENTIFIC_DIGITS):
        if isinstance(number, numbers.Rational):
            number = Decimal(number.numerator) / Decimal(number.denominator)
        if isinstance(number, Decimal):
            return f"{number.normalize():e}"
    return str(number)


def to_bytes(vector: np.ndarray, dtype: np.dtype = STORAGE_DTYPE) -> bytes:
    """The storage form: little-endian float32, 4 bytes per dimension (*dtype*: float16's 2, for half vectors)."""
    return vector.astype(dtype, copy=False).tobytes()


def from_bytes(data: bytes | bytearray | memoryview, dtype: np.dtype = STORAGE_DTYPE) -> np.ndarray:
    """One stored blob (of *dtype* values) back into a (writable, native float32) vector."""
    if len(data) % dtype.itemsize:
        raise InvalidVector("corrupt", f"expected a multiple of {dtype.itemsize} bytes, got {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype).astype(np.float32)


def stack_bytes(blobs: list[bytes], dimensions: int, dtype: np.dtype = STORAGE_DTYPE) -> np.ndarray:
    """Many stored blobs (of *dtype* values) of one dimension as an ``(n, dimensions)`` float32 matrix.

    One ``join`` and one ``frombuffer``; each blob's length is checked, since
    blobs of several wrong sizes can add up to the right total.
    """
    sizes = np.fromiter(map(len, blobs), np.int64, len(blobs))
    wrong = np.flatnonzero(sizes != dimensions * dtype.itemsize)
    if len(wrong):
        raise WrongSize(wrong, sizes[wrong], dimensions, len(blobs), dtype.itemsize)
    data = b"".join(blobs)
    matrix = np.frombuffer(data, dtype=dtype).reshape(len(blobs), dimensions)
    return matrix.astype(np.float32, copy=False)


def to_text(vector: np.ndarray) -> str:
    """``"[0.1, 2.0, …]"`` with the shortest text that reads back to the same float32."""
    return "[" + ", ".join(str(value) for value in vector.astype(np.float32)) + "]"


def preview(vector: np.ndarray, values: int = 5) -> str:
    """A short human summary: ``"384 dimensions: [0.0123, -0.0456, …]"``."""
    shown = ", ".join(f"{value:.4g}" for value in vector[:values].tolist())
    more = ", …" if vector.shape[0] > values else ""
    noun = "dimension" if vector.shape[0] == 1 else "dimensions"
    return f"{vector.shape[0]} {noun}: [{shown}{more}]"
