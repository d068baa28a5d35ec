"""django-vectorindex: vector fields and a transactional ANN index inside your database.

The public API::

    from vectorindex import VectorField, VectorManager, L2Distance

    class Item(models.Model):
        embedding = VectorField(dimensions=384)
        objects = VectorManager()

    Item.objects.order_by(L2Distance("embedding", query))[:10]

With ``VectorIndex(fields=["embedding"], name=..., distance="l2")`` in the model's
``Meta.indexes`` and ``manage.py vectorindex build``, that query is answered by
the approximate index; without one, exactly.
"""

__version__ = "0.9.0"

from . import hooks  # noqa: F401  (wires saves of indexed models to their index)
from .expressions import CosineDistance, Distance, L1Distance, L2Distance, MaxInnerProduct
from .fields import VectorField
from .forms import VectorFormField, VectorWidget
from .indexes import VectorIndex
from .query import VectorManager, VectorQuerySet

__all__ = [
    "CosineDistance",
    "Distance",
    "L1Distance",
    "L2Distance",
    "MaxInnerProduct",
    "VectorField",
    "VectorFormField",
    "VectorIndex",
    "VectorManager",
    "VectorQuerySet",
    "VectorWidget",
]
