"""django-vectorindex: vector fields and a transactional ANN index inside your database.

The public API::

    from vectorindex import VectorField, VectorManager, L2Distance

    class Item(models.Model):
        embedding = VectorField(dimensions=384)
        objects = VectorManager()

    Item.objects.order_by(L2Distance("embedding", query))[:10]
"""

from .expressions import CosineDistance, Distance, L1Distance, L2Distance, MaxInnerProduct
from .fields import VectorField
from .forms import VectorFormField, VectorWidget
from .query import VectorManager, VectorQuerySet

__all__ = [
    "CosineDistance",
    "Distance",
    "L1Distance",
    "L2Distance",
    "MaxInnerProduct",
    "VectorField",
    "VectorFormField",
    "VectorManager",
    "VectorQuerySet",
    "VectorWidget",
]
