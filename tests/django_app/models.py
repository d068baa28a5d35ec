"""pgvector-python's Django test model (tests/test_django.py at v0.4.2), declared as it declares it.

Only its names come from vectorindex instead of pgvector.django. Left out:
PostgreSQL's ArrayField ones.
"""

from django.contrib.postgres.indexes import OpClass
from django.db import models
from django.db.models.functions import Cast

from vectorindex import BitField, HalfVectorField, HnswIndex, IvfflatIndex, SparseVectorField, VectorField


class Item(models.Model):
    embedding = VectorField(dimensions=3, null=True, blank=True)
    half_embedding = HalfVectorField(dimensions=3, null=True, blank=True)
    binary_embedding = BitField(length=3, null=True, blank=True)
    sparse_embedding = SparseVectorField(dimensions=3, null=True, blank=True)

    class Meta:
        app_label = "django_app"
        indexes = [
            IvfflatIndex(name="ivfflat_idx", fields=["embedding"], lists=100, opclasses=["vector_l2_ops"]),
            HnswIndex(name="hnsw_idx", fields=["embedding"], m=16, ef_construction=64, opclasses=["vector_l2_ops"]),
            HnswIndex(
                OpClass(Cast("embedding", HalfVectorField(dimensions=3)), name="halfvec_l2_ops"),
                name="hnsw_half_precision_idx",
                m=16,
                ef_construction=64,
            ),
        ]
