"""Snapshots: the serialised head index at one LSN, stored as a row and its chunks, checked by a checksum on the way back."""

from __future__ import annotations

import hashlib

from ..exceptions import SnapshotError
from ..models import Snapshot, SnapshotChunk
from .base import StorageBase

# Bytes of a snapshot per chunk row: every blob row stays well under
# MariaDB's default max_allowed_packet of 16 MiB (docs/ARCHITECTURE.md §2).
SNAPSHOT_CHUNK = 1 << 20


class SnapshotRows(StorageBase):
    """Writing, reading and deleting the index's snapshots."""

    def write_snapshot(self, generation: int, lsn: int, data: bytes, heads: int) -> Snapshot:
        alias = self.connection.alias
        snapshot = Snapshot.objects.using(alias).create(
            index_id=self.index_id,
            generation=generation,
            lsn=lsn,
            size=len(data),
            chunks=(len(data) + SNAPSHOT_CHUNK - 1) // SNAPSHOT_CHUNK,
            heads=heads,
            checksum=hashlib.sha256(data).hexdigest(),
        )
        for number, start in enumerate(range(0, len(data), SNAPSHOT_CHUNK)):
            SnapshotChunk.objects.using(alias).create(
                snapshot_id=snapshot.pk, number=number, data=data[start : start + SNAPSHOT_CHUNK]
            )
        return snapshot

    def newest_snapshot(self, generation: int) -> Snapshot | None:
        """The row of this generation's newest snapshot (not its bytes)."""
        return (
            Snapshot.objects.using(self.connection.alias)
            .filter(index_id=self.index_id, generation=generation)
            .order_by("-lsn", "-pk")
            .first()
        )

    def latest_snapshot(self, generation: int) -> tuple[Snapshot, bytes]:
        """The newest snapshot of this generation, its bytes checked against its checksum."""
        alias = self.connection.alias
        snapshot = self.newest_snapshot(generation)
        if snapshot is None:
            raise SnapshotError(f"no snapshot of generation {generation}")
        chunks = list(
            SnapshotChunk.objects.using(alias).filter(snapshot_id=snapshot.pk).order_by("number").values_list("data", flat=True)
        )
        data = b"".join(bytes(chunk) for chunk in chunks)
        if len(chunks) != snapshot.chunks or hashlib.sha256(data).hexdigest() != snapshot.checksum:
            raise SnapshotError(
                f"snapshot {snapshot.pk} (LSN {snapshot.lsn}) is incomplete or damaged: "
                f"{len(chunks)} of {snapshot.chunks} chunks, checksum mismatch"
            )
        return snapshot, data

    def delete_snapshots(self, keep: int | None = None) -> None:
        alias = self.connection.alias
        old = Snapshot.objects.using(alias).filter(index_id=self.index_id)
        if keep is not None:
            old = old.exclude(pk=keep)
        ids = list(old.values_list("pk", flat=True))
        SnapshotChunk.objects.using(alias).filter(snapshot_id__in=ids).delete()
        Snapshot.objects.using(alias).filter(pk__in=ids).delete()
