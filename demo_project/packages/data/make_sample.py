#!/usr/bin/env python
"""Make the demo's sample of PyPI packages from the pypi-minilm-384 data set.

Takes the first ``--count`` rows of the data set's base (``base.f16.npy``) and
their texts (``texts.tsv.gz``, ``"<name>: <summary>"``, one line per base row),
splits each text at the first ": " into name and summary, drops any row whose
name already appeared earlier in the sample (compared case-insensitively, as
MariaDB's default collation does, so the unique constraint on the name holds on
every database), and writes, next to this script:

- ``sample.tsv.gz``: a header line ``name<TAB>summary``, then one line per package;
  tabs, carriage returns and newlines inside a value become single spaces.
- ``sample.f16.npy``: the packages' embeddings, float16, one row per line of the
  TSV (after the header), in the same order.

Usage, from the repository root::

    python demo_project/packages/data/make_sample.py [--source DIR] [--count N]

No Django needed: only numpy. The output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
import sys
from itertools import islice
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
DEFAULT_SOURCE = "../shared/data/pypi-minilm-384"
DIMENSIONS = 384
MAX_NAME_LENGTH = 200  # Package.name's max_length

TSV_NAME = "sample.tsv.gz"
VECTORS_NAME = "sample.f16.npy"

_CONTROL = re.compile(r"[\t\r\n]+")


def clean(value: str) -> str:
    """One TSV field: no tabs or line breaks, no surrounding whitespace."""
    return _CONTROL.sub(" ", value).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="the pypi-minilm-384 directory; a relative path is taken from the "
        f"repository root (default: {DEFAULT_SOURCE})",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=10_000,
        help="how many base rows to take from the start (default: 10000)",
    )
    parser.add_argument(
        "--out",
        default=str(HERE),
        help="output directory; a relative path is taken from the repository root "
        "(default: this script's directory)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")

    source = Path(args.source)
    if not source.is_absolute():
        source = (REPO_ROOT / source).resolve()
    out = Path(args.out)
    if not out.is_absolute():
        out = (REPO_ROOT / out).resolve()
    base_path, texts_path = source / "base.f16.npy", source / "texts.tsv.gz"
    for path in (base_path, texts_path):
        if not path.is_file():
            parser.error(f"{path} not found (is --source the pypi-minilm-384 directory?)")

    base = np.load(base_path, mmap_mode="r")
    if base.ndim != 2 or base.shape[1] != DIMENSIONS:
        parser.error(f"{base_path}: expected N x {DIMENSIONS}, got shape {base.shape}")
    count = min(args.count, base.shape[0])

    with gzip.open(texts_path, "rt", encoding="utf-8", newline="\n") as texts:
        lines = [line.rstrip("\n") for line in islice(texts, count)]
    if len(lines) != count:
        parser.error(f"{texts_path} has {len(lines)} lines, fewer than the {count} rows taken")

    keep: list[int] = []
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    duplicates = malformed = 0
    for index, line in enumerate(lines):
        name, sep, summary = line.partition(": ")
        name, summary = clean(name), clean(summary)
        if not sep or not name or len(name) > MAX_NAME_LENGTH:
            malformed += 1
            continue
        key = name.casefold()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        keep.append(index)
        rows.append((name, summary))

    vectors = np.ascontiguousarray(base[:count][keep], dtype=np.float16)

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    buffer.write("name\tsummary\n")
    for name, summary in rows:
        buffer.write(f"{name}\t{summary}\n")
    # mtime=0 and no file name in the header: the same input gives the same bytes.
    with open(out / TSV_NAME, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as gz:
        gz.write(buffer.getvalue().encode("utf-8"))
    np.save(out / VECTORS_NAME, vectors)

    norms = np.linalg.norm(vectors.astype(np.float32), axis=1)
    print(
        f"Read {count:,} rows from {source}; dropped {duplicates} repeated name(s) "
        f"and {malformed} malformed line(s); wrote {len(rows):,} packages.\n"
        f"  {out / TSV_NAME} ({(out / TSV_NAME).stat().st_size:,} bytes)\n"
        f"  {out / VECTORS_NAME} ({(out / VECTORS_NAME).stat().st_size:,} bytes, "
        f"{vectors.shape[0]:,} x {vectors.shape[1]} float16, "
        f"norms {norms.min():.5f}-{norms.max():.5f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
