"""storage/readers.py: a query's reads spread over several connections at once, outside a transaction, while they wait on the disk."""

import re
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, clustered
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.models import Posting, Version
from vectorindex.storage import readers

# These tests count and spread reads of posting lists: none may come from
# this process's cache of them (tests/storage/test_cache.py has its own).
NO_CACHE = {"QUERY_CACHE_BYTES": 0}


def reads_of(table: str, captured) -> int:
    return sum(table in q["sql"] and q["sql"].lstrip().startswith("SELECT") for q in captured)


def keys_read(table: str, captured) -> int:
    """How many keys this connection's reads of *table* asked for (their IN lists)."""
    lists = [re.search(r" IN \(([^)]*)\)", q["sql"]) for q in captured if table in q["sql"] and q["sql"].lstrip().startswith("SELECT")]
    return sum(len(found.group(1).split(",")) for found in lists if found)


def posting_reads(captured) -> int:
    return reads_of(Posting._meta.db_table, captured)


def nearest(queries, k=10):
    return [
        [(p.pk, p.d) for p in Point.objects.approximate(probes=64).annotate(d=L2Distance("embedding", q)).order_by("d")[:k]]
        for q in queries
    ]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_readers_read_the_same_lists(settings, monkeypatch):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    queries = clustered(30, seed=7)
    settings.VECTORINDEX = {**NO_CACHE, "QUERY_READERS": 1}
    # 40 rows a query: its version lookup asks about 55 ids (1.25 × (40 + 4)), for 3 connections of 16 at least.
    with CaptureQueriesContext(connection) as alone:
        one = nearest(queries, k=40)
    settings.VECTORINDEX = {**NO_CACHE, "QUERY_READERS": 4}
    monkeypatch.setattr(readers, "SPREAD_ABOVE_US", 0)  # always spread
    with CaptureQueriesContext(connection) as spread:
        many = nearest(queries, k=40)
    assert many == one
    assert posting_reads(alone.captured_queries) >= len(queries)
    postings, versions = Posting._meta.db_table, Version._meta.db_table
    assert reads_of(versions, alone.captured_queries) >= len(queries)
    for table in (postings, versions):
        alone_keys, spread_keys = keys_read(table, alone.captured_queries), keys_read(table, spread.captured_queries)
        if connection.vendor == "mysql":
            # This connection read one share; the reader threads' connections the rest.
            assert 0 < spread_keys <= alone_keys / 2
        else:
            # SQLite: one connection reads them all, as before.
            assert spread_keys == alone_keys


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_its_own_appends_are_read(settings, monkeypatch):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    settings.VECTORINDEX = {**NO_CACHE, "QUERY_READERS": 4}
    monkeypatch.setattr(readers, "SPREAD_ABOVE_US", 0)
    vector = (clustered(1, seed=11)[0] + np.float32(0.01)).astype(np.float32)
    with transaction.atomic():
        new = Point.objects.create(embedding=vector)
        with CaptureQueriesContext(connection) as captured:
            found = Point.objects.approximate(probes=64).order_by(L2Distance("embedding", vector)).first()
        assert found.pk == new.pk
        assert posting_reads(captured.captured_queries) >= 1  # on the transaction's connection
    # Committed, it is found from the readers' connections too.
    assert Point.objects.approximate(probes=64).order_by(L2Distance("embedding", vector)).first().pk == new.pk


def fake_reads(monkeypatch, clock):
    """Reads of 64 keys, timed by *clock* (perf_counter's values): (keys read on this connection, keys read on readers)."""
    rows = [(key, key * 2) for key in range(64)]
    read_here, read_there = [], []
    monkeypatch.setattr(readers, "_read", lambda c, sql, params, keys, batch: read_here.extend(keys) or rows[: len(keys)])
    monkeypatch.setattr(readers, "_executor", lambda size: ThreadPoolExecutor(size))
    monkeypatch.setattr(
        readers, "_read_on_thread_connection",
        lambda alias, sql, params, keys, batch: read_there.extend(keys) or rows[: len(keys)],
    )
    monkeypatch.setattr(readers.time, "perf_counter", lambda: next(clock))
    return read_here, read_there


