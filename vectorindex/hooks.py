"""Making saves and deletes of indexed models change the index in their transaction.

``post_save`` is sent after ``save()``'s own transaction has ended (in autocommit
mode the row is already committed by then), so a signal cannot put the index
change in the same transaction. Instead, when a model class with a
``VectorIndex`` is prepared, its ``save_base`` is wrapped: the row write and
the index write run in one ``atomic`` block (the caller's transaction when there
is one). ``from_db`` and ``refresh_from_db`` are wrapped to remember the stored
vector, so that a save that leaves the vector alone does no index work.

Django's deserializer (``loaddata``, and whatever restores serialized objects)
saves with ``models.Model.save_base(obj, raw=True)``, naming the base class, so
that no model-defined save runs: a wrapper on the indexed class is never reached
that way. :func:`install` (run by the app's ``ready()``) makes the base class's
``save_base`` hand indexed instances to their class's wrapper, so raw saves
change the index in the row's transaction too, whether or not signals are
muted.

Deletes need no wrapping: Django's deletion collector sends ``post_delete``
inside its transaction, for cascades as well as direct deletes.
"""

from __future__ import annotations

from typing import Any

from django.db import models, router, transaction
from django.db.models.signals import class_prepared, post_delete

from .indexes import VectorIndex

MARK = "_vectorindex_wrapped"
# Set on an instance while its class's wrapper runs Django's save_base: a
# save_base reached from there (a model's own override calling super()) is
# Django's, not the wrapper again.
SAVING = "_vectorindex_saving"


def has_vector_index(model: Any) -> bool:
    return any(isinstance(index, VectorIndex) for index in model._meta.indexes)


def _wrap(model: Any) -> None:
    if getattr(model.__dict__.get("save_base"), MARK, False):
        return
    original_save_base = model.save_base
    original_from_db = model.from_db.__func__

    def save_base(self, raw=False, force_insert=False, force_update=False, using=None, update_fields=None):
        from .index import instances

        using = using or router.db_for_write(self.__class__, instance=self)
        adding = self._state.adding
        routed = instances.route_before_save(self, using, adding, update_fields)
        with transaction.atomic(using=using, savepoint=False):
            # A post_save receiver may save the instance again, through this
            # wrapper: each level puts back what it found.
            outer = self.__dict__.get(SAVING, False)
            self.__dict__[SAVING] = True
            try:
                original_save_base(
                    self,
                    raw=raw,
                    force_insert=force_insert,
                    force_update=force_update,
                    using=using,
                    update_fields=update_fields,
                )
            finally:
                if outer:
                    self.__dict__[SAVING] = outer
                else:
                    del self.__dict__[SAVING]
            instances.after_save(self, using, adding, update_fields, routed)

    def from_db(cls, db, field_names, values, **kwargs):
        from .index import instances

        instance = original_from_db(cls, db, field_names, values, **kwargs)
        instances.remember_loaded(instance)
        return instance

    original_refresh = model.refresh_from_db

    def refresh_from_db(self, using=None, fields=None, *args, **kwargs):
        from .index import instances

        original_refresh(self, using, fields, *args, **kwargs)
        instances.remember_loaded(self, fields)  # only the fields read again

    setattr(save_base, MARK, True)
    save_base.__doc__ = original_save_base.__doc__
    refresh_from_db.__doc__ = original_refresh.__doc__
    model.save_base = save_base
    model.from_db = classmethod(from_db)
    model.refresh_from_db = refresh_from_db


def has_vector_field(model: Any) -> bool:
    from .fields import VectorField

    return any(isinstance(field, VectorField) for field in model._meta.concrete_fields)


def _on_class_prepared(sender: Any, **kwargs: Any) -> None:
    if sender._meta.abstract:
        return
    if has_vector_field(sender):
        from .orm.queryset import give_vector_querysets

        give_vector_querysets(sender)
    if not has_vector_index(sender._meta.concrete_model):
        return
    _wrap(sender._meta.concrete_model)
    # Connected per model (the indexed one and its proxies), not for all: a
    # post_delete receiver turns off Django's fast deletes for its senders.
    post_delete.connect(
        _on_post_delete,
        sender=sender,
        weak=False,
        dispatch_uid=f"vectorindex.hooks.post_delete.{sender._meta.label_lower}",
    )


def _on_post_delete(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    from .index import instances

    instances.on_post_delete(sender, instance, using)


_django_save_base: Any = None


def install(all_models: Any) -> None:
    """Wire indexed models' writes to their index: run once by the app's ``ready()``.

    The models already prepared (*all_models*) are wrapped now; those prepared
    later (a migration's historical models, models made at run time) when
    ``class_prepared`` fires. And ``Model.save_base`` itself passes indexed
    instances to their class's wrapper. Idempotent. Other models pay one
    attribute lookup per save.
    """
    global _django_save_base
    for model in all_models:
        _on_class_prepared(model)
    class_prepared.connect(_on_class_prepared, dispatch_uid="vectorindex.hooks.class_prepared")
    if _django_save_base is not None:
        return
    _django_save_base = models.Model.save_base

    def save_base(self, *args, **kwargs):
        own = type(self).save_base
        if getattr(own, MARK, False) and not self.__dict__.get(SAVING):
            return own(self, *args, **kwargs)
        return _django_save_base(self, *args, **kwargs)

    save_base.__doc__ = _django_save_base.__doc__
    save_base.__wrapped__ = _django_save_base
    models.Model.save_base = save_base


