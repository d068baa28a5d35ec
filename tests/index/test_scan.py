"""The scan and maintain (vectorindex.index.maintenance.scanning), with the compact and collect they run (.garbage)."""

import io

from django.core.management import call_command

from tests.index.streamed import INDEX, all_found, crowd_one_head, declared, sizes
from tests.indexing import check
from vectorindex.index import maintenance
from vectorindex.models import Head, Snapshot, WalEntry


def test_scan_maintain_compact_and_collect(small, settings):
    settings.VECTORINDEX = {"WAL_SNAPSHOT_ENTRIES": 5, "RETIRED_GRACE": 0}
    crowd_one_head(300)
    jobs = {name for name, _ in maintenance.scan(declared())}
    assert "split" in jobs
    out = io.StringIO()
    call_command("vectorindex", "maintain", INDEX, stdout=out)
    assert "split" in out.getvalue()
    assert maintenance.scan(declared()) == []
    assert max(sizes().values()) <= 64
    assert "compact" in out.getvalue()
    assert WalEntry.objects.count() < 5  # what the last jobs logged since, below the threshold
    assert Snapshot.objects.latest().lsn > 0
    assert not Head.objects.filter(alive=False).exists()  # collected
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()
