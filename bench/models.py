"""The benchmarks' model: a row of a data set, with a vector of the data set's dimension.

The same fields as the demo's ``Package``; its ``embedding`` has
``settings.BENCH_DIMENSIONS`` dimensions. The column is a BLOB whatever the
dimension, so one table serves every data set: a run on another data set
reloads the rows (:func:`bench.common.load`) and the index it declares is
reset by ``migrate`` when the dimension changed since its build.
"""

from django.conf import settings
from django.db import models

from vectorindex import VectorField, VectorIndex, VectorManager

INDEX = "bench_embedding"


class Row(models.Model):
    name = models.CharField(max_length=200, unique=True)
    summary = models.TextField()
    embedding = VectorField(dimensions=settings.BENCH_DIMENSIONS)

    objects = VectorManager()

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name=INDEX, distance="cosine")]
