"""Numbers in the messages people read: counts with the right form of their noun."""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 head``, ``2 heads``, ``1,234 entries``: *plural* where adding an "s" is wrong."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"
