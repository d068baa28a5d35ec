"""wording.py: sizes and the buffer pool warning as people read them."""

import pytest

from vectorindex.storage import BufferPool, PostingMemory
from vectorindex.storage.memory import GiB, MiB
from vectorindex.wording import buffer_pool_warning, in_bytes, posting_data, posting_table_hint, posting_table_warning

POOL = BufferPool("InnoDB buffer pool", "innodb_buffer_pool_size", 128 * MiB)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1,023 bytes"),
        (1536, "1.5 KiB"),
        (128 * MiB, "128 MiB"),
        (286 * MiB + 1, "286 MiB"),
        (2 * GiB, "2 GiB"),
        (10 * GiB + GiB // 2, "10.5 GiB"),
        (5000 * GiB, "4.9 TiB"),
    ],
)
def test_sizes_have_units(size, text):
    assert in_bytes(size) == text


def test_posting_data_larger_than_the_pool_says_by_how_much_and_what_to_set():
    memory = PostingMemory(286 * MiB, POOL)
    assert buffer_pool_warning(memory) == (
        "posting data 286 MiB is 2.2× the InnoDB buffer pool (128 MiB): queries will read lists from disk; "
        "set innodb_buffer_pool_size to at least 384 MiB (see README, Deployment)"
    )
    assert posting_data(memory) == "286 MiB; InnoDB buffer pool 128 MiB"
    assert posting_table_warning("default", memory) == (
        "The posting lists of the vector indexes on database 'default' take 286 MiB, 2.2× the InnoDB buffer pool "
        "(128 MiB): queries will read lists from disk, several times slower."
    )
    assert posting_table_hint(memory) == (
        "Set innodb_buffer_pool_size to at least 384 MiB (see README, Deployment); "
        "`manage.py vectorindex status` shows each index's posting data."
    )


def test_data_just_over_the_pool_is_never_called_one_times_it():
    assert "is 1.04× the InnoDB buffer pool" in buffer_pool_warning(PostingMemory(133 * MiB, POOL))


def test_data_that_fits_or_a_database_without_a_pool_is_not_warned_of():
    assert buffer_pool_warning(PostingMemory(128 * MiB, POOL)) is None
    memory = PostingMemory(10 * GiB, None)
    assert buffer_pool_warning(memory) is None
    assert posting_data(memory) == "10 GiB; no buffer pool: the operating system caches the database's pages in free memory"
