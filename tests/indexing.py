"""Helpers shared by the index tests: data, building, recall, other processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from django.core.management import call_command
from django.db import connection

from tests.engine.fakes import RefusingSearches  # noqa: F401  (the maintenance tests use it too)

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "data" / "pypi-minilm-384"


def clustered(n: int, dimensions: int = 16, centers: int = 50, seed: int = 0) -> np.ndarray:
    """Gaussian blobs: the shape real embeddings have, at a size tests can afford."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, dimensions)) * 4
    return (middle[rng.integers(0, centers, n)] + rng.normal(size=(n, dimensions))).astype(np.float32)


def build(name: str) -> str:
    out = io.StringIO()
    call_command("vectorindex", "build", name, "--seed", "1", stdout=out)
    return out.getvalue()


def check(name: str) -> str:
    """The output of ``vectorindex check NAME``; a violation fails with the details."""
    from django.core.management import CommandError

    out = io.StringIO()
    try:
        call_command("vectorindex", "check", name, stdout=out, stderr=out)
    except CommandError as error:
        raise AssertionError(f"{error}\n{out.getvalue()}") from None
    return out.getvalue()


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def pretend_buffer_pool(monkeypatch, size: int, posting_table: int | None = None) -> None:
    """The test database's server keeps pages in an InnoDB buffer pool of *size* bytes, whichever backend it is.

    A real server's buffer pool cannot be resized in a test: its dialect is
    made to say so, and with *posting_table*, to say that the posting table
    takes that many bytes by the server's statistics.
    """
    from vectorindex.storage.dialects import DIALECTS

    dialect = DIALECTS[connection.vendor]
    monkeypatch.setattr(dialect, "buffer_pool", "InnoDB buffer pool")
    monkeypatch.setattr(dialect, "buffer_pool_setting", "innodb_buffer_pool_size")
    monkeypatch.setattr(dialect, "buffer_pool_bytes", lambda connection: size)
    if posting_table is not None:
        monkeypatch.setattr(dialect, "table_bytes", lambda connection, table: posting_table)


def database_url() -> str:
    """The URL of the database the tests run on (the test database)."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings['NAME']).resolve()}"
    user = settings["USER"] or "root"
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or 3306
    return f"mysql://{user}{password}@{host}:{port}/{settings['NAME']}"


def worker(*args: str, fault: str | None = None) -> subprocess.Popen:
    """``python -m tests.worker ARGS`` against the test database, stdout piped.

    *fault* ("job:step") makes a maintenance job kill itself at that step.
    """
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.pop("VECTORINDEX_FAULT", None)
    if fault:
        env["VECTORINDEX_FAULT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_worker(*args: str, timeout: float = 120) -> dict:
    process = worker(*args)
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])
