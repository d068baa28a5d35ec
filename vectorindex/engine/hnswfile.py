"""hnswlib's saved-index format, checked before hnswlib reads a byte of it.

hnswlib (0.8) trusts its input: ``loadIndex`` only checks that the link-list
sizes add up to the file's length, and a search follows every neighbour id it
finds without a bounds check. A snapshot whose checksum is right can still hold
bytes that make hnswlib read outside its buffers (a bug, or someone with write
access to the database), and that kills the process with a signal, which no
``except`` catches. :func:`validate` checks everything hnswlib dereferences, so
that the worst a snapshot can do is fail to load with a :class:`HeadIndexError`.

The layout, from ``HierarchicalNSW::saveIndex`` (hnswlib/hnswalg.h), in the
machine's byte order (little-endian on every platform hnswlib's wheels target):

* a header: ``offsetLevel0_, max_elements_, cur_element_count,
  size_data_per_element_, label_offset_, offsetData_`` (size_t each),
  ``maxlevel_`` (int), ``enterpoint_node_`` (unsigned int), ``maxM_, maxM0_,
  M_`` (size_t), ``mult_`` (double), ``ef_construction_`` (size_t);
* ``cur_element_count`` level-0 records of ``size_data_per_element_`` bytes: the
  link count (uint16), flags (bit 0 of the third byte: deleted), ``maxM0_``
  neighbour ids (uint32), the vector (float32 each), the label (uint64);
* for each element, ``linkListSize`` (uint32) and that many bytes: one block per
  level above 0, each a count (uint16, padded to 4 bytes) and ``maxM_`` ids.

The Python bindings' ``save_index`` writes this file as it is, nothing before
or after it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from ..exceptions import HeadIndexError

HEADER = struct.Struct("<6QiI3QdQ")
LINK_COUNT = struct.Struct("<I")
EMPTY_ENTER_POINT = 0xFFFFFFFF  # (unsigned) -1: the enter point of an index with no element
MAX_M = 10_000  # hnswlib caps M there, so maxM0 = 2·M fits the 16-bit link count
# Far beyond what VectorIndex accepts (4,000): a larger one was not written by
# this app, whatever else the snapshot holds.
MAX_EF_CONSTRUCTION = 1_000_000
LARGEST_LABEL = 2**63 - 1  # labels are head ids, int64


@dataclass(frozen=True)
class SavedIndex:
    """What a checked saved index holds: its element count, capacity, labels and deleted marks."""

    count: int
    capacity: int
    labels: np.ndarray  # int64, one per element
    deleted: np.ndarray  # bool, one per element


def _refuse(problem: str) -> HeadIndexError:
    return HeadIndexError(f"the saved hnswlib index {problem}")


def validate(graph: bytes | memoryview, dimensions: int) -> SavedIndex:
    """Check hnswlib's saved bytes for an index of *dimensions*; raise HeadIndexError naming the fault."""
    size = len(graph)
    if size < HEADER.size:
        raise _refuse(f"is {size} bytes, shorter than its {HEADER.size}-byte header")
    (
        offset_level0,
        capacity,
        count,
        record,
        label_offset,
        data_offset,
        max_level,
        enter_point,
        max_m,
        max_m0,
        m,
        mult,
        ef_construction,
    ) = HEADER.unpack_from(graph)
    _check_parameters(m, max_m, max_m0, mult, ef_construction)
    links0 = max_m0 * 4 + 4
    expected = {
        "offsetLevel0": (offset_level0, 0),
        "offsetData": (data_offset, links0),
        "label_offset": (label_offset, links0 + 4 * dimensions),
        "size_data_per_element": (record, links0 + 4 * dimensions + 8),
    }
    for name, (got, wanted) in expected.items():
        if got != wanted:
            raise _refuse(f"has {name} {got}, expected {wanted} for {dimensions} dimensions and M={m}")
    if count > capacity:
        raise _refuse(f"holds {count} elements, more than its capacity of {capacity}")
    # Each element takes its record and a 4-byte link-list size at least:
    # checked before anything is sized by the count.
    if count * (record + LINK_COUNT.size) > size - HEADER.size:
        raise _refuse(f"claims {count} elements but is only {size} bytes long")
    if count == 0:
        if max_level != -1 or enter_point != EMPTY_ENTER_POINT:
            raise _refuse(f"has no element but a top level {max_level} and enter point {enter_point}")
        if size != HEADER.size:
            raise _refuse(f"has no element but {size - HEADER.size} bytes after its header")
        return SavedIndex(0, capacity, np.empty(0, np.int64), np.empty(0, bool))

    starts, lengths = _link_lists(graph, count, record)
    upper = max_m * 4 + 4
    uneven = np.flatnonzero(lengths % upper)
    if len(uneven):
        element = int(uneven[0])
        raise _refuse(f"has {int(lengths[element])} bytes of upper-level links for element {element}, not a multiple of {upper}")
    levels = lengths // upper
    if enter_point >= count:
        raise _refuse(f"has enter point {enter_point}, but only {count} elements")
    if max_level < 0 or int(levels.max()) > max_level or int(levels[enter_point]) != max_level:
        raise _refuse(
            f"has top level {max_level}, but its elements reach level {int(levels.max())} "
            f"and its enter point {enter_point} level {int(levels[enter_point])}"
        )

    words = np.frombuffer(graph, dtype="<u4")  # every part is a multiple of 4 bytes long
    rows0 = np.ndarray((count, max_m0 + 1), "<u4", buffer=graph, offset=HEADER.size, strides=(record, 4))
    _check_links(rows0, max_m0, count, np.zeros(count, np.int64), levels, "level 0")
    if levels.any():
        blocks, block_levels = _upper_blocks(words, starts, levels, upper)
        _check_links(blocks, max_m, count, block_levels, levels, "an upper level")

    vectors = np.ndarray((count, dimensions), "<f4", buffer=graph, offset=HEADER.size + data_offset, strides=(record, 4))
    if not np.isfinite(vectors).all():
        element = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise _refuse(f"has a vector with NaN or infinity (element {element})")
    labels = np.ndarray((count,), "<u8", buffer=graph, offset=HEADER.size + label_offset, strides=(record,))
    if int(labels.max()) > LARGEST_LABEL:
        raise _refuse(f"has a label beyond int64 ({int(labels.max())})")
    if len(np.unique(labels)) != count:
        raise _refuse("has the same label on more than one element")
    deleted = (rows0[:, 0] >> 16) & 1 == 1
    return SavedIndex(count, capacity, labels.astype(np.int64), deleted)


