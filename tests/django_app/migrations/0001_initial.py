"""pgvector-python's test migration (tests/test_django.py at v0.4.2), with vectorindex's names."""

from django.contrib.postgres.indexes import OpClass
from django.db import migrations, models
from django.db.models.functions import Cast

import vectorindex


class Migration(migrations.Migration):
    initial = True

    operations = [
        vectorindex.VectorExtension(),
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("embedding", vectorindex.VectorField(dimensions=3, null=True, blank=True)),
                ("half_embedding", vectorindex.HalfVectorField(dimensions=3, null=True, blank=True)),
                ("binary_embedding", vectorindex.BitField(length=3, null=True, blank=True)),
                ("sparse_embedding", vectorindex.SparseVectorField(dimensions=3, null=True, blank=True)),
            ],
        ),
        migrations.AddIndex(
            model_name="item",
            index=vectorindex.IvfflatIndex(fields=["embedding"], lists=100, name="ivfflat_idx", opclasses=["vector_l2_ops"]),
        ),
        migrations.AddIndex(
            model_name="item",
            index=vectorindex.HnswIndex(
                fields=["embedding"], m=16, ef_construction=64, name="hnsw_idx", opclasses=["vector_l2_ops"]
            ),
        ),
        migrations.AddIndex(
            model_name="item",
            index=vectorindex.HnswIndex(
                OpClass(Cast("embedding", vectorindex.HalfVectorField(dimensions=3)), name="halfvec_l2_ops"),
                m=16,
                ef_construction=64,
                name="hnsw_half_precision_idx",
            ),
        ),
    ]
