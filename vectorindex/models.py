"""The index's storage: its own tables, in the same database as the indexed model.

Layout (docs/ARCHITECTURE.md §2): posting lists are many rows under the composite primary key
``(index_id, head_id, seq)``, so that an append is one INSERT that never reads
or rewrites an existing blob, and reading a posting list is one range scan of
the clustered primary key on InnoDB. On MySQL/MariaDB ``seq`` is an
``AUTO_INCREMENT`` column with a key of its own (no counter row held for the
length of a transaction); SQLite serialises writers, so there ``seq`` is the
list's largest plus one.

The engine reads and writes these tables with plain SQL through
:mod:`vectorindex.storage`; the models exist for migrations, the admin and
inspection.
"""

from __future__ import annotations

from django.db import models

from .engine import wal


class IndexState(models.Model):
    """One row per VectorIndex: what it indexes, its status, and its WAL position.

    Jobs that change the set of heads lock this row exclusively, which
    serialises head changes per index and makes WAL LSNs commit in order.
    """

    class Status(models.TextChoices):
        EMPTY = "empty", "not built"
        BUILDING = "building", "building"
        READY = "ready", "ready"

    name = models.CharField(max_length=100, unique=True)
    model_label = models.CharField(max_length=200)
    field_name = models.CharField(max_length=100)
    distance = models.CharField(max_length=10)
    dimensions = models.PositiveIntegerField()
    options = models.JSONField(default=dict)
    # How posting entries store vectors, fixed by the build that wrote them
    # (``{"format": …}``, with int8's ranges): it changes only with a rebuild,
    # whatever ``options`` — the declaration — says now.
    payload = models.JSONField(default=dict, blank=True)
    # What the stored contents were built for. ``dimensions`` and ``distance``
    # follow the declaration at every migrate; these follow only the build, so
    # that a declaration changed since is seen: migrate then resets the index
    # and every reader refuses it until it is rebuilt. Kept after a reset, to
    # say why the index is not built.
    built_dimensions = models.PositiveIntegerField(null=True, blank=True)
    built_distance = models.CharField(max_length=10, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.EMPTY)
    # A random token drawn by every build: a process whose head index is of
    # another generation reloads it from the snapshot instead of replaying the
    # WAL. Random, not a counter, so that a rolled-back build's number is
    # never seen again.
    generation = models.BigIntegerField(default=0)
    wal_lsn = models.BigIntegerField(default=0)
    built_at = models.DateTimeField(null=True, blank=True)
    # Version rows of deleted vectors that the last sweep had to leave (entries
    # in lists it could not rewrite still name them): the scan asks for the
    # next sweep only once the deleted vectors outgrow these.
    swept_deleted = models.BigIntegerField(default=0)
    # What the last calibration measured (engine.calibration.Calibration):
    # the probes that meet the recall target, the recall measured with them,
    # and the curve that other targets are read from. Queries read it with
    # the rest of the row; {} until the first calibration.
    calibration = models.JSONField(default=dict, blank=True)
    declared = models.BooleanField(
        default=True, help_text="False once no model declares this index any more."
    )

    class Meta:
        verbose_name = "vector index"
        verbose_name_plural = "vector indexes"
        # The admin's actions: a snapshot pauses head-changing jobs, a check
        # reads every row of the index; viewing the list allows neither.
        permissions = [
            ("snapshot_indexstate", "Can take a snapshot of a vector index"),
            ("check_indexstate", "Can check a vector index's invariants"),
            ("build_indexstate", "Can build a vector index again"),
            ("maintain_indexstate", "Can run a vector index's maintenance"),
            ("recover_indexstate", "Can reload a vector index's head index"),
        ]

    @property
    def ready(self) -> bool:
        """Built, and answering queries (as :attr:`StateRow.ready <vectorindex.storage.StateRow.ready>` says of a row read by SQL)."""
        return self.status == self.Status.READY

    def __str__(self) -> str:
        return self.name


