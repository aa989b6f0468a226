"""Generic foreign keys travel by the natural key of their target.

A ``GenericForeignKey`` is two plain columns: a foreign key to ``ContentType``, which
travels by its natural key ``(app_label, model)`` like any foreign key, and an object
id holding the target's primary key. Where the target's key is auto-increment, each
node assigns its own: the producer's id names another row on the server, or none. So
the object id of such a target travels as the target's natural key, and replay finds
the row it names there (``replay.decode``). A target whose key travels (a UUID) keeps
its id. A target that cannot be named that way (no ``natural_key()``, or gone) is
refused before the write, naming the field.
"""
from __future__ import annotations

from functools import cache

from django.apps import apps
from django.db import models

from .. import serialization as ser
from ..exceptions import SyncError


@cache
def object_id_fields(model: type[models.Model]) -> dict:
    """attname of each object id column of ``model`` (parents' included) -> its
    ``GenericForeignKey``."""
    if not apps.is_installed("django.contrib.contenttypes"):
        return {}
    from django.contrib.contenttypes.fields import GenericForeignKey

    found = {}
    for owner in (model, *model._meta.get_parent_list()):
        for gfk in owner._meta.private_fields:
            if isinstance(gfk, GenericForeignKey):
                found[owner._meta.get_field(gfk.fk_field).attname] = gfk
    return found


def _target_model(instance, gfk, using: str):
    from django.contrib.contenttypes.models import ContentType

    ct_id = getattr(instance, instance._meta.get_field(gfk.ct_field).attname)
    if ct_id is None:
        return None
    return ContentType.objects.db_manager(using).get_for_id(ct_id).model_class()


def encode_object_id(instance, gfk, value, using: str | None = None, strict: bool = True):
    """The travelling object id: ``value`` itself, or the natural key of the row it names
    when that row's model has an auto-increment key. ``SyncError`` if the target has no
    natural key, or, if ``strict`` (a value about to be written), does not exist; a row
    as stored (a delete's before-state) keeps a dangling id, so its delete is not refused."""
    using = using or instance._state.db
    model = _target_model(instance, gfk, using)
    if model is None or ser.pk_travels(model):
        return value
    label = f"{instance._meta.label_lower}.{gfk.name}"
    target = gfk.get_cached_value(instance, default=None)
    pk = model._meta.pk.to_python(value)
    if target is None or target._meta.concrete_model is not model._meta.concrete_model \
            or target.pk != pk:
        target = model._base_manager.using(using).filter(pk=pk).first()
        if target is None and not strict:
            return value
        if target is None:
            raise SyncError(
                f"{label} points to {model._meta.label_lower} {value!r}, which does not exist "
                f"on {using!r}: the target of a generic foreign key to a model with an "
                "auto-increment primary key travels by its natural key, so it must exist.")
        gfk.set_cached_value(instance, target)
    try:
        return ser.natural_key_of(target)
    except SyncError as exc:
        raise SyncError(f"{label} points to {model._meta.label_lower} {value!r}: {exc} "
                        "(its auto-increment primary key differs on every node).") from None


def check(instance, using: str) -> None:
    """Refuse, before the write, an object id that could not travel (``SyncError``)."""
    for attname, gfk in object_id_fields(instance._meta.concrete_model).items():
        value = getattr(instance, attname)
        if value is not None and not hasattr(value, "resolve_expression"):
            encode_object_id(instance, gfk, value, using)
