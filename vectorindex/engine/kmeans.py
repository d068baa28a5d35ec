"""A small k-means for splitting one posting list (hundreds to thousands of vectors).

k-means++ seeding, then Lloyd iterations until the assignment stops changing.
Deterministic for a given seed. Cosine lists are clustered on unit vectors, so
the centroids are directions.
"""

from __future__ import annotations

import numpy as np


def _squared_distances(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return (
        np.einsum("ij,ij->i", points, points)[:, None]
        - 2 * points @ centers.T
        + np.einsum("ij,ij->i", centers, centers)[None, :]
    )


def kmeans(points: np.ndarray, k: int, *, iterations: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k, d), label per point); k is capped at the number of distinct points."""
    points = np.asarray(points, dtype=np.float64)
    rng = np.random.default_rng(seed)
    k = max(1, min(k, len(np.unique(points, axis=0))))
    centers = [points[rng.integers(len(points))]]
    closest = ((points - centers[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        weights = closest / closest.sum() if closest.sum() > 0 else None
        centers.append(points[rng.choice(len(points), p=weights)])
        closest = np.minimum(closest, ((points - centers[-1]) ** 2).sum(axis=1))
    centers = np.array(centers)
    labels = np.full(len(points), -1)
    for _ in range(iterations):
        new_labels = np.argmin(_squared_distances(points, centers), axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centers[j] = members.mean(axis=0)
            else:  # an empty cluster takes the point farthest from its center
                far = np.argmax(((points - centers[labels]) ** 2).sum(axis=1))
                centers[j] = points[far]
                labels[far] = j
    return centers.astype(np.float32), labels