def taking(*seconds: float):
    """perf_counter's values for timed reads that take these many seconds, one after the other."""
    now = 0.0
    for each in seconds:
        yield now
        now += each
        yield now


@pytest.mark.django_db(transaction=True)
def test_reads_are_spread_only_while_a_key_takes_longer_than_the_threshold(settings, monkeypatch):
    """Rows from the buffer pool are read on one connection; rows from the disk on several."""
    paces = {}
    monkeypatch.setattr(readers, "_paces", paces)
    clock = iter(float(t) for t in range(1000))  # each timed read takes 1 s: 1/64 s a key
    read_here, read_there = fake_reads(monkeypatch, clock)
    settings.VECTORINDEX = {**NO_CACHE, "QUERY_READERS": 4}

    def read(above_us: float) -> tuple[int, int]:
        monkeypatch.setattr(readers, "SPREAD_ABOVE_US", above_us)
        read_here.clear()
        read_there.clear()
        assert len(readers.read_by_keys(connection, str, [], range(64), kind="postings", per_reader=8)) == 64
        return len(read_here), len(read_there)

    assert read(1e6 / 32) == (64, 0)  # nothing known yet: one connection, timed
    if connection.vendor != "mysql":
        assert paces == {}  # SQLite reads on its one connection, always
        return
    assert paces == {("default", "postings"): [1 / 64, 1]}
    # Slower than the threshold: spread, untimed, but for one read in SAMPLE_EVERY.
    shares = [read(1e6 / 128) for _ in range(2, 2 * readers.SAMPLE_EVERY + 1)]
    sampled = [n for n, share in enumerate(shares, start=2) if share == (64, 0)]
    assert sampled == [readers.SAMPLE_EVERY, 2 * readers.SAMPLE_EVERY]
    assert all(share == (16, 48) for n, share in enumerate(shares, start=2) if n not in sampled)
    assert paces[("default", "postings")][0] == pytest.approx(1 / 64)
    assert read(1e6 / 32) == (64, 0)  # faster than this threshold: one connection
    assert read(0) == (16, 48)  # 0: always spread
    with transaction.atomic():  # inside a transaction: its own connection, whatever the pace
        assert read(0) == (64, 0)


def test_the_first_timed_read_seeds_the_pace_and_later_ones_move_it_by_its_weight(settings, monkeypatch):
    """Whatever the test database: a connection of a backend that spreads its reads, faked."""
    paces = {}
    monkeypatch.setattr(readers, "_paces", paces)
    fake_reads(monkeypatch, taking(1.0, 3.0, 2.0))
    settings.VECTORINDEX = {**NO_CACHE, "QUERY_READERS": 4}
    monkeypatch.setattr(readers, "SPREAD_ABOVE_US", 1e6)  # never spread: every read timed
    mysql = SimpleNamespace(vendor="mysql", alias="replica", in_atomic_block=False)
    for _ in range(3):
        readers.read_by_keys(mysql, str, [], range(64), kind="versions", per_reader=16)
    first = 1 / 64
    second = (1 - readers.PACE_WEIGHT) * first + readers.PACE_WEIGHT * 3 / 64
    third = (1 - readers.PACE_WEIGHT) * second + readers.PACE_WEIGHT * 2 / 64
    assert paces == {("replica", "versions"): [pytest.approx(third), 3]}


def test_a_database_without_a_dialect_is_read_on_its_own_connection(monkeypatch):
    read_here, read_there = fake_reads(monkeypatch, taking(1.0))
    monkeypatch.setattr(readers, "SPREAD_ABOVE_US", 0)
    other = SimpleNamespace(vendor="postgresql", alias="other", in_atomic_block=False)
    assert len(readers.read_by_keys(other, str, [], range(64), kind="rows", per_reader=16)) == 64
    assert (len(read_here), len(read_there)) == (64, 0)
