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
from collections import deque

import hnswlib
import numpy as np

from ..exceptions import HeadIndexError
from . import snapshot

SPACES = {"l2": "l2", "cosine": "ip", "ip": "ip"}
# WAL changes a head index remembers (see HeadIndex.changes_since): a few
# bytes each; a transaction older than that many head changes routes with a
# head index loaded as of its own LSN instead.
HISTORY = 100_000
# hnswlib's recommended graph parameters (its README's), and VectorIndex's defaults.
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
# A new graph's room when its caller does not say (a build and a rebuild say
# how many heads they add): one growth step's worth.
DEFAULT_CAPACITY = 1024
# The fewest elements a graph is allocated for (hnswlib allocates its capacity
# up front): an empty index, or one about to be replaced by a loaded graph.
MIN_CAPACITY = 16
# A full graph grows by an eighth of its capacity, and by at least 1,024
# elements, so that a small graph is not resized at every split.
GROWTH_FRACTION = 8
MIN_GROWTH = DEFAULT_CAPACITY
# The least ef a search uses, whatever its caller asks (hnswlib's own default
# is 10); hnswlib also needs ef >= k. (Since the first index; not measured.)
MIN_EF = 16
# Distances computed at once where hnswlib cannot answer: 4,000,000 float32
# values, a matrix of at most 16 MB.
RANKED_BLOCK = 4_000_000
# How many head ids an error names.
IDS_NAMED = 5


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as the head index stores them: unit length for cosine."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric != "cosine":
        return vectors
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def _growth(size: int) -> int:
    """Elements added to a full graph of *size*: an eighth of it, at least MIN_GROWTH."""
    return max(MIN_GROWTH, size // GROWTH_FRACTION)


class HeadIndex:
    """Heads by id, searchable by nearest neighbour; thread-safe."""

    def __init__(
        self,
        dimensions: int,
        metric: str,
        *,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.dimensions = dimensions
        self.metric = metric
        self.m = m
        self.ef_construction = ef_construction
        self._lock = threading.Lock()
        self._index = hnswlib.Index(space=SPACES[metric], dim=dimensions)
        # A retired head's slot is taken by the next head added: the graph
        # holds about as many elements as heads were ever alive at once,
        # not every head the index ever had.
        self._index.init_index(
            max_elements=max(capacity, MIN_CAPACITY), ef_construction=ef_construction, M=m, allow_replace_deleted=True
        )
        self.alive: set[int] = set()
        # Every label ever added is at most this: a batch of ids above it is
        # new to the graph without asking hnswlib (see add()).
        self._top_label = -1
        self._copies = _Copies(dimensions)
        # What this copy has applied: (generation, LSN) of the index state.
        self.generation = 0
        self.lsn = 0
        # The WAL changes applied after LSN `history_from` (None: none yet),
        # as (LSN, added?, head id): what a view as of an older LSN needs.
        self.history: deque[tuple[int, bool, int]] = deque()
        self.history_from: int | None = None

    def __len__(self) -> int:
        return len(self.alive)

    @property
    def elements(self) -> int:
        """Elements of the graph: the alive heads, and the retired ones whose slot no head has taken yet."""
        with self._lock:
            return self._index.element_count

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add heads whose ids are new to the graph.

        An id the graph holds (alive, or retired and its slot not yet taken)
        is refused: hnswlib's ``replace_deleted`` path would put it in a
        retired head's slot and leave its old element behind under the same
        label. Head ids are never reused, so no caller adds one twice.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        data = prepare(vectors.reshape(len(ids), self.dimensions), self.metric)
        with self._lock:
            self._refuse_present(ids)
            try:
                needed = self._index.element_count + len(ids)
                if needed > self._index.max_elements:
                    # Grown by an eighth, not doubled: the capacity is memory
                    # held (vectors and links), and splits add heads one by one.
                    capacity = self._index.max_elements
                    self._index.resize_index(max(needed, capacity + _growth(capacity)))
                self._index.add_items(data, ids, replace_deleted=True)
            except RuntimeError as error:
                raise HeadIndexError(f"adding {len(ids)} heads failed: {error}") from error
            self.alive.update(int(i) for i in ids)
            self._top_label = max(self._top_label, int(ids.max()))

    def _refuse_present(self, ids: np.ndarray) -> None:
        """Raise if an id is in *ids* twice or already in the graph. Under the lock.

        New heads' ids are above every id so far (the database counts them
        up), which a comparison shows; only other batches cost a pass over
        hnswlib's labels.
        """
        if len(np.unique(ids)) != len(ids):
            values, counts = np.unique(ids, return_counts=True)
            raise HeadIndexError(f"heads {values[counts > 1].tolist()[:IDS_NAMED]} are given twice")
        if int(ids.min()) > self._top_label:
            return
        present = set(ids.tolist()) & {int(i) for i in self._index.get_ids_list()}
        if present:
            raise HeadIndexError(f"heads {sorted(present)[:IDS_NAMED]} are already in the head index; a head id is added once")

    def remove(self, ids: np.ndarray) -> None:
        with self._lock:
            for head_id in (int(i) for i in ids):
                if head_id in self.alive:
                    self._index.mark_deleted(head_id)
                    self.alive.discard(head_id)
                    self._copies.drop(head_id)

    def record(self, lsn: int, added: bool, head_id: int) -> None:
        """Remember that the WAL entry at *lsn* added or removed *head_id* (applied or not)."""
        with self._lock:
            if self.history_from is None:
                self.history_from = lsn - 1
            self.history.append((lsn, added, head_id))
            if len(self.history) > HISTORY:
                self.history_from = self.history.popleft()[0]

    def take_history(self, older: HeadIndex) -> None:
        """Remember the WAL changes *older* remembers: this copy replaces it, at the same LSN.

        A graph rebuilt from the alive heads knows no history of its own; a
        transaction older than the LSN still needs one (see ``changes_since``).
        """
        if older.lsn != self.lsn:
            raise HeadIndexError(f"a head index at LSN {self.lsn} cannot take the history of one at LSN {older.lsn}")
        with older._lock:
            history, history_from = deque(older.history), older.history_from
        with self._lock:
            self.history, self.history_from = history, history_from

    def changes_since(self, lsn: int) -> tuple[set[int], set[int]] | None:
        """(heads alive now that were not at *lsn*, heads alive at *lsn* that are not now).

        None when this copy does not know every change after *lsn* (it was
        loaded from a later snapshot, or has forgotten them).
        """
        with self._lock:
            if lsn >= self.lsn:
                return set(), set()
            if self.history_from is None or lsn < self.history_from:
                return None
            first: dict[int, bool] = {}
            for entry_lsn, added, head_id in reversed(self.history):
                if entry_lsn <= lsn:
                    break
                first[head_id] = added  # the earliest change after lsn wins
            alive = self.alive
            hidden = {h for h, added in first.items() if added and h in alive}
            restored = {h for h, added in first.items() if not added and h not in alive}
        return hidden, restored

    def ids(self) -> np.ndarray:
        """Every alive head's id."""
        with self._lock:
            return np.fromiter(self.alive, dtype=np.int64, count=len(self.alive))

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The *k* nearest alive heads of each query: (ids, hnswlib distances)."""
        queries = prepare(np.atleast_2d(queries), self.metric)
        with self._lock:
            k = min(k, len(self.alive))
            if k == 0:
                empty = np.empty((len(queries), 0))
                return empty.astype(np.int64), empty
            self._index.set_ef(max(ef or 0, k, MIN_EF))
            labels, distances = self._knn(queries, k)
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
            self._index.set_ef(max(ef or 0, k, MIN_EF))
            labels, distances = self._knn(queries, k)
            try:
                unique = np.unique(labels).astype(np.int64)
                vectors = self._copies.get(unique, self._index.get_items)
            except RuntimeError as error:
                raise HeadIndexError(f"searching {k} heads failed: {error}") from error
        return labels.astype(np.int64), distances, unique, vectors

    def _knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """hnswlib's *k* nearest, or every alive head ranked exactly where it cannot answer.

        hnswlib raises when it finds fewer than *k* alive elements: with *k*
        near the number alive, the graph may reach too few of them past the
        deleted ones. Ranking them all is what a query that asks for (almost)
        every head needs anyway. Called under the lock.
        """
        try:
            return self._index.knn_query(queries, k=k)
        except RuntimeError:
            return self._ranked(queries, k)

    def _ranked(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The *k* nearest alive heads by brute force, in hnswlib's distances. Under the lock."""
        ids = np.array(sorted(self.alive), dtype=np.int64)
        try:
            # Alive heads only: hnswlib cannot read a deleted element's vector.
            vectors = np.asarray(self._index.get_items(ids), dtype=np.float32)
        except RuntimeError as error:
            raise HeadIndexError(f"searching {k} heads failed: {error}") from error
        norms = np.einsum("ij,ij->i", vectors, vectors)
        labels, distances = [], []
        rows = max(1, RANKED_BLOCK // len(ids))  # a distance matrix of at most 16 MB at a time
        for start in range(0, len(queries), rows):
            batch = queries[start : start + rows]
            if SPACES[self.metric] == "l2":  # squared, as hnswlib's 'l2'
                block = np.maximum(np.einsum("ij,ij->i", batch, batch)[:, None] + norms - 2 * (batch @ vectors.T), 0)
            else:  # hnswlib's 'ip' is 1 - dot
                block = 1 - batch @ vectors.T
            order = np.argsort(block, axis=1, kind="stable")[:, :k]  # ties by id
            labels.append(ids[order])
            distances.append(np.take_along_axis(block, order, axis=1))
        return np.concatenate(labels), np.concatenate(distances)

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
        """The snapshot's bytes (:func:`.snapshot.pack`): the alive ids, then hnswlib's saved index.

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
            alive = sorted(self.alive)
        return snapshot.pack(self.dimensions, alive, graph)

    @classmethod
    def from_bytes(
        cls, data: bytes, dimensions: int, metric: str, *, m: int = DEFAULT_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ) -> HeadIndex:
        """A head index from :meth:`to_bytes`'s bytes, checked first (:func:`.snapshot.unpack`): no bytes crash hnswlib."""
        alive, graph, saved = snapshot.unpack(data, dimensions)
        head = cls(dimensions, metric, m=m, ef_construction=ef_construction, capacity=MIN_CAPACITY)
        handle, path = tempfile.mkstemp(suffix=".hnsw")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(graph)
            index = hnswlib.Index(space=SPACES[metric], dim=dimensions)
            # hnswlib allocates for the saved capacity: at most the growth add() allows.
            capacity = max(MIN_CAPACITY, min(saved.capacity, saved.count + _growth(saved.count)))
            try:
                index.load_index(path, max_elements=capacity, allow_replace_deleted=True)
            except RuntimeError as error:
                raise HeadIndexError(f"the snapshot is not a readable head index: {error}") from error
        finally:
            os.unlink(path)
        head._index = index
        head.alive = {int(i) for i in alive}
        head._top_label = max(map(int, index.get_ids_list()), default=-1)
        return head

    def labels(self) -> set[int]:
        """Ids of every element, alive or marked deleted."""
        with self._lock:
            return {int(i) for i in self._index.get_ids_list()}


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
    MIN_GROWTH = 256  # rows added at least when full (grown by an eighth, as the graph is)

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
            grown = len(self.data) + max(needed, len(self.data) // GROWTH_FRACTION, self.MIN_GROWTH)
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
