"""storage/memory.py: an index's posting data against the memory its database server keeps pages in."""

import pytest
from django.db import connection

from tests.indexing import clustered
from tests.testapp.models import Point
from vectorindex.models import Posting
from vectorindex.storage import BufferPool, PostingMemory, posting_memory, posting_table_memory
from vectorindex.storage.dialects import DIALECTS
from vectorindex.storage.memory import GiB, MiB

POOL = BufferPool("InnoDB buffer pool", "innodb_buffer_pool_size", 128 * MiB)


def test_the_posting_data_is_too_large_when_it_is_larger_than_the_pool():
    assert not PostingMemory(128 * MiB, POOL).too_large
    assert PostingMemory(128 * MiB + 1, POOL).too_large
    assert not PostingMemory(10 * GiB, None).too_large  # no pool of its own: never too small


@pytest.mark.parametrize(
    ("posting", "advised"),
    [
        (1, 128 * MiB),
        (102 * MiB, 128 * MiB),  # 127.5 MiB with the headroom
        (103 * MiB, 256 * MiB),
        (286 * MiB, 384 * MiB),
        (800 * MiB, 1 * GiB),
        (820 * MiB, 2 * GiB),  # whole GiB above 1 GiB
        (10 * GiB, 13 * GiB),
    ],
)
def test_the_pool_advised_holds_the_data_and_a_quarter_more(posting, advised):
    assert PostingMemory(posting, POOL).advised_pool_bytes == advised


def payload_bytes(index_id):
    return sum(len(bytes(payload)) for payload in Posting.objects.filter(index_id=index_id).values_list("payload", flat=True))


@pytest.mark.django_db
def test_the_posting_data_is_counted_exactly_and_grows_as_vectors_are_added(point_storage):
    before = posting_memory(point_storage).posting_bytes
    assert before == payload_bytes(point_storage.index_id) > 0
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(50, seed=1))
    after = posting_memory(point_storage).posting_bytes
    assert after == payload_bytes(point_storage.index_id)
    assert after >= before + 50 * point_storage.payload.dtype.itemsize  # each new vector in one list at least


@pytest.mark.django_db
def test_the_buffer_pool_is_the_servers_own(point_storage):
    memory = posting_memory(point_storage)
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@innodb_buffer_pool_size")
            size = int(cursor.fetchone()[0])
        assert memory.buffer_pool == BufferPool("InnoDB buffer pool", "innodb_buffer_pool_size", size)
        table = posting_table_memory(connection)
        assert table.buffer_pool == memory.buffer_pool
        assert table.posting_bytes >= 16 * 1024  # one InnoDB page at least, by the statistics
    else:  # SQLite's pages are cached by the operating system: no pool, nothing to weigh
        assert memory.buffer_pool is None and not memory.too_large
        assert posting_table_memory(connection) is None


@pytest.mark.django_db
def test_a_table_that_does_not_exist_has_no_size():
    assert DIALECTS[connection.vendor].table_bytes(connection, "vectorindex_no_such_table") is None
