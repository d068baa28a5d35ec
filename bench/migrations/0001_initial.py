"""The benchmarks' table. The vectors' dimension is the run's (``settings.BENCH_DIMENSIONS``):
it is no part of the column (a BLOB), only of the field, so the migration takes it from the settings too."""

from django.conf import settings
from django.db import migrations, models

import vectorindex


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Row",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=200, unique=True)),
                ("summary", models.TextField()),
                ("embedding", vectorindex.VectorField(dimensions=settings.BENCH_DIMENSIONS)),
            ],
            options={
                "indexes": [vectorindex.VectorIndex(distance="cosine", fields=["embedding"], name="bench_embedding")],
            },
        ),
    ]
