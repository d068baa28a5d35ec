"""Stand-ins the engine's tests (and the index tests) put in place of hnswlib's parts; no Django."""

from __future__ import annotations


class RefusingSearches:
    """hnswlib's index, except that knn_query fails as it does when its graph
    reaches fewer than k alive elements past the deleted ones."""

    def __init__(self, index) -> None:
        self.index = index

    def __getattr__(self, name: str):
        return getattr(self.index, name)

    def knn_query(self, *args, **kwargs):
        raise RuntimeError("Cannot return the results in a contiguous 2D array. Probably ef or M is too small")
