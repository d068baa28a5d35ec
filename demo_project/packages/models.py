"""One model: a PyPI package, its summary, and the summary's sentence embedding."""

from django.db import models

from vectorindex import VectorField, VectorIndex, VectorManager


class Package(models.Model):
    name = models.CharField(max_length=200, unique=True)
    summary = models.TextField()
    # all-MiniLM-L6-v2 embedding of "<name>: <summary>", unit length: compare
    # with CosineDistance (or MaxInnerProduct, which ranks the same).
    embedding = VectorField(dimensions=384)

    objects = VectorManager()

    class Meta:
        # Approximate nearest neighbours by cosine distance, kept current by
        # every save; `manage.py vectorindex build package_embedding` fills it.
        indexes = [VectorIndex(fields=["embedding"], name="package_embedding", distance="cosine")]

    def __str__(self) -> str:
        return self.name
