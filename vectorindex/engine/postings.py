"""Posting-list payloads: packed ``(vector_id, version, vector)`` entries.

An entry is ``int64 vector_id, uint32 version, vector``, little-endian and
unpadded. How the vector is stored is the index's *payload format*, fixed by
its build (the state row records it, with int8's or int4's center):

* ``float32`` — ``12 + 4·d`` bytes; the vectors as given.
* ``float16`` — ``12 + 2·d`` bytes; about three significant digits, values
  beyond ±65,504 clipped to it.
* ``int8`` — ``24 + d`` bytes; each vector less the build's mean vector (the
  *center*), mapped linearly onto 256 levels between its own smallest and
  largest value, with that offset and step and the decoded vector's float32
  norm beside the codes. Every vector has a range of its own, so none is
  ever clipped, whatever is written after the build. Estimated distances
  then need one int8→float32 conversion and one matrix-vector product, with
  no decoded copy of the vectors.
* ``int4`` — ``24 + ⌈d/2⌉`` bytes; the same on 16 levels, the offset standing
  for the middle of the range, two codes a byte (byte *j* holds dimension *j*
  in its low half and dimension *j + ⌈d/2⌉* in its high half, so that each
  half is one product with one half of the query). Half of int8's bytes; on
  384-dimensional text embeddings its estimates reorder almost nothing that
  the re-rank of ``k + 16`` does not put back.

Reading a posting list costs its bytes, so the smaller formats make a query
read less; the search re-ranks its best candidates by their exact vectors from
the model's rows, so a lossy format costs recall only where its error reorders
a candidate out of the re-ranked set. A posting row holds one or more entries;
a posting list is every row of one head, and many rows decode in one
``frombuffer`` call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.lib.recfunctions  # noqa: F401  (np.lib.recfunctions)

from ..exceptions import IndexNeedsRebuild
from . import distances

# Packed rows stay far below MariaDB's default max_allowed_packet (16 MiB).
ROW_BYTES = 1 << 20

FORMATS = ("float32", "float16", "int8", "int4")
FLOAT16_MAX = float(np.finfo(np.float16).max)
_STORED = {"float32": "<f4", "float16": "<f2", "int8": "i1", "int4": "u1"}
# The formats that store codes on a per-vector range around the center: their
# levels, and the code that stands for the offset. int4's offset is the middle
# of the range, so that no code times the step is beyond float32's range.
_LEVELS = {"int8": 256, "int4": 16}
_ZERO = {"int8": 0.0, "int4": 7.5}
# Payload.error_bound: standard deviations of an estimate's rounding error
# taken as its bound (five: beyond them once in 1.7 million entries, were the
# error normal; the sum of a few independent roundings is tighter than that),
# and a margin for the float32 arithmetic of an estimate, the decoding's and
# the stored offset's and step's rounding.
ERROR_DEVIATIONS = 5.0
SLACK = 1.001
# int8 stores level l (0 to 255) as the code l - 128 (-128 to 127).
_INT8_SHIFT = 128
# Odd 64-bit constants for Payload.fingerprints: enough for 16,383 float32
# dimensions (8 bytes a word).
_MULTIPLIERS = np.random.default_rng(0x5EC7).integers(1, 2**63, size=8_200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class Payload:
    """One index's entry layout: encodes vectors into entries and back."""

    def __init__(self, dimensions: int, format: str = "float32", center: Any = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown payload format {format!r}; the formats are {', '.join(FORMATS)}")
        self.dimensions = dimensions
        self.format = format
        self.levels = _LEVELS.get(format)
        self.zero = _ZERO.get(format, 0.0)
        fields = [("id", "<i8"), ("version", "<u4")]
        stored = dimensions
        if self.levels:
            if center is None:
                raise ValueError(f"the {format} payload format needs the center its build chose")
            self.center = np.asarray(center, dtype=np.float32).reshape(dimensions)
            # Codes c stand for center + offset + step·(c - zero): int8's c from
            # -128 to 127 with zero 0, int4's from 0 to 15 with zero 7.5.
            fields += [("offset", "<f4"), ("step", "<f4"), ("norm", "<f4")]
            if format == "int4":
                stored = self.half = (dimensions + 1) // 2
        self.dtype = np.dtype([*fields, ("vector", _STORED[format], (stored,))])

    @property
    def lossy(self) -> bool:
        return self.format != "float32"

    @classmethod
    def fit(cls, format: str, vectors: np.ndarray) -> Payload:
        """The payload of *format* for these vectors (int8 and int4 center them on their mean)."""
        dimensions = vectors.shape[1]
        if format not in _LEVELS:
            return cls(dimensions, format)
        center = vectors.mean(axis=0, dtype=np.float64) if len(vectors) else np.zeros(dimensions)
        return cls(dimensions, format, center)

    @classmethod
    def from_state(cls, dimensions: int, stored: dict | None) -> Payload:
        """The payload a build recorded in the state row ({} before any: float32)."""
        stored = stored or {}
        format = stored.get("format", "float32")
        if format == "int8" and "center" not in stored:
            raise IndexNeedsRebuild(
                "this index's int8 entries use the layout of an earlier version (one range per "
                "dimension); run `manage.py vectorindex build` to rewrite them"
            )
        return cls(dimensions, format, stored.get("center"))

    def to_state(self) -> dict:
        stored: dict[str, Any] = {"format": self.format}
        if self.levels:
            stored["center"] = self.center.tolist()
        return stored

    # Vectors <-> stored values --------------------------------------------------

    def _quantize(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(stored codes, offsets, steps): each centered vector on its levels over its own range."""
        # In float64: the range of a vector near float32's limits still fits.
        centered = np.asarray(vectors, dtype=np.float64) - self.center
        top = self.levels - 1
        if centered.shape[1]:
            low, high = centered.min(axis=1), centered.max(axis=1)
            step = np.where(high > low, (high - low) / top, 1.0)
            # Levels are within 0..top by construction; the clip only guards rounding.
            levels = np.clip(np.rint((centered - low[:, None]) / step[:, None]), 0, top).astype(np.uint8)
        else:
            low, step, levels = np.zeros(len(centered)), np.ones(len(centered)), centered.astype(np.uint8)
        if self.format == "int4":
            packed = np.zeros((len(levels), 2 * self.half), np.uint8)
            packed[:, : self.dimensions] = levels
            codes = packed[:, : self.half] | (packed[:, self.half :] << 4)
            return codes, (low + self.zero * step).astype(np.float32), step.astype(np.float32)
        codes = (levels.astype(np.int16) - _INT8_SHIFT).astype(np.int8)
        return codes, (low + _INT8_SHIFT * step).astype(np.float32), step.astype(np.float32)

    def _halves(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int4: (low codes, high codes), each (n, ⌈d/2⌉) uint8."""
        packed = np.ascontiguousarray(entries["vector"])
        return packed & 15, packed >> 4

    def vectors(self, entries: np.ndarray) -> np.ndarray:
        """The entries' vectors as contiguous float32 (decoded where stored smaller)."""
        stored = entries["vector"]
        if not self.levels:
            return np.ascontiguousarray(stored, dtype=np.float32)
        if self.format == "int4":
            decoded = np.concatenate(self._halves(entries), axis=1)[:, : self.dimensions].astype(np.float32)
        else:
            decoded = stored.astype(np.float32)
        if self.zero:
            decoded -= self.zero
        decoded *= entries["step"][:, None]
        decoded += entries["offset"][:, None]
        decoded += self.center
        return decoded

    def estimate(self, entries: np.ndarray, metric: str, query: np.ndarray) -> np.ndarray:
        """Estimated distances from *query* to the entries' vectors (float32 arithmetic)."""
        if not self.levels or metric == "l1":
            return distances.estimates(metric, self.vectors(entries), query)
        query = np.asarray(query, dtype=np.float32)
        # x·q = center·q + offset·Σq + step·(codes·q - zero·Σq): one product
        # over the codes (int4: one for each half of them).
        if self.format == "int4":
            lower, upper = self._halves(entries)
            upper_query = np.zeros(self.half, np.float32)
            upper_query[: self.dimensions - self.half] = query[self.half :]
            dots = lower.astype(np.float32) @ query[: self.half] + upper.astype(np.float32) @ upper_query
        else:
            dots = _products(entries["vector"], query)
        total = float(query.sum())
        if self.zero:
            dots -= self.zero * total
        dots *= entries["step"]
        dots += entries["offset"] * total + float(self.center @ query)
        norms = entries["norm"]
        if metric == "ip":
            return -dots
        query_norm = float(np.sqrt(query @ query))
        with np.errstate(divide="ignore", invalid="ignore"):
            if metric == "cosine":
                return 1.0 - np.clip(dots / (norms * query_norm), -1.0, 1.0)
            return np.sqrt(np.maximum(norms * norms - 2 * dots + query_norm * query_norm, 0.0))

    def error_bound(self, entries: np.ndarray, metric: str, query: np.ndarray) -> np.ndarray | None:
        """How far each entry's :meth:`estimate` may be from the distance to the vector it encodes; None: exact enough.

        int8 and int4 round each dimension of a vector x to the nearest of
        their levels: the decoding x̂ = x + δ, each δᵢ within half a step s.
        At worst ‖δ‖ = s·√d/2, and then l2 moves by at most that, the inner
        product by that times ‖q‖, the cosine distance by twice that over ‖x̂‖
        (the direction of x̂ turns by at most that much) and l1 by d·s/2. But
        roundings are as good as independent and uniform, and what moves a
        distance is δ's component along one direction: standard deviation
        s/√12 (times ‖q‖ for the inner product, over ‖x̂‖ for cosine, where
        twice that is taken, as for the worst case; l1 adds d of them:
        s·√(d/12)). The bound is the smaller of the worst case and
        ``ERROR_DEVIATIONS`` of those (at d = 384 the worst case is 14 times
        wider: a query re-ranked a third more rows for it). float32 and float16 entries (11 bits of each value) have
        no bound here: their estimates rank candidates as the exact
        distances do but for near-ties.
        """
        if not self.levels:
            return None
        step = entries["step"].astype(np.float32)
        if metric == "l1":
            return step * np.float32(min(self.dimensions / 2, ERROR_DEVIATIONS * np.sqrt(self.dimensions / 12)) * SLACK)
        radius = step * np.float32(min(np.sqrt(self.dimensions) / 2, ERROR_DEVIATIONS / np.sqrt(12)) * SLACK)
        if metric == "l2":
            return radius
        query = np.asarray(query, dtype=np.float32)
        if metric == "ip":
            return radius * np.float32(np.sqrt(query @ query))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(entries["norm"] > 0, 2 * radius / entries["norm"], np.inf).astype(np.float32)

    def fingerprints(self, entries: np.ndarray) -> np.ndarray:
        """A 64-bit hash per entry of how it stores its vector: equal for two encodings of one vector.

        The id, the version and int8/int4's norm are left out (the norm is a
        float32 sum whose last bit may depend on how numpy vectorises a
        batch); the codes, offset and step are exact functions of the vector.
        """
        names = [name for name in ("offset", "step", "vector") if name in self.dtype.names]
        packed = np.lib.recfunctions.repack_fields(entries[names])
        stored = packed.view(np.uint8).reshape(len(entries), packed.dtype.itemsize)  # (0, size) for none
        padded = np.zeros((len(entries), -(-stored.shape[1] // 8) * 8), np.uint8)
        padded[:, : stored.shape[1]] = stored
        words = padded.view("<u8")
        with np.errstate(over="ignore"):
            mixed = (words * _MULTIPLIERS[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
            return mixed ^ (mixed >> np.uint64(29))

    # Entries <-> bytes ---------------------------------------------------------

    def entries(self, ids: np.ndarray, versions: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        entries = np.empty(len(ids), dtype=self.dtype)
        entries["id"] = ids
        entries["version"] = versions
        if self.levels:
            entries["vector"], entries["offset"], entries["step"] = self._quantize(vectors)
            # The decoded vector's norm, not the given one's: estimates are then
            # the decoded vector's distances, with no cancellation between an
            # exact norm and a rounded inner product near distance 0.
            decoded = self.vectors(entries)
            entries["norm"] = np.sqrt(np.einsum("ij,ij->i", decoded, decoded))
        elif self.format == "float16":
            # Beyond float16's range a value would become infinite and its
            # distances NaN: the largest float16 stands in for it.
            entries["vector"] = np.clip(vectors, -FLOAT16_MAX, FLOAT16_MAX)
        else:
            entries["vector"] = vectors
        return entries

    def pack(self, ids: np.ndarray, versions: np.ndarray, vectors: np.ndarray) -> Iterator[tuple[int, bytes]]:
        """(count, payload) rows of at most ROW_BYTES each, for one posting list."""
        return self.pack_entries(self.entries(ids, versions, vectors))

    def pack_entries(self, entries: np.ndarray) -> Iterator[tuple[int, bytes]]:
        """Rows of entries already in this layout (moved between lists as they are)."""
        per_row = max(1, ROW_BYTES // self.dtype.itemsize)
        for start in range(0, len(entries), per_row):
            chunk = entries[start : start + per_row]
            yield len(chunk), chunk.tobytes()

    def join(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """Blocks of entries in this layout as one array, in order.

        As their bytes: numpy's own concatenation of structured arrays
        compares the fields of every block in Python (a fifth of a query's
        time over a hundred cached rows).
        """
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return np.empty(0, self.dtype)
        return np.concatenate([np.ascontiguousarray(block).view(np.uint8) for block in blocks]).view(self.dtype)

    def decode(self, payloads: Sequence[bytes]) -> np.ndarray:
        """Every entry of *payloads* as one structured array (id, version, vector)."""
        data = b"".join(payloads)
        if len(data) % self.dtype.itemsize:
            raise ValueError(
                f"posting payload of {len(data)} bytes is not a whole number of "
                f"{self.dtype.itemsize}-byte entries"
            )
        return np.frombuffer(data, dtype=self.dtype)


def _products(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """codes @ query in float32, for int8 codes (a strided field of the entries).

    A few hundred rows at a time are converted into a float32 block that
    stays in the processor's cache, and multiplied there: converting them all
    at once wrote and read back a block four times the codes' size (5,000
    entries of 384 dimensions: 0.93 ms against 0.46).
    """
    out = np.empty(len(codes), np.float32)
    block = np.empty((min(len(codes), PRODUCT_ROWS), codes.shape[1]), np.float32)
    for start in range(0, len(codes), PRODUCT_ROWS):
        part = codes[start : start + PRODUCT_ROWS]
        np.copyto(block[: len(part)], part, casting="unsafe")
        np.matmul(block[: len(part)], query, out=out[start : start + len(part)])
    return out


# Rows converted at once by _products: 256 × 384 float32 is 384 KiB, within a
# core's L2 cache (256 and 512 measured fastest, 1,024 slower, at d = 384).
PRODUCT_ROWS = 256


# Entries by head -------------------------------------------------------------


def by_head(members: np.ndarray, owners: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(head id, its members) for each head among *owners*, in head id order.

    *members* and *owners* are a routing's pairs (:func:`~.routing.assign`:
    row, head id), a member once for each head that takes it.
    """
    order = np.argsort(owners, kind="stable")
    members, owners = members[order], owners[order]
    for run in np.split(np.arange(len(owners)), np.flatnonzero(np.diff(owners)) + 1):
        if len(run):
            yield int(owners[run[0]]), members[run]


def rows_by_head(payload: Payload, entries: np.ndarray, members: np.ndarray, owners: np.ndarray) -> list[tuple[int, int, bytes]]:
    """Posting rows (head id, entry count, bytes) that give each head of *owners* the entries of its *members*."""
    return [
        (head_id, count, data)
        for head_id, rows in by_head(members, owners)
        for count, data in payload.pack_entries(entries[rows])
    ]
