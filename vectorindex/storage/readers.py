"""A query's reads spread over reader threads' own connections, and when that pays.

Outside a transaction, where the dialect allows it (MySQL/MariaDB), reads
that wait on the disk are spread over up to ``QUERY_READERS`` connections
read at once: InnoDB reads one statement's pages one after another, so
several statements keep the disk busy when the rows are not in the buffer
pool. Rows in the buffer pool are read faster on one connection (reader
threads then only contend for the cores and the GIL), so this process keeps
the recent time a key of each kind of read took on one connection (its
pace), and spreads that kind only while it is slow enough to be waiting on
the disk. The thresholds are the app's own, from BENCHMARKS.md round 6.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import OperationalError, connections

from ..conf import vectorindex_settings
from .base import IN_BATCH, in_batches, integers
from .dialects import DIALECTS

# What one reader connection takes at least: posting lists (tens of kilobytes
# each), or small rows (versions, the vectors of re-ranked rows).
LISTS_PER_READER = 8
ROWS_PER_READER = 16

# A kind of read is spread only while a key of it has lately taken more than
# this many microseconds on one connection: rows read from the disk. Measured
# (BENCHMARKS.md round 6): from the buffer pool a posting list took 52–100 µs
# and a version row 10–34, from the disk 409–521 and 126–138; a threshold of
# 150 left the version rows on one connection out of RAM. 0: always spread.
SPREAD_ABOVE_US = 100
# While reads are spread, one in SAMPLE_EVERY is still read (and timed) on
# one connection, to notice when the rows are back in the buffer pool; spread
# reads share the cores and would look slower than they are. Round 6 measured
# what it costs out of RAM: 6 % of the queries/s of always spreading.
SAMPLE_EVERY = 16
# The newest timing's weight in a pace (an exponential moving average): the
# pace follows a change within a few reads, and one slow read does not flip
# it. Chosen with the pacing (round 6), not measured on its own.
PACE_WEIGHT = 0.2

# (database alias, kind of read) -> [recent seconds a key took on one
# connection (the pace), reads so far]. Threads of one process update it
# without a lock: a lost update only leaves an average a read behind.
_paces: dict[tuple[str, str], list] = {}


def read_by_keys(
    connection: Any,
    sql: Callable[[int], str],
    params: Sequence,
    keys: Sequence[int],
    *,
    kind: str,
    per_reader: int,
    batch: int = IN_BATCH,
) -> list[tuple]:
    """Every row of ``sql(listed)`` with *params*, where *listed* is the text of an SQL list of at most *batch* of the integer *keys*.

    Spread over reader connections (see the module's docstring) at least
    *per_reader* keys each, while reads of this *kind* are slower than
    ``SPREAD_ABOVE_US`` a key. In autocommit mode every statement sees the
    latest commits anyway, so reading on other connections sees what this
    one would. This connection reads one share itself. Inside a transaction
    everything is read here, where the transaction's own writes are visible.
    """
    keys = list(keys)
    readers = min(vectorindex_settings.QUERY_READERS, len(keys) // per_reader)
    dialect = DIALECTS.get(connection.vendor)
    if readers < 2 or dialect is None or not dialect.parallel_reads or connection.in_atomic_block:
        return _read(connection, sql, params, keys, batch)
    above = SPREAD_ABOVE_US
    pace = _paces.setdefault((connection.alias, kind), [0.0, 0])
    pace[1] += 1
    if above and (pace[0] * 1e6 <= above or pace[1] % SAMPLE_EVERY == 0):
        # Timed on one connection alone: spread, the reads would share the
        # cores (and the GIL) and look slower than they are.
        started = time.perf_counter()
        rows = _read(connection, sql, params, keys, batch)
        seconds = (time.perf_counter() - started) / len(keys)
        pace[0] = (1 - PACE_WEIGHT) * pace[0] + PACE_WEIGHT * seconds if pace[0] else seconds
        return rows
    groups = [keys[i::readers] for i in range(readers)]
    pool = _executor(readers - 1)
    shares = [
        pool.submit(_read_on_thread_connection, connection.alias, sql, params, group, batch)
        for group in groups[1:]
    ]
    rows = _read(connection, sql, params, groups[0], batch)
    return rows + [row for share in shares for row in share.result()]


def _read(connection: Any, sql: Callable[[int], str], params: Sequence, keys: Sequence[int], batch: int) -> list[tuple]:
    rows: list[tuple] = []
    for part in in_batches(keys, batch):
        with connection.cursor() as cursor:
            cursor.execute(sql(integers(part)), params)
            rows.extend(cursor.fetchall())
    return rows


_readers: tuple[int, ThreadPoolExecutor] | None = None
_readers_lock = threading.Lock()


def _executor(size: int) -> ThreadPoolExecutor:
    """The process's reader threads: each keeps one connection per database alias."""
    global _readers
    with _readers_lock:
        if _readers is None or _readers[0] < size:
            _readers = (size, ThreadPoolExecutor(max_workers=size, thread_name_prefix="vectorindex-reader"))
        return _readers[1]


def on_own_connection(alias: str, work: Callable[[], Any]) -> Any:
    """*work*'s result, run on a reader thread, where ``connections[alias]`` is that thread's own, in autocommit mode."""
    return _executor(1).submit(_on_thread_connection, alias, work).result()


def _read_on_thread_connection(alias: str, *read: Any) -> list[tuple]:
    return _on_thread_connection(alias, lambda: _read(connections[alias], *read))


def _on_thread_connection(alias: str, work: Callable[[], Any]) -> Any:
    for attempt in range(2):
        try:
            return work()
        except OperationalError:
            # The server closed the idle connection (wait_timeout): a new one, once.
            connections[alias].close()
            if attempt:
                raise
    raise AssertionError("unreachable")
