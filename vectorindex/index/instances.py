"""Model instances and the index: which rows a save, a bulk write or a delete changed, and when to index them.

The hooks (vectorindex.hooks) and the queryset's bulk operations
(vectorindex.orm.queryset) call these; :mod:`.writes` does the index work.
An instance remembers the stored bytes of its vectors when it is loaded
(``LOADED``), so that a save that leaves a vector alone does no index work.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..engine import codec
from . import writes
from .registry import Declared, indexes_of

_local = threading.local()


LOADED = "_vectorindex_loaded"


def remember_loaded(instance: Any, update_fields: Any = None) -> None:
    """Note the stored bytes of each indexed vector, and whose row holds them, to spot real changes later.

    After a save with *update_fields*, only the fields it wrote: a vector
    changed on the instance but left out of them is not what the row holds.
    """
    pk, known = instance.__dict__.get(LOADED, (None, {}))
    loaded = dict(known) if update_fields is not None and pk == instance.pk else {}
    deferred = instance.get_deferred_fields()
    for declared in indexes_of(type(instance)):
        field = declared.field
        if field.attname in deferred:
            continue
        if update_fields is not None and field.name not in update_fields and field.attname not in update_fields:
            continue
        loaded[field.attname] = _stored_bytes(instance.__dict__.get(field.attname))
    instance.__dict__[LOADED] = (instance.pk, loaded)


def _stored_bytes(value: Any) -> bytes | None:
    """The bytes a vector is stored as. A vector as the database gave it (a float32 array) is copied as it is:
    every instance a query returns passes here, and checking its values again cost a fifth of a 10-row fetch."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.dtype == codec.STORAGE_DTYPE and value.ndim == 1:
        return value.tobytes()
    return codec.to_bytes(codec.coerce(value, None))


def _changed_value(instance: Any, declared: Declared, adding: bool, update_fields: Any) -> tuple[bool, Any]:
    """(does this save change the indexed vector?, its value).

    What was loaded counts only for the row it was loaded from: an instance
    copied by setting its pk to None (or to another key) and saved writes a
    row whose vector the index has not seen. A save nested in another (a
    ``post_save`` receiver saving the instance again) notes what it indexed,
    so that the outer save, still "adding", does not index it again.
    """
    field = declared.field
    if update_fields is not None and field.name not in update_fields and field.attname not in update_fields:
        return False, None
    if field.attname in instance.get_deferred_fields():
        return False, None
    value = getattr(instance, field.attname)
    pk, loaded = instance.__dict__.get(LOADED, (None, {}))
    if pk is not None and pk == instance.pk and field.attname in loaded:
        try:
            current = None if value is None else codec.to_bytes(codec.coerce(value, field.dimensions))
        except codec.InvalidVector:
            return True, value  # the field refuses it with a ValidationError when the row is written
        if current == loaded[field.attname]:
            return False, None
    return True, value


def changed_rows(instance: Any, declared: Declared, adding: bool, update_fields: Any) -> list[tuple[Any, Any]]:
    changed, value = _changed_value(instance, declared, adding, update_fields)
    return [(instance.pk, value)] if changed else []


def route_before_save(instance: Any, using: str, adding: bool, update_fields: Any) -> dict[str, writes.Routed]:
    """Start routing the vectors a save is about to change, while its row is written.

    By index name. A value that cannot be coerced is left for the save to
    reject, as it would with no index.
    """
    routed = {}
    for declared in indexes_of(type(instance)):
        changed, value = _changed_value(instance, declared, adding, update_fields)
        if changed and value is not None:
            try:
                ahead = writes.route_ahead(declared, using, [value])
            except (TypeError, ValueError):
                continue
            if ahead is not None:
                routed[declared.name] = ahead
    return routed


def after_save(
    instance: Any, using: str, adding: bool, update_fields: Any, routed: dict[str, writes.Routed] | None = None
) -> None:
    """Index what the save changed; *routed* from :func:`route_before_save`, before the save."""
    for declared in indexes_of(type(instance)):
        rows = changed_rows(instance, declared, adding, update_fields)
        ahead = (routed or {}).get(declared.name)
        if ahead is not None and not (rows and ahead.routes(rows[0][1], declared.field)):
            ahead = None  # changed since (by a pre_save receiver, say)
        writes.index_vectors(declared, using, rows, routed=ahead, new=adding)
    remember_loaded(instance, update_fields)


@contextmanager
def handled_by_caller():
    """Inside, ``QuerySet.update()`` leaves the index to the caller.

    ``bulk_update()`` is built on ``update()``; it indexes exactly the objects
    whose vectors changed, once, itself.
    """
    previous = getattr(_local, "caller_indexes", False)
    _local.caller_indexes = True
    try:
        yield
    finally:
        _local.caller_indexes = previous


def caller_indexes() -> bool:
    return getattr(_local, "caller_indexes", False)


@contextmanager
def bulk_deleting():
    """Gather the deletes of a queryset's ``delete()`` and unindex them at once.

    The collector sends ``post_delete`` per instance, cascades included; inside
    this block those are gathered per model and unindexed in a few statements
    when the delete is done, still inside its transaction.
    """
    outer = getattr(_local, "pending", None)
    pending: dict[tuple[str, Any], list] = defaultdict(list)
    _local.pending = pending
    try:
        yield
        for (using, model), pks in pending.items():
            for declared in indexes_of(model):
                writes.unindex(declared, using, pks)
    finally:
        _local.pending = outer


def on_post_delete(sender: Any, instance: Any, using: str) -> None:
    pending = getattr(_local, "pending", None)
    if pending is not None:
        pending[(using, sender._meta.concrete_model)].append(instance.pk)
        return
    for declared in indexes_of(sender):
        writes.unindex(declared, using, [instance.pk])
