"""A separate process for the head-index tests: ``python -m tests.engine.load_heads FILE DIMENSIONS``.

Reads the head-index snapshots in FILE (each a uint64 length and its bytes),
loads each (printing its number first, so that a process killed by a signal
shows which one did it), searches and grows the ones that load; prints how many
loaded, how many were refused with HeadIndexError, and any other error. Needs
no Django: it runs where the engine's tests run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from vectorindex.engine.head import HeadIndex
from vectorindex.exceptions import HeadIndexError

ROOT = Path(__file__).resolve().parent.parent.parent


def start(path: str, dimensions: int) -> subprocess.Popen:
    """This module in another process, from the directory that holds ``tests``, stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", __name__, path, str(dimensions)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def load(path: str, dimensions: int) -> dict:
    with open(path, "rb") as file:
        blobs = file.read()
    rng = np.random.default_rng(0)
    outcome: dict = {"loaded": 0, "refused": 0, "other": []}
    position, number = 0, 0
    while position < len(blobs):
        size = int.from_bytes(blobs[position : position + 8], "little")
        data = blobs[position + 8 : position + 8 + size]
        position += 8 + size
        print(f"snapshot {number}", flush=True)
        try:
            head = HeadIndex.from_bytes(data, dimensions, "l2")
            head.search(rng.normal(size=(20, dimensions)).astype(np.float32), 10, ef=50)
            head.add(np.array([10**12 + number]), rng.normal(size=(1, dimensions)).astype(np.float32))
            head.search(rng.normal(size=(5, dimensions)).astype(np.float32), 10, ef=50)
            outcome["loaded"] += 1
        except HeadIndexError:
            outcome["refused"] += 1
        except Exception as error:  # noqa: BLE001 - reported: only HeadIndexError may come out
            outcome["other"].append(f"snapshot {number}: {type(error).__name__}: {error}")
        number += 1
    return outcome


if __name__ == "__main__":
    print(json.dumps(load(sys.argv[1], int(sys.argv[2]))), flush=True)
