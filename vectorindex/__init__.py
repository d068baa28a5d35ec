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

The names are imported on first use (PEP 562), so that importing a part of the
package that needs no Django — ``vectorindex.engine`` — does not import Django.
Nothing is connected at import time: the app's ``ready()`` does the wiring.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.9.0"

# Each public name and the module that defines it.
_PUBLIC = {
    "BitField": "fields",
    "CosineDistance": "expressions",
    "Distance": "expressions",
    "HalfVector": "values",
    "HalfVectorField": "fields",
    "HammingDistance": "expressions",
    "HnswIndex": "indexes",
    "IvfflatIndex": "indexes",
    "JaccardDistance": "expressions",
    "L1Distance": "expressions",
    "L2Distance": "expressions",
    "MaxInnerProduct": "expressions",
    "SparseVector": "values",
    "SparseVectorField": "fields",
    "VectorExtension": "operations",
    "VectorField": "fields",
    "VectorFormField": "forms",
    "VectorPreviewWidget": "forms",
    "VectorWidget": "forms",
    "VectorIndex": "indexes",
    "VectorManager": "orm.queryset",
    "VectorQuerySet": "orm.queryset",
}

__all__ = [
    "BitField",
    "CosineDistance",
    "Distance",
    "HalfVector",
    "HalfVectorField",
    "HammingDistance",
    "HnswIndex",
    "IvfflatIndex",
    "JaccardDistance",
    "L1Distance",
    "L2Distance",
    "MaxInnerProduct",
    "SparseVector",
    "SparseVectorField",
    "VectorExtension",
    "VectorField",
    "VectorFormField",
    "VectorIndex",
    "VectorManager",
    "VectorPreviewWidget",
    "VectorQuerySet",
    "VectorWidget",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # migrations write vectorindex.fields.VectorField after a bare ``import vectorindex``
        return import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


if TYPE_CHECKING:
    from .expressions import (
        CosineDistance,
        Distance,
        HammingDistance,
        JaccardDistance,
        L1Distance,
        L2Distance,
        MaxInnerProduct,
    )
    from .fields import BitField, HalfVectorField, SparseVectorField, VectorField
    from .forms import VectorFormField, VectorPreviewWidget, VectorWidget
    from .indexes import HnswIndex, IvfflatIndex, VectorIndex
    from .operations import VectorExtension
    from .orm.queryset import VectorManager, VectorQuerySet
    from .values import HalfVector, SparseVector
