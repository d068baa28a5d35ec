"""The codec that every vector passes through, without Django."""

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from vectorindex.engine import codec


def test_accepts_lists_tuples_and_arrays_of_any_real_dtype():
    expected = np.array([1, 2, 3], dtype=np.float32)
    for value in (
        [1, 2, 3],
        (1.0, 2.0, 3.0),
        np.array([1, 2, 3], dtype=np.int8),
        np.array([1, 2, 3], dtype=np.uint64),
        np.array([1, 2, 3], dtype=np.float16),
        np.array([1, 2, 3], dtype=np.float64),
        [np.float32(1), np.int64(2), 3.0],
        [Fraction(1), Decimal("2.0"), np.longdouble(3)],
        "[1, 2, 3]",
        " [1.0,2,3e0] ",
    ):
        result = codec.coerce(value, 3)
        assert result.dtype == np.float32
        assert result.flags.c_contiguous
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        ([1, 2], "dimensions", "expected 3 dimensions, got 2"),
        ([float("nan"), 1, 2], "not_finite", "expected finite numbers, got nan at position 0"),
        ([1, float("inf"), 2], "not_finite", "expected finite numbers, got inf at position 1"),
        (np.array([1, 2, -np.inf]), "not_finite", "expected finite numbers, got -inf at position 2"),
        ([1, "a", 2], "not_numbers", "expected numbers, got 'a' at position 1"),
        ([1, None, 2], "not_numbers", "expected numbers, got None at position 1"),
        ([True, 1, 2], "not_numbers", "expected numbers, got True at position 0"),
        ([1, 2, 3j], "not_numbers", "expected numbers, got 3j at position 2"),
        (np.array([1, 2, 3], dtype=complex), "not_numbers", "expected real numbers, got an array of dtype complex128"),
        (np.array([True, False, True]), "not_numbers", "expected real numbers, got an array of dtype bool"),
        ([[1, 2, 3]], "nested", "expected a flat sequence of numbers, got a nested sequence at position 0"),
        (np.ones((1, 3)), "nested", "expected a flat sequence of numbers, got a nested sequence of shape (1, 3)"),
        (np.float64(1.0), "not_a_sequence", "expected a sequence of numbers, got np.float64(1.0) (float64)"),
        (np.array(1.0), "not_a_sequence", "expected a sequence of numbers, got a 0-d array array(1.)"),
        (5, "not_a_sequence", "expected a sequence of numbers, got 5 (int)"),
        ({1, 2, 3}, "not_a_sequence", "expected a sequence of numbers, got {1, 2, 3} (set)"),
        (b"\x00\x00\x80?", "not_a_sequence", "expected a sequence of numbers, got a bytes value"),
        ("1, 2, 3", "invalid_text", "expected a vector written as [1.0, 2.0, …], got the string '1, 2, 3'"),
        ("[1, 2,", "invalid_text", "expected a vector written as [1.0, 2.0, …], got the string '[1, 2,'"),
        ("[1, 2, NaN]", "not_finite", "expected finite numbers, got nan at position 2"),
        ('["1", 2, 3]', "not_numbers", "expected numbers, got '1' at position 0"),
        ([1e39, 0, 0], "out_of_range", "expected numbers within float32 range (±3.402823e+38), got 1e+39 at position 0"),
        ("[1, 2, inf]", "not_finite", "expected finite numbers, got inf at position 2"),
        ("[1, -INF, 2]", "not_finite", "expected finite numbers, got -inf at position 1"),
        ("[nan,1,2]", "not_finite", "expected finite numbers, got nan at position 0"),
        ('["inf", 1, 2]', "not_numbers", "expected numbers, got 'inf' at position 0"),
        ([Decimal("NaN"), 1, 2], "not_finite", "expected finite numbers, got nan at position 0"),
        ([Decimal("sNaN"), 1, 2], "not_finite", "expected finite numbers, got Decimal('sNaN') at position 0"),
        ([0, Decimal("Infinity"), 2], "not_finite", "expected finite numbers, got inf at position 1"),
        ([], "dimensions", "expected 3 dimensions, got 0"),
    ],
)
def test_refuses_bad_values_with_a_message_and_code(value, code, message):
    with pytest.raises(codec.InvalidVector) as caught:
        codec.coerce(value, 3)
    assert caught.value.code == code
    assert caught.value.message == message


