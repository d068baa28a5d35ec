"""What the benchmark scripts share: Django set up on the demo project and the benchmarks' model, data loaded.

A data set is a directory in the layout of ``../shared/data/pypi-minilm-384``:
``base.f16.npy`` (N × d, float16), ``queries.f32.npy`` (Q × d, float32), and
``gt.i32.npy`` (Q × k, the rows of each query's exact k nearest by cosine,
nearest first); its dimension d is the base's second axis (``meta.json``'s
``dim`` says the same). ``python -m bench synthetic`` writes one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "pypi-minilm-384"


def arguments(description: str, limit: int, queries: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=limit, help="rows of the data set to load")
    parser.add_argument("--queries", type=int, default=queries)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--set", action="append", default=[], metavar="OPTION=VALUE",
        help="a VectorIndex tuning option for this run (e.g. payload=int8, head_fraction=0.04); repeatable",
    )
    parser.add_argument(
        "--setting", action="append", default=[], metavar="KEY=VALUE",
        help="a VECTORINDEX setting for this run (e.g. QUERY_READERS=1); repeatable",
    )
    return parser


def configure(pairs: list[str]) -> dict:
    """Apply ``--setting`` values to ``settings.VECTORINDEX``; the settings in force."""
    from django.conf import settings

    from vectorindex.conf import DEFAULTS, vectorindex_settings

    values = dict(settings.VECTORINDEX)
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"--setting {pair}: no VECTORINDEX setting {key!r}; the settings are {', '.join(DEFAULTS)}")
        values[key] = type(DEFAULTS[key])(text)
    settings.VECTORINDEX = values
    vectorindex_settings.reload()
    return {key: getattr(vectorindex_settings, key) for key in DEFAULTS}


def tune(settings: list[str]) -> dict:
    """Apply ``--set`` options to the benchmarks' index declaration; every option, as in force."""
    from vectorindex.index.registry import get_declared
    from vectorindex.indexes import TUNING

    from .models import INDEX

    declared = get_declared(INDEX)
    for setting in settings:
        key, _, text = setting.partition("=")
        if key not in TUNING:
            raise SystemExit(f"--set {setting}: no tuning option {key!r}; the options are {', '.join(TUNING)}")
        kind = TUNING[key][1]
        declared.index.tuning[key] = int(text) if kind == "int" else float(text) if kind == "float" else text
    return declared.options


def dimensions(dataset: Path) -> int:
    """The dimension of *dataset*'s vectors."""
    return int(np.load(dataset / "base.f16.npy", mmap_mode="r").shape[1])


def setup(scratch: str, dimensions: int) -> None:
    """Django on the benchmarks' settings (:mod:`bench.settings`), vectors of *dimensions*;
    DATABASE_URL or a scratch SQLite file. Processes started after this inherit both."""
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / scratch}")
    os.environ["BENCH_DIMENSIONS"] = str(dimensions)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    create_database()
    call_command("migrate", verbosity=0)


def create_database() -> None:
    """The MySQL/MariaDB database DATABASE_URL names, created if it does not exist yet (SQLite creates its file)."""
    from django.db import connection

    if connection.vendor != "mysql":
        return
    import MySQLdb

    settings = connection.settings_dict
    server = MySQLdb.connect(
        host=settings["HOST"] or "127.0.0.1", port=int(settings["PORT"] or 3306), user=settings["USER"] or "root",
        password=settings["PASSWORD"] or "",
    )
    try:
        server.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{settings['NAME']}` CHARACTER SET utf8mb4")
    finally:
        server.close()


def holds(base: np.ndarray) -> bool:
    """Whether the benchmarks' table holds these rows: as many, and the first and last the same."""
    from vectorindex.exceptions import CorruptVector

    from .models import Row

    if Row.objects.count() != len(base):
        return False
    ends = {"row0": base[0], f"row{len(base) - 1}": base[-1]} if len(base) else {}
    try:
        stored = dict(Row.objects.filter(name__in=list(ends)).values_list("name", "embedding"))
    except CorruptVector:
        return False  # another data set's dimension
    return all(name in stored and np.array_equal(stored[name], vector) for name, vector in ends.items())


def clear() -> None:
    """Delete every row of the benchmarks' table, rows of another data set's dimension included."""
    from .models import Row

    Row.objects.defer("embedding").delete()


def load(dataset: Path, limit: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base vectors, their Row primary keys, queries), loading the rows if needed."""
    from .models import Row

    base = np.load(dataset / "base.f16.npy", mmap_mode="r")[:limit].astype(np.float32)
    if not holds(base):
        clear()
        started = time.perf_counter()
        for start in range(0, len(base), 5_000):
            Row.objects.bulk_create(
                Row(name=f"row{i}", summary="", embedding=base[i]) for i in range(start, min(start + 5_000, len(base)))
            )
        print(f"loaded {len(base):,} rows in {time.perf_counter() - started:.1f} s")
    pk_of_row = dict(Row.objects.values_list("name", "pk"))
    pks = np.array([pk_of_row[f"row{i}"] for i in range(len(base))])
    return base, pks, np.load(dataset / "queries.f32.npy")[:queries]
