"""Read replicas: a real MariaDB primary and its read-only replica, and Django's primary/replica router.

The pair is started by the tests (tests/servers.py: ``mariadb-install-db``
and ``mariadbd`` on other sockets and ports, the binary log, ``CHANGE
MASTER TO``), and the scenarios run in processes of their own with
tests/replica_settings.py (tests/replication.py says what each does and
asserts). Where no MariaDB server can be started here, they are skipped
saying why. They do not use the suite's test database, so they run the
same whichever database the suite is on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.indexing import ROOT
from tests.servers import ReplicaPair, ServerUnavailable, start_pair


@pytest.fixture(scope="module")
def pair():
    try:
        started = start_pair()
    except ServerUnavailable as why:
        pytest.skip(f"no private MariaDB primary and replica could be started here: {why}")
    yield started
    started.stop()


@pytest.fixture
def migrated(pair: ReplicaPair) -> ReplicaPair:
    """An empty database on the pair, migrated on the primary and replicated."""
    pair.reset_database()
    done = _run(pair, "-m", "django", "migrate", "--noinput", "-v", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    pair.caught_up()
    return pair


def _environment(pair: ReplicaPair, reader: bool) -> dict[str, str]:
    environment = {**os.environ, **pair.environment(), "DJANGO_SETTINGS_MODULE": "tests.replica_settings"}
    environment["PYTHONPATH"] = str(ROOT)
    environment.pop("VECTORINDEX_READER_ONLY", None)
    if reader:
        environment["VECTORINDEX_READER_ONLY"] = "1"
    return environment


def _run(pair: ReplicaPair, *args: str, reader: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_environment(pair, reader), capture_output=True, text=True, timeout=timeout
    )


def _scenario(pair: ReplicaPair, *args: str, reader: bool = False) -> dict:
    done = _run(pair, "-m", "tests.replication", *args, reader=reader)
    return _outcome(done.returncode, done.stdout, done.stderr)


def _outcome(returncode: int, stdout: str, stderr: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    seen = json.loads(lines[-1]) if lines else {}
    assert returncode == 0 and "failed" not in seen, f"{seen.get('failed')}\n{seen.get('traceback', '')}\n{stderr[-4000:]}"
    return seen


def test_a_web_process_writes_to_the_primary_and_queries_the_replica_lagging_or_not(migrated: ReplicaPair) -> None:
    seen = _scenario(migrated, "web")
    print(json.dumps(seen, indent=1))
    assert seen["replayed_lsns"] > 0
    assert "ok" in seen["check_replica"].lower(), seen["check_replica"]


def test_a_read_only_process_answers_through_the_index_while_the_primary_writes_and_maintains(migrated: ReplicaPair) -> None:
    _scenario(migrated, "seed", "3000")
    migrated.caught_up()
    environment = _environment(migrated, reader=True)
    reader = subprocess.Popen(
        [sys.executable, "-m", "tests.replication", "read", "25"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2)
    writer = _scenario(migrated, "write", "20")
    out, err = reader.communicate(timeout=300)
    read = _outcome(reader.returncode, out, err)
    print(json.dumps({"write": writer, "read": {k: v for k, v in read.items() if k != "errors"}}))
    assert read["errors"] == [], "\n".join(read["errors"])
    assert read["answered"] >= 50
    assert read["by_index"] >= 0.9 * read["answered"], read
    assert writer["batches"] >= 2 and "ok" in writer["check"].lower(), writer
    migrated.caught_up()
    checked = _run(migrated, "-m", "django", "vectorindex", "check", "point_embedding", reader=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Nothing but replication wrote to the replica: its tables match the primary's.
    for table in ("testapp_point", "vectorindex_version", "vectorindex_posting", "vectorindex_head", "vectorindex_walentry"):
        query = f"CHECKSUM TABLE vectorindex_replicas.{table}"
        assert migrated.primary.execute(query) == migrated.replica.execute(query), table