OUT_OF_RANGE = "expected numbers within float32 range (±3.402823e+38), got"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([10**400, 0, 0], f"{OUT_OF_RANGE} 1e+400 at position 0"),
        ([0, -(10**400), 0], f"{OUT_OF_RANGE} -1e+400 at position 1"),
        ([0, 0, 10**5000], f"{OUT_OF_RANGE} 1e+5000 at position 2"),
        ((10**39, 0, 0), f"{OUT_OF_RANGE} 1e+39 at position 0"),
        ([Fraction(10**400, 3), 0, 0], f"{OUT_OF_RANGE} 3.333333e+399 at position 0"),
        ([Decimal("1e400"), 0, 0], f"{OUT_OF_RANGE} 1e+400 at position 0"),
        ([Decimal("-2.5e39"), 0, 0], f"{OUT_OF_RANGE} -2.5e+39 at position 0"),
        *(
            [
                ([0, np.longdouble("1e400"), 0], f"{OUT_OF_RANGE} 1e+400 at position 1"),
                (np.array([0, 0, np.longdouble("-1e400")]), f"{OUT_OF_RANGE} -1e+400 at position 2"),
            ]
            if np.finfo(np.longdouble).maxexp > 1024  # wider than a double here (x86-64 Linux)
            else []
        ),
        ("[1" + "0" * 400 + ", 2, 3]", f"{OUT_OF_RANGE} 1e+400 at position 0"),
        ("[1, -1" + "0" * 5000 + ", 3]", f"{OUT_OF_RANGE} -1e+5000 at position 1"),
        ("[1e400, 2, 3]", f"{OUT_OF_RANGE} 1e+400 at position 0"),
        ("[1, 2, -1.5E+400]", f"{OUT_OF_RANGE} -1.5e+400 at position 2"),
    ],
)
def test_numbers_beyond_float_range_are_out_of_range_not_a_crash(value, message):
    """Python ints, Fractions and text digits that large overflow float(); a
    Decimal, a long double or text like 1e400 would become an infinity."""
    with pytest.raises(codec.InvalidVector) as caught:
        codec.coerce(value, 3)
    assert caught.value.code == "out_of_range"
    assert caught.value.message == message


def test_small_exact_numbers_are_read_as_the_nearest_float32():
    np.testing.assert_array_equal(
        codec.coerce([Fraction(1, 3), Decimal("0.1"), Fraction(1, 10**400), Decimal("1e-400")], 4),
        np.array([1 / 3, 0.1, 0, 0], dtype=np.float32),
    )
    np.testing.assert_array_equal(codec.coerce("[1e-400, 123456789012345678901234567890123456789]", 2), np.float32([0, 1.2345679e38]))


def test_any_length_when_dimensions_is_none_but_not_empty():
    assert codec.coerce([1] * 7, None).shape == (7,)
    with pytest.raises(codec.InvalidVector, match="expected at least 1 dimension, got 0"):
        codec.coerce([], None)


def test_bytes_round_trip_is_little_endian_float32():
    vector = np.array([1.5, -2.25, 3.0e-7], dtype=np.float32)
    data = codec.to_bytes(vector)
    assert data == np.array(vector, dtype="<f4").tobytes()
    assert len(data) == 12
    back = codec.from_bytes(data)
    np.testing.assert_array_equal(back, vector)
    back[0] = 9  # writable, not a view of the bytes
    with pytest.raises(codec.InvalidVector, match="expected a multiple of 4 bytes, got 5 bytes"):
        codec.from_bytes(b"12345")


def test_stack_bytes_builds_a_matrix_and_checks_lengths():
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    matrix = codec.stack_bytes([codec.to_bytes(row) for row in rows], 3)
    np.testing.assert_array_equal(matrix, rows)
    with pytest.raises(codec.InvalidVector, match="expected 2 vectors of 3 dimensions"):
        codec.stack_bytes([codec.to_bytes(rows[0]), b"\x00" * 8], 3)


def test_stack_bytes_checks_each_length_not_only_the_total():
    """An 8-byte and a 16-byte blob add up to two 3-dimensional vectors: still two of the wrong size."""
    blobs = [codec.to_bytes(np.zeros(3, np.float32)), b"\x00" * 8, b"\x00" * 16]
    with pytest.raises(codec.WrongSize) as caught:
        codec.stack_bytes(blobs, 3)
    assert caught.value.positions.tolist() == [1, 2]
    assert caught.value.sizes.tolist() == [8, 16]
    assert caught.value.message == (
        "expected 3 vectors of 3 dimensions (12 bytes each), got 2 of another size (the first, at position 1, has 8 bytes)"
    )


def test_text_round_trips_every_float32_exactly():
    rng = np.random.default_rng(1)
    vector = np.concatenate(
        [rng.normal(size=200), [1e-38, 3.4028235e38, -0.0, 0.1, 1 / 3]]
    ).astype(np.float32)
    text = codec.to_text(vector)
    assert text.startswith("[") and text.endswith("]")
    np.testing.assert_array_equal(codec.coerce(text, vector.shape[0]), vector)
    assert codec.to_text(np.array([0.1, 2], dtype=np.float32)) == "[0.1, 2.0]"


def test_preview_is_short():
    vector = np.arange(384, dtype=np.float32) / 7
    assert codec.preview(vector, 3) == "384 dimensions: [0, 0.1429, 0.2857, …]"
    assert codec.preview(np.array([2.5], dtype=np.float32)) == "1 dimension: [2.5]"
