"""Head-index snapshots damaged on purpose, the way a bug or a hand in the database could.

The layout is read here independently of the code under test: the snapshot
header (``MAGIC``, dimensions, n, n alive ids), then hnswlib 0.8's saved index
(hnswalg.h ``saveIndex``): a 96-byte header, level-0 records, then per element
a uint32 size and its upper-level link blocks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HEADER = struct.Struct("<6QiI3QdQ")
FIELDS = (
    "offset_level0",
    "max_elements",
    "count",
    "record",
    "label_offset",
    "data_offset",
    "max_level",
    "enter_point",
    "max_m",
    "max_m0",
    "m",
    "mult",
    "ef_construction",
)
FAR = 2**31 - 1  # an element id far past any buffer: hnswlib reading it faults


@dataclass
class Layout:
    """Where things are in one snapshot's bytes."""

    graph: int  # offset of hnswlib's bytes
    alive: int  # offset of the alive ids
    header: dict[str, int | float]
    upper: list[int]  # per element: offset of its upper-level blocks
    levels: list[int]

    @classmethod
    def of(cls, data: bytes) -> Layout:
        count = struct.unpack_from("<Q", data, 16)[0]
        graph = 24 + 8 * count
        header = dict(zip(FIELDS, HEADER.unpack_from(data, graph)))
        position = graph + HEADER.size + header["count"] * header["record"]
        upper, levels = [], []
        block = header["max_m"] * 4 + 4
        for _element in range(header["count"]):
            (size,) = struct.unpack_from("<I", data, position)
            upper.append(position + 4)
            levels.append(size // block)
            position += 4 + size
        return cls(graph, 24, header, upper, levels)

    def record(self, element: int) -> int:
        return self.graph + HEADER.size + element * self.header["record"]

    def block(self, element: int, level: int) -> int:
        """Offset of *element*'s link block at *level* (0: in its record)."""
        if level == 0:
            return self.record(element)
        return self.upper[element] + (level - 1) * (self.header["max_m"] * 4 + 4)


def _header(data: bytes, **changes: int | float) -> bytes:
    layout = Layout.of(data)
    values = {**layout.header, **changes}
    out = bytearray(data)
    HEADER.pack_into(out, layout.graph, *(values[name] for name in FIELDS))
    return bytes(out)


def _put(data: bytes, offset: int, fmt: str, *values: int | float) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def neighbour_out_of_range(data: bytes) -> bytes:
    """The enter point's first link at the top level (the first a search follows) points far away."""
    layout = Layout.of(data)
    at = layout.block(layout.header["enter_point"], layout.header["max_level"])
    return _put(data, at, "<HxxI", 1, FAR)


def level0_neighbours_out_of_range(data: bytes) -> bytes:
    """Every element's first level-0 link points far away."""
    layout = Layout.of(data)
    for element in range(layout.header["count"]):
        count = struct.unpack_from("<H", data, layout.record(element))[0]
        if count:
            data = _put(data, layout.record(element) + 4, "<I", FAR)
    return data


def too_many_level0_links(data: bytes) -> bytes:
    """A level-0 link count past maxM0: the ids read run into the vector bytes."""
    layout = Layout.of(data)
    return _put(data, layout.record(0), "<H", layout.header["max_m0"] + 40)


def too_many_upper_links(data: bytes) -> bytes:
    layout = Layout.of(data)
    at = layout.block(layout.header["enter_point"], layout.header["max_level"])
    return _put(data, at, "<H", layout.header["max_m"] + 1)


def huge_element_count(data: bytes) -> bytes:
    return _header(data, count=2**40, max_elements=2**40)


def top_level_nobody_reaches(data: bytes) -> bytes:
    """maxlevel one above every element: a search reads the enter point's links at a level it lacks."""
    return _header(data, max_level=Layout.of(data).header["max_level"] + 1)


def enter_point_out_of_range(data: bytes) -> bytes:
    return _header(data, enter_point=FAR)


def truncated(data: bytes) -> bytes:
    return data[:-100]


def sizes_that_do_not_add_up(data: bytes) -> bytes:
    """size_data_per_element 4 bytes too long: records overlap what follows them."""
    layout = Layout.of(data)
    return _header(data, record=layout.header["record"] + 4)


def upper_neighbour_too_low(data: bytes) -> bytes:
    """The enter point links, at its top level, to an element that has only level 0."""
    layout = Layout.of(data)
    low = layout.levels.index(0)
    at = layout.block(layout.header["enter_point"], layout.header["max_level"])
    return _put(data, at, "<HxxI", 1, low)


def repeated_label(data: bytes) -> bytes:
    layout = Layout.of(data)
    label = struct.unpack_from("<Q", data, layout.record(0) + layout.header["label_offset"])[0]
    return _put(data, layout.record(1) + layout.header["label_offset"], "<Q", label)


def nan_vector(data: bytes) -> bytes:
    layout = Layout.of(data)
    return _put(data, layout.record(0) + layout.header["data_offset"], "<f", float("nan"))


def absurd_m(data: bytes) -> bytes:
    return _header(data, m=50_000, max_m=50_000, max_m0=100_000)


def alive_id_not_in_graph(data: bytes) -> bytes:
    """The last alive id (the largest) raised past every label."""
    layout = Layout.of(data)
    count = struct.unpack_from("<Q", data, 16)[0]
    last = struct.unpack_from("<q", data, layout.alive + 8 * (count - 1))[0]
    return _put(data, layout.alive + 8 * (count - 1), "<q", last + 10**9)


# What a crafted snapshot can get wrong, each with the words the refusal names it by.
CRAFTED: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "neighbour out of range": (neighbour_out_of_range, "links to element 2147483647 at an upper level"),
    "level-0 neighbours out of range": (level0_neighbours_out_of_range, "links to element 2147483647 at level 0"),
    "link count above maxM0": (too_many_level0_links, "links at level 0 .* more than"),
    "link count above maxM": (too_many_upper_links, "links at an upper level .* more than"),
    "huge element count": (huge_element_count, "claims 1099511627776 elements"),
    "top level nobody reaches": (top_level_nobody_reaches, "has top level"),
    "enter point out of range": (enter_point_out_of_range, "has enter point 2147483647"),
    "truncated": (truncated, "bytes long, but its|ends in the link lists"),
    "sizes that do not add up": (sizes_that_do_not_add_up, "has size_data_per_element"),
    "upper neighbour too low": (upper_neighbour_too_low, r"\(top level 0\) at level [1-9]"),
    "repeated label": (repeated_label, "same label"),
    "NaN vector": (nan_vector, "NaN or infinity"),
    "absurd M": (absurd_m, "has M=50000"),
    "alive id not in the graph": (alive_id_not_in_graph, "alive heads that its graph does not hold"),
}

# The ones the issue names, loaded by a fresh process through a query.
LOADED = [
    "neighbour out of range",
    "level-0 neighbours out of range",
    "link count above maxM0",
    "huge element count",
    "top level nobody reaches",
    "enter point out of range",
    "truncated",
    "sizes that do not add up",
    "upper neighbour too low",
]


def fuzzed(data: bytes, count: int, seed: int) -> list[bytes]:
    """*count* copies of *data*, each with a few random bytes changed, or cut short."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        copy = bytearray(data)
        if rng.random() < 0.15:
            out.append(bytes(copy[: int(rng.integers(0, len(copy)))]))
            continue
        for _flip in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(copy)))
            copy[at] = int(rng.integers(0, 256)) if rng.random() < 0.5 else copy[at] ^ (1 << int(rng.integers(0, 8)))
        out.append(bytes(copy))
    return out
