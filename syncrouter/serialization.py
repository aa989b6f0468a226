"""The payload format: one JSON object per transaction.

    {"v": 1, "model": "app.model", "pk": <pk or null>, "nk": [natural key],
     "fields": {attname-or-name: value},      # insert and update
     "before": {name: value},                  # update: old values of changed fields;
                                               # delete: the row as the producer last saw it
     "old_nk": [natural key before update],    # only when the update changed it
     "m2m": {"field": name, "op": "add|remove|clear", "keys": [natural keys]}}

Why this shape (see docs/architecture.md, "Capture"): a non-auto primary key (UUID) travels so the row
keeps its identity; an auto-increment key does not (the target assigns its own).
Foreign keys travel as the target row's natural key, never as a local id. Values
are JSON-native where possible and otherwise strings that ``Field.to_python``
reads back, so the receiver needs no knowledge of the producer's backend.
"""
from __future__ import annotations

import base64
import datetime
import decimal
import uuid

import orjson
from django.db import models
from django.utils.duration import duration_iso_string

from .exceptions import SyncError

VERSION = 1


def _default(value):
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, (bytes, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(payload: dict) -> str:
    return orjson.dumps(payload, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


def loads(text: str) -> dict:
    return orjson.loads(text)


def pk_travels(model: type[models.Model]) -> bool:
    """An auto-increment primary key is local to each node; any other pk travels."""
    pk = model._meta.pk
    while pk.remote_field and pk.remote_field.parent_link:
        pk = pk.remote_field.model._meta.pk
    return not isinstance(pk, models.AutoField)


def natural_key_of(instance: models.Model) -> list:
    try:
        key = instance.natural_key()
    except AttributeError:
        if not hasattr(instance, "natural_key"):
            raise SyncError(
                f"{instance._meta.label_lower} has no natural_key() method; it is needed to "
                "find the row on another node.") from None
        raise
    return list(key) if isinstance(key, tuple) else key


def synced_fields(model: type[models.Model]):
    """Concrete fields that travel: all of them, parents' included (MTI), minus local pks."""
    travels = pk_travels(model)
    for field in model._meta.concrete_fields:
        if field.primary_key and not travels:
            continue
        if field.remote_field and getattr(field.remote_field, "parent_link", False):
            continue  # MTI link: the parent's fields travel in this row
        yield field


def encode_field(instance: models.Model, field) -> object:
    """The travelling value of one field of ``instance``."""
    if field.is_relation:
        if getattr(instance, field.attname) is None:
            return None
        related = getattr(instance, field.name)
        try:
            return natural_key_of(related)
        except SyncError as exc:
            raise SyncError(
                f"{instance._meta.label_lower}.{field.name} points to "
                f"{related._meta.label_lower}, which has no natural_key(): {exc}") from None
    return field.value_from_object(instance)


def encode_value(field, value, using: str) -> object:
    """The travelling value of ``field`` given its stored (attname) value."""
    if field.is_relation and value is not None:
        related = field.remote_field.model._base_manager.using(using).get(
            **{field.target_field.attname: value})
        return natural_key_of(related)
    return value


def row_fields(instance: models.Model) -> dict:
    return {field.name: encode_field(instance, field) for field in synced_fields(type(instance))}


def decode_value(field, value):
    """Python value of a non-relation field from its travelling value."""
    if value is None:
        return None
    if isinstance(field, models.BinaryField):
        return base64.b64decode(value)
    if isinstance(field, models.JSONField):
        return value
    return field.to_python(value)


def pk_value(instance: models.Model):
    return str(instance.pk) if isinstance(instance.pk, uuid.UUID) else instance.pk
