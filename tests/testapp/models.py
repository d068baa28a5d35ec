"""Models the test suite runs against."""

import uuid

from django.db import models

from vectorindex import HalfVectorField, HnswIndex, SparseVectorField, VectorField, VectorIndex, VectorManager


class Category(models.Model):
    name = models.CharField(max_length=50)


class Item(models.Model):
    name = models.CharField(max_length=100, blank=True)
    group = models.IntegerField(default=0)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL)
    embedding = VectorField(dimensions=8)

    objects = VectorManager()

    def __str__(self) -> str:
        return self.name or f"Item {self.pk}"


class Document(models.Model):
    """Two vector fields, one of them nullable."""

    title = models.CharField(max_length=100, blank=True)
    embedding = VectorField(dimensions=3, null=True, blank=True)
    summary_embedding = VectorField(dimensions=3, null=True, blank=True)

    objects = VectorManager()


class Plain(models.Model):
    """A vector field on a model whose manager is Django's own."""

    embedding = VectorField(dimensions=2)


class Point(models.Model):
    """An indexed model (L2) for the index's tests."""

    group = models.IntegerField(default=0, db_index=True)
    embedding = VectorField(dimensions=16, null=True)

    objects = VectorManager()

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="point_embedding")]


class Passage(models.Model):
    """An indexed model (cosine, 384-d) for real embeddings."""

    name = models.CharField(max_length=200)
    embedding = VectorField(dimensions=384)

    objects = VectorManager()

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="passage_embedding", distance="cosine")]


class Streamed(models.Model):
    """An indexed model with small posting lists, so that maintenance has work."""

    embedding = VectorField(dimensions=16)

    objects = VectorManager()

    class Meta:
        indexes = [
            VectorIndex(fields=["embedding"], name="streamed_embedding", posting_limit=64, merge_below=4, defragment_rows=8)
        ]


class Shelf(models.Model):
    """An indexed model whose index was renamed by a migration (RenameIndex)."""

    embedding = VectorField(dimensions=4)

    objects = VectorManager()

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="shelf_vectors")]


class Quarter(models.Model):
    """Indexed with merge_below a quarter of posting_limit 24: the largest vectorindex.E101 allows."""

    embedding = VectorField(dimensions=64)

    objects = VectorManager()

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="quarter_embedding", posting_limit=24, merge_below=6)]


class Smallest(models.Model):
    """Indexed with the smallest posting_limit and the largest merge_below E101 allows for it."""

    embedding = VectorField(dimensions=64)

    objects = VectorManager()

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="smallest_embedding", posting_limit=16, merge_below=4)]


class Memo(models.Model):
    """Indexed through the migrations makemigrations wrote as it changed: created as Note (0007),
    its indexed field renamed (0008), an option changed together with another field, which
    SQLite alters by remaking the table (0009), and the model renamed (0010)."""

    title = models.CharField(max_length=80, blank=True)
    vectors = VectorField(dimensions=4)

    objects = VectorManager()

    class Meta:
        indexes = [VectorIndex(fields=["vectors"], name="renamed_vectors", probes=64)]


class ClipQuerySet(models.QuerySet):
    def short(self):
        return self.filter(seconds__lt=60)


class ClipManager(models.Manager.from_queryset(ClipQuerySet)):
    use_in_migrations = True


class Clip(models.Model):
    """Declared as a pgvector user declares a model: HnswIndex with m, ef_construction and an operator
    class, and the project's own manager and queryset (no VectorManager)."""

    seconds = models.IntegerField(default=0)
    embedding = VectorField(dimensions=8)

    objects = ClipManager()

    class Meta:
        indexes = [
            HnswIndex(name="clip_hnsw", fields=["embedding"], m=16, ef_construction=64, opclasses=["vector_cosine_ops"])
        ]


class Frame(models.Model):
    """Half vectors (float16 on disk), indexed with pgvector's halfvec operator class."""

    embedding = HalfVectorField(dimensions=16, null=True)

    class Meta:
        indexes = [HnswIndex(name="frame_half", fields=["embedding"], opclasses=["halfvec_l2_ops"])]


class Bag(models.Model):
    """A bag of words: sparse vectors of any length (no dimensions declared), and one of a fixed length."""

    title = models.CharField(max_length=100, blank=True)
    words = SparseVectorField(null=True, blank=True)
    terms = SparseVectorField(dimensions=5000, null=True, blank=True)


class Ticket(models.Model):
    """A UUID primary key: the index gives each vector an id of its own and keeps the key beside it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=40, blank=True)
    embedding = VectorField(dimensions=16, null=True)

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="ticket_embedding", posting_limit=32, merge_below=4)]


class Sku(models.Model):
    """A string primary key, indexed with float32 entries (no re-rank from the rows)."""

    code = models.CharField(max_length=40, primary_key=True)
    embedding = VectorField(dimensions=16, null=True)

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="sku_embedding", payload="float32")]