class Head(models.Model):
    """A head: a vector that stands for one posting list; its id is its label in the HNSW head index."""

    index = models.ForeignKey(IndexState, on_delete=models.CASCADE, related_name="heads")
    vector = models.BinaryField()
    alive = models.BooleanField(default=True)
    created_lsn = models.BigIntegerField(default=0)
    retired_lsn = models.BigIntegerField(null=True, blank=True)
    # A retired head's posting rows stay readable for a grace period: a process
    # whose head index is a moment old still routes queries to it.
    retired_at = models.DateTimeField(null=True, blank=True)
    # The heads a split replaced this one with, until the reassign after the
    # split has run (None then): the scan finds a reassign whose job was lost,
    # and the head is not collected before it.
    split_into = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["index", "alive"], name="vectorindex_head_alive")]


class Posting(models.Model):
    """A packed run of posting-list entries: ``(vector_id, version, vector)``."""

    pk = models.CompositePrimaryKey("index_id", "head_id", "seq")
    index_id = models.BigIntegerField()
    head_id = models.BigIntegerField()
    seq = models.BigIntegerField()
    count = models.PositiveIntegerField()
    payload = models.BinaryField()


# The longest primary key a version row keeps as text (``Version.row_key``).
ROW_KEY_LENGTH = 255


def is_integer_key(field: models.Field) -> bool:
    """Whether a primary key is an integer, which an index uses as the vector id itself."""
    while isinstance(field, (models.OneToOneField, models.ForeignKey)):  # multi-table inheritance's parent link
        field = field.target_field
    return isinstance(field, (models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField))


class Version(models.Model):
    """The current version of each indexed vector, and whether its row is gone."""

    pk = models.CompositePrimaryKey("index_id", "vector_id")
    index_id = models.BigIntegerField()
    vector_id = models.BigIntegerField()
    version = models.PositiveIntegerField(default=1)
    deleted = models.BooleanField(default=False)
    # The row's primary key as text, for a model whose key is not an integer
    # (a UUID, a string): the vector id is then the index's own, given here
    # when the row is first indexed, and this finds it. NULL otherwise.
    row_key = models.CharField(max_length=ROW_KEY_LENGTH, null=True, blank=True)

    class Meta:
        # The deleted vectors' rows, without a pass over every row of the
        # index: the scan counts them, and the sweep reads them. Not version:
        # an update of a vector would then rewrite this index's entry too.
        indexes = [models.Index(fields=["index_id", "deleted"], name="vectorindex_version_deleted")]
        constraints = [
            models.UniqueConstraint(fields=["index_id", "row_key"], name="vectorindex_version_row_key"),
        ]


class WalEntry(models.Model):
    """One head-index change, written in the transaction that made it."""

    class Op(models.IntegerChoices):
        ADD = wal.ADD, "add head"  # the engine's numbers: it replays these rows
        REMOVE = wal.REMOVE, "remove head"

    pk = models.CompositePrimaryKey("index_id", "lsn")
    index_id = models.BigIntegerField()
    lsn = models.BigIntegerField()
    op = models.PositiveSmallIntegerField(choices=Op.choices)
    head_id = models.BigIntegerField()
    vector = models.BinaryField(null=True)


class Snapshot(models.Model):
    """The serialised head index (hnswlib's own format, never pickle) at an LSN."""

    index = models.ForeignKey(IndexState, on_delete=models.CASCADE, related_name="snapshots")
    generation = models.BigIntegerField()
    lsn = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    size = models.BigIntegerField()
    chunks = models.PositiveIntegerField()
    heads = models.PositiveIntegerField()
    checksum = models.CharField(max_length=64)

    class Meta:
        get_latest_by = "lsn"


class SnapshotChunk(models.Model):
    """Up to 1 MiB of a snapshot, well under MariaDB's max_allowed_packet."""

    pk = models.CompositePrimaryKey("snapshot_id", "number")
    snapshot_id = models.BigIntegerField()
    number = models.PositiveIntegerField()
    data = models.BinaryField()


class JobRun(models.Model):
    """A maintenance job that ran: the last ones of each index, for its admin page (older ones are deleted)."""

    index = models.ForeignKey(IndexState, on_delete=models.CASCADE, related_name="job_runs")
    job = models.CharField(max_length=20)
    detail = models.CharField(max_length=500)
    finished_at = models.DateTimeField()

    class Meta:
        verbose_name = "maintenance job run"
        indexes = [models.Index(fields=["index", "-finished_at"], name="vectorindex_jobrun_recent")]

    def __str__(self) -> str:
        return f"{self.job} on {self.index_id}: {self.detail}"
