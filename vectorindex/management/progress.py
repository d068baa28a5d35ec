"""Progress bars for long work started from a command: a build, a repair, a calibration."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bars(label: str, show: bool, unit: str = "it") -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, done, total)`` that draws one bar per stage, labelled *label*, when *show*.

    Commands show them on a terminal only (not into a file or a pipe).
    """
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if show:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=f"{label}: {stage}", unit=unit, leave=False)
            bar.update(done - bar.n)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()
