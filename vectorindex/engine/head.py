"""The in-memory head index: an HNSW graph (hnswlib) over the heads' vectors.

hnswlib's edges, which this class hides:

* ``'l2'`` returns *squared* distances and ``'ip'`` returns ``1 - dot``; the head
  index only ranks heads, so these are used as they are (cosine indexes store
  unit vectors and search with ``'ip'``).
* ``add_items`` and ``resize_index`` are not safe while ``knn_query`` runs in
  another thread, so one lock guards every call: a threaded web server may share
  one HeadIndex between its threads.
* Every failure is a bare ``RuntimeError``; these become :class:`HeadIndexError`.
* Its native format is the only serialisation used (never pickle): a snapshot
  read back from the database is parsed by hnswlib, not executed. hnswlib
  trusts what it parses, so every byte is checked first (:mod:`.hnswfile`).
"""

from __future__ import annotations

import os
import tempfile
import threading

import hnswlib
import numpy as np

from ..exceptions import HeadIndexError
from . import hnswfile

SPACES = {"l2": "l2", "cosine": "ip", "ip": "ip"}
MAGIC = b"VIHEAD2\n"


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as the head index stores them: unit length for cosine."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric != "cosine":
        return vectors
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class HeadIndex:
    """Heads by id, searchable by nearest neighbour; thread-safe."""

    def __init__(self, dimensions: int, metric: str, *, m: int = 16, ef_construction: int = 200, capacity: int = 1024) -> None:
        self.dimensions = dimensions
        self.metric = metric
        self.m = m
        self.ef_construction = ef_construction
        self._lock = threading.Lock()
        self._index = hnswlib.Index(space=SPACES[metric], dim=dimensions)
        self._index.init_index(max_elements=max(capacity, 16), ef_construction=ef_construction, M=m)
        self.alive: set[int] = set()
        self._copies = _Copies(dimensions)
        # What this copy has applied: (generation, LSN) of the index state.
        self.generation = 0
        self.lsn = 0

    def __len__(self) -> int:
        return len(self.alive)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        data = prepare(vectors.reshape(len(ids), self.dimensions), self.metric)
        with self._lock:
            try:
                needed = self._index.element_count + len(ids)
                if needed > self._index.max_elements:
                    # Grown by an eighth, not doubled: the capacity is memory
                    # held (vectors and links), and splits add heads one by one.
                    capacity = self._index.max_elements
                    self._index.resize_index(max(needed, capacity + max(1024, capacity // 8)))
                self._index.add_items(data, ids)
                for head_id in ids.tolist():
                    self._copies.drop(head_id)  # a label added again has a new vector
            except RuntimeError as error:
                raise HeadIndexError(f"adding {len(ids)} heads failed: {error}") from error
            self.alive.update(int(i) for i in ids)

    def remove(self, ids: np.ndarray) -> None:
        with self._lock:
            for head_id in (int(i) for i in ids):
                if head_id in self.alive:
                    self._index.mark_deleted(head_id)
                    self.alive.discard(head_id)
                    self._copies.drop(head_id)

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The *k* nearest alive heads of each query: (ids, hnswlib distances)."""
        queries = prepare(np.atleast_2d(queries), self.metric)
        with self._lock:
            k = min(k, len(self.alive))
            if k == 0:
                empty = np.empty((len(queries), 0))
                return empty.astype(np.int64), empty
            self._index.set_ef(max(ef or 0, k, 16))
            try:
                labels, distances = self._index.knn_query(queries, k=k)
            except RuntimeError as error:
                raise HeadIndexError(f"searching {k} heads failed: {error}") from error
        return labels.astype(np.int64), distances

    def search_with_vectors(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """search(), plus the distinct heads found and their vectors, read under one lock.

        Returns (labels, distances, unique labels, their vectors): another thread
        may retire a head the moment after a search, and hnswlib cannot read a
        retired head's vector. The vectors are float16 copies (see _Copies),
        good for ranking heads against each other, not for exact distances.
        """
        queries = prepare(np.atleast_2d(queries), self.metric)
        with self._lock:
            k = min(k, len(self.alive))
            if k == 0:
                empty = np.empty((len(queries), 0))
                return empty.astype(np.int64), empty, np.empty(0, np.int64), np.empty((0, self.dimensions), np.float32)
            self._index.set_ef(max(ef or 0, k, 16))
            try:
                labels, distances = self._index.knn_query(queries, k=k)
                unique = np.unique(labels).astype(np.int64)
                vectors = self._copies.get(unique, self._index.get_items)
            except RuntimeError as error:
                raise HeadIndexError(f"searching {k} heads failed: {error}") from error
        return labels.astype(np.int64), distances, unique, vectors

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (prepared) vectors of these alive heads."""
        with self._lock:
            try:
                return np.asarray(self._index.get_items(np.asarray(ids, dtype=np.int64)), dtype=np.float32)
            except RuntimeError as error:
                raise HeadIndexError(f"reading head vectors failed (a head retired?): {error}") from error

    def nbytes(self) -> int:
        """Memory the graph and its vectors take, as hnswlib lays them out, and routing's copies."""
        with self._lock:
            capacity = self._index.max_elements
        # Level-0 links (2·M ids of 4 bytes, plus a count), the vector and the
        # label per element; upper levels add about 1/M of that again.
        per_element = (2 * self.m * 4 + 4) + self.dimensions * 4 + 8
        graph = int(capacity * per_element * (1 + 1 / self.m))
        # The float16 copies routing makes, counted as if every alive head had
        # one: what a process that writes for long holds.
        return graph + max(self._copies.nbytes(), len(self.alive) * (self.dimensions * 2 + _Copies.ENTRY_BYTES))

    def to_bytes(self) -> bytes:
        """``MAGIC, dimensions, n, n alive ids (int64), hnswlib's saved index``.

        hnswlib keeps deleted elements (marked) and cannot list which they are,
        so the alive ids travel alongside.
        """
        with self._lock:
            handle, path = tempfile.mkstemp(suffix=".hnsw")
            os.close(handle)
            try:
                self._index.save_index(path)
                with open(path, "rb") as file:
                    graph = file.read()
            finally:
                os.unlink(path)
            alive = np.array(sorted(self.alive), dtype="<i8")
        header = np.array([self.dimensions, len(alive)], dtype="<u8").tobytes()
        return MAGIC + header + alive.tobytes() + graph

    @classmethod
    def from_bytes(cls, data: bytes, dimensions: int, metric: str, *, m: int = 16, ef_construction: int = 200) -> HeadIndex:
        """A head index from :meth:`to_bytes`'s bytes, checked first (:func:`unpack`): no bytes crash hnswlib."""
        alive, graph, saved = unpack(data, dimensions)
        head = cls(dimensions, metric, m=m, ef_construction=ef_construction, capacity=16)
        handle, path = tempfile.mkstemp(suffix=".hnsw")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(graph)
            index = hnswlib.Index(space=SPACES[metric], dim=dimensions)
            # hnswlib allocates for the saved capacity: at most the growth add() allows.
            capacity = max(16, min(saved.capacity, saved.count + max(1024, saved.count // 8)))
            try:
                index.load_index(path, max_elements=capacity)
            except RuntimeError as error:
                raise HeadIndexError(f"the snapshot is not a readable head index: {error}") from error
        finally:
            os.unlink(path)
        head._index = index
        head.alive = {int(i) for i in alive}
        return head

    def labels(self) -> set[int]:
        """Ids of every element, alive or marked deleted."""
        with self._lock:
            return {int(i) for i in self._index.get_ids_list()}


def unpack(data: bytes, dimensions: int) -> tuple[np.ndarray, memoryview, hnswfile.SavedIndex]:
    """(alive ids, hnswlib's bytes, what they hold) of a snapshot; HeadIndexError when anything does not verify.

    Everything is checked before hnswlib reads the bytes: our header, hnswlib's
    layout (:func:`hnswfile.validate`), and that every alive id is an element
    the graph holds and has not marked deleted.
    """
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 16:
        raise HeadIndexError("the snapshot does not start like a head index")
    offset = len(MAGIC)
    stored_dimensions, count = (int(v) for v in np.frombuffer(data, dtype="<u8", count=2, offset=offset))
    offset += 16
    if stored_dimensions != dimensions:
        raise HeadIndexError(f"the snapshot has {stored_dimensions} dimensions, expected {dimensions}")
    if len(data) < offset + 8 * count:
        raise HeadIndexError("the snapshot is truncated")
    alive = np.frombuffer(data, dtype="<i8", count=count, offset=offset)
    graph = memoryview(data)[offset + 8 * count :]
    saved = hnswfile.validate(graph, dimensions)
    if count and not (np.diff(alive) > 0).all():
        raise HeadIndexError("the snapshot's alive heads are not in order or repeat")
    if not np.isin(alive, saved.labels[~saved.deleted]).all():
        raise HeadIndexError("the snapshot lists alive heads that its graph does not hold, or holds as deleted")
    return alive, graph, saved


class _Copies:
    """float16 copies of heads' vectors, made the first time routing asks for each.

    Routing (SPANN's RNG rule) compares a vector's candidate heads with each
    other, so it needs their vectors; hnswlib's ``get_items`` takes about
    40 µs a head (it builds Python lists of floats), which made a
    ``bulk_create`` of 1,000 rows spend a fifth of a second there. Half the
    bytes of hnswlib's own copy, rounded to about three significant digits:
    enough to rank heads against each other. Guarded by the HeadIndex's lock.
    """

    ENTRY_BYTES = 100  # a dict entry mapping a head to its row, about

    def __init__(self, dimensions: int) -> None:
        self.rows: dict[int, int] = {}
        self.free: list[int] = []
        self.data = np.empty((0, dimensions), dtype=np.float16)

    def get(self, labels: np.ndarray, fetch) -> np.ndarray:
        missing = [int(label) for label in labels if int(label) not in self.rows]
        if missing:
            self._put(missing, np.asarray(fetch(missing), dtype=np.float32))
        return self.data[[self.rows[int(label)] for label in labels]].astype(np.float32)

    def _put(self, labels: list[int], vectors: np.ndarray) -> None:
        needed = len(labels) - len(self.free)
        if needed > 0:
            grown = len(self.data) + max(needed, len(self.data) // 8, 256)
            data = np.empty((grown, self.data.shape[1]), dtype=np.float16)
            data[: len(self.data)] = self.data
            self.free.extend(range(len(self.data), grown))
            self.data = data
        for label, vector in zip(labels, vectors):
            row = self.free.pop()
            self.rows[label] = row
            self.data[row] = vector

    def drop(self, label: int) -> None:
        row = self.rows.pop(label, None)
        if row is not None:
            self.free.append(row)

    def nbytes(self) -> int:
        return self.data.nbytes + self.ENTRY_BYTES * len(self.rows)