def _check_parameters(m: int, max_m: int, max_m0: int, mult: float, ef_construction: int) -> None:
    """M and what hnswlib derives from it, as its constructor sets them."""
    if not 2 <= m <= MAX_M:
        raise _refuse(f"has M={m}, expected 2 to {MAX_M}")
    if max_m != m or max_m0 != 2 * m:
        raise _refuse(f"has maxM={max_m} and maxM0={max_m0}, expected {m} and {2 * m} for M={m}")
    if not math.isfinite(mult) or not math.isclose(mult, 1 / math.log(m), rel_tol=1e-9):
        raise _refuse(f"has a level multiplier {mult}, expected 1/ln({m})")
    if not m <= ef_construction <= MAX_EF_CONSTRUCTION:
        raise _refuse(f"has ef_construction={ef_construction}, expected {m} to {MAX_EF_CONSTRUCTION}")


def _link_lists(graph: bytes | memoryview, count: int, record: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each element's upper-level links start, and their length; the file ends right after the last.

    The sizes are read one after the other, as hnswlib reads them: where one
    list starts depends on every list before it.
    """
    size = len(graph)
    position = HEADER.size + count * record
    starts, lengths = [], []
    read = LINK_COUNT.unpack_from
    for element in range(count):
        if position + 4 > size:
            raise _refuse(f"ends in the link lists, at element {element} of {count}")
        (length,) = read(graph, position)
        position += 4
        starts.append(position)
        lengths.append(length)
        position += length
    if position != size:
        raise _refuse(f"is {size} bytes long, but its {count} elements take {position}")
    return np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64)


def _upper_blocks(words: np.ndarray, starts: np.ndarray, levels: np.ndarray, upper: int) -> tuple[np.ndarray, np.ndarray]:
    """Every upper-level block as a row of words (count, then ids), and the level each belongs to."""
    owners = np.repeat(np.arange(len(levels)), levels)
    first_block = np.cumsum(levels) - levels
    block_levels = np.arange(len(owners)) - first_block[owners] + 1
    offsets = (starts[owners] + (block_levels - 1) * upper) // 4
    return words[offsets[:, None] + np.arange(upper // 4)], block_levels


def _check_links(rows: np.ndarray, most: int, count: int, row_levels: np.ndarray, levels: np.ndarray, where: str) -> None:
    """Rows of (count word, neighbour ids): counts within *most*, ids of elements that reach the row's level."""
    counts = rows[:, 0] & 0xFFFF
    if int(counts.max()) > most:
        row = int(np.argmax(counts))
        raise _refuse(f"has {int(counts[row])} links at {where} (row {row}), more than {most}")
    used = np.arange(rows.shape[1] - 1) < counts[:, None]
    neighbours = rows[:, 1:][used].astype(np.int64)
    if len(neighbours) and int(neighbours.max()) >= count:
        raise _refuse(f"links to element {int(neighbours.max())} at {where}, but has only {count} elements")
    needed = np.repeat(row_levels, counts.astype(np.int64))
    short = levels[neighbours] < needed
    if short.any():
        first = int(np.argmax(short))
        raise _refuse(
            f"links to element {int(neighbours[first])} (top level {int(levels[neighbours[first]])}) at level {int(needed[first])}"
        )
