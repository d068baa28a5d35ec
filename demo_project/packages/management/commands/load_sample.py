"""``manage.py load_sample``: load the bundled sample of PyPI packages.

Reads ``sample.tsv.gz`` (name, summary) and ``sample.f16.npy`` (their embeddings,
same order) from ``demo_project/packages/data/`` and creates one ``Package`` per
row with ``bulk_create``, in one transaction. Does nothing if there are packages
already, unless ``--replace``: then the old ones are deleted and the sample loaded
again, in the same transaction.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, transaction
from tqdm import tqdm

from demo_project.packages.models import Package

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
TSV_NAME = "sample.tsv.gz"
VECTORS_NAME = "sample.f16.npy"
MAKE_SAMPLE = "demo_project/packages/data/make_sample.py"


def sample_paths(data_dir: Path) -> tuple[Path, Path]:
    """The sample's two files in *data_dir*; CommandError if either is missing."""
    tsv_path, vectors_path = data_dir / TSV_NAME, data_dir / VECTORS_NAME
    missing = [str(path) for path in (tsv_path, vectors_path) if not path.is_file()]
    if missing:
        raise CommandError(
            f"Sample file(s) not found: {', '.join(missing)}. Generate them with "
            f"`python {MAKE_SAMPLE}` (it needs the pypi-minilm-384 data set), "
            "or pass --data-dir."
        )
    return tsv_path, vectors_path


def read_sample(
    data_dir: Path, limit: int | None = None
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The sample's rows and their embeddings (float32), checked to agree."""
    tsv_path, vectors_path = sample_paths(data_dir)
    try:
        with gzip.open(tsv_path, "rt", encoding="utf-8", newline="\n") as file:
            header = file.readline().rstrip("\n")
            if header != "name\tsummary":
                raise CommandError(
                    f"{tsv_path}: expected the header 'name<TAB>summary', got {header!r}."
                )
            rows = []
            for line_number, line in enumerate(file, start=2):
                if limit is not None and len(rows) >= limit:
                    break
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 2:
                    raise CommandError(
                        f"{tsv_path}, line {line_number}: expected 2 tab-separated "
                        f"columns, got {len(fields)}."
                    )
                rows.append((fields[0], fields[1]))
        vectors = np.load(vectors_path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise CommandError(f"Cannot read the sample: {error}") from error

    dimensions = Package._meta.get_field("embedding").dimensions
    if vectors.ndim != 2 or vectors.shape[1] != dimensions:
        raise CommandError(
            f"{vectors_path}: expected N x {dimensions} vectors, got shape {vectors.shape}."
        )
    expected = vectors.shape[0] if limit is None else min(limit, vectors.shape[0])
    if len(rows) != expected:
        raise CommandError(
            f"The sample files disagree: {tsv_path.name} has {len(rows):,} rows, "
            f"{vectors_path.name} has {vectors.shape[0]:,} vectors."
        )
    return rows, np.asarray(vectors[: len(rows)], dtype=np.float32)


class Command(BaseCommand):
    help = (
        "Load the sample of PyPI packages (name, summary, 384-d embedding) into the "
        "Package model. Does nothing if packages are already loaded, unless --replace."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Delete all packages first and load the sample again (in one transaction).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            help="Rows per bulk_create() call (default: 1000).",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="Load only the first N packages of the sample (default: all).",
        )
        parser.add_argument(
            "--data-dir",
            default=str(DATA_DIR),
            help=f"Directory holding {TSV_NAME} and {VECTORS_NAME} "
            "(default: the app's data directory).",
        )
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="Do not show a progress bar (it is also hidden when output is not a terminal).",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='The database to load into (default: "default").',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        limit = options["limit"]
        database = options["database"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if limit is not None and limit < 0:
            raise CommandError("--limit cannot be negative.")

        data_dir = Path(options["data_dir"])
        sample_paths(data_dir)  # missing files are an error even with nothing to do

        packages = Package.objects.using(database)
        if not options["replace"]:
            existing = packages.count()
            if existing:
                self.stdout.write(
                    f"{existing:,} packages are already loaded; nothing to do "
                    "(use --replace to delete them and load the sample again)."
                )
                return

        rows, vectors = read_sample(data_dir, limit)
        show_progress = not options["no_progress"] and self.stdout.isatty()

        started = time.perf_counter()
        deleted = 0
        with transaction.atomic(using=database):
            if options["replace"]:
                deleted, _ = packages.all().delete()
            with tqdm(
                total=len(rows),
                unit=" packages",
                unit_scale=True,
                desc="Loading",
                disable=not show_progress,
                leave=False,
            ) as progress:
                for start in range(0, len(rows), batch_size):
                    batch = [
                        Package(name=name, summary=summary, embedding=vectors[start + offset])
                        for offset, (name, summary) in enumerate(rows[start : start + batch_size])
                    ]
                    packages.bulk_create(batch)
                    progress.update(len(batch))
        elapsed = time.perf_counter() - started

        if options["replace"]:
            self.stdout.write(f"Deleted {deleted:,} existing packages.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Loaded {len(rows):,} packages in {elapsed:.2f} s "
                f"({len(rows) / elapsed if elapsed else 0:,.0f} rows/s)."
            )
        )
