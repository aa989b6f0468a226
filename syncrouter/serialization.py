"""The payload format: one JSON object per transaction.

    {"v": 2, "model": "app.model", "pk": <pk or null>, "nk": [natural key],
     "fields": {attname-or-name: value},      # insert and update
     "before": {name: value},                  # update: old values of changed fields;
                                               # delete: the row as the producer last saw it
     "old_nk": [natural key before update],    # only when the update changed it
     "m2m": {"field": name, "op": "add|remove|clear", "keys": [natural keys]}}

Why this shape (see docs/architecture.md, "Capture"): a non-auto primary key (UUID) travels so the row keeps its
identity; an auto-increment key does not (the target assigns its own). Foreign
keys travel as the target row's natural key, never as a local id. Values are
JSON-native where possible and otherwise strings that ``Field.to_python`` reads
back, so the receiver needs no knowledge of the producer's backend.

A value travels as the producer's database holds it, exactly. Version 2 added
what JSON alone cannot say: a float field's ``inf``, ``-inf`` and ``nan`` travel
as those strings; a JSON field value holding what JSON numbers cannot carry (an
integer beyond 64 bits) travels as its JSON text under the one key
``JSON_TEXT``; aware datetimes travel in UTC (an offset of seconds, as local
mean time zones had, would otherwise be cut to minutes); the object id of a
generic foreign key to a model with an auto-increment key travels as the
target's natural key (``capture.generic``). Version 1 payloads read as they
always did (``replay.decode``).
"""
from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import uuid
from functools import cache

import orjson
from django.conf import settings
from django.db import connections, models
from django.utils.duration import duration_iso_string

from .exceptions import SyncError

VERSION = 2

#: The one key of the object a JSON field value travels in as its JSON text.
JSON_TEXT = "__syncrouter_json__"

_UTC = datetime.timezone.utc


def _default(value):
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(payload: dict) -> str:
    return orjson.dumps(payload, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


def in_utc(value: datetime.datetime) -> datetime.datetime:
    """An aware datetime in UTC: orjson cuts an offset of seconds (local mean time, as
    Africa/Monrovia kept until 1972) to minutes, which moves the instant."""
    return value.astimezone(_UTC) if value.tzinfo is not None and value.utcoffset() else value


def loads(text: str) -> dict:
    return orjson.loads(text)


def same(a, b) -> bool:
    """``a == b``, except that NaN is the same as NaN: it is one stored value."""
    if a == b or (a != a and b != b):
        return True
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    return False


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
    key = list(key) if isinstance(key, tuple) else key
    if type(key) is list and any(type(item) is datetime.datetime for item in key):
        key = [in_utc(item) if type(item) is datetime.datetime else item for item in key]
    return key


def synced_fields(model: type[models.Model]):
    """Concrete fields that travel: all of them, parents' included (MTI), minus local pks."""
    travels = pk_travels(model)
    for field in model._meta.concrete_fields:
        if field.primary_key and not travels:
            continue
        if field.remote_field and getattr(field.remote_field, "parent_link", False):
            continue  # MTI link: the parent's fields travel in this row
        yield field


class Unsettled(Exception):
    """An instance holds a value other than the one its database stored: an expression
    (``F()``), or a value the database rounds or converts. Capture then reads the
    row back and carries what the database holds."""


#: Types whose values no field's database changes on the way in (but see the
#: field kinds below) and that are never expressions.
_PLAIN = frozenset({str, int, bool, type(None), float, decimal.Decimal, uuid.UUID,
                    datetime.date, datetime.datetime, datetime.time, datetime.timedelta,
                    bytes, memoryview})
_INT64 = (-2 ** 63, 2 ** 64 - 1)  # what orjson writes and reads back as integers


def _plain(value, settled: bool, vendor: str):
    if settled or type(value) in _PLAIN or not hasattr(value, "resolve_expression"):
        return value
    raise Unsettled


def _float(value, settled: bool, vendor: str):
    if type(value) is float:
        return value if math.isfinite(value) else repr(value)  # 'inf', '-inf', 'nan'
    if value is None or type(value) is int or settled:
        return value
    raise Unsettled  # text, a decimal, an expression: the database converts it


def _decimal(field):
    places = field.decimal_places
    # SQLite keeps a decimal as a double: beyond 15 digits it holds a rounded value.
    wide = (field.max_digits or 0) > 15

    def encode(value, settled: bool, vendor: str):
        if value is None or settled:
            return value
        if type(value) is decimal.Decimal and value.is_finite():
            sign, digits, exponent = value.as_tuple()
            if exponent >= -places and not (wide and vendor == "sqlite" and len(digits) > 15):
                return value
        raise Unsettled  # more places than the column keeps, or not a Decimal
    return encode


def _datetime(value, settled: bool, vendor: str):
    if type(value) is datetime.datetime and (value.tzinfo is not None or not settings.USE_TZ):
        return in_utc(value)
    if value is None or settled:
        return in_utc(value) if isinstance(value, datetime.datetime) else value
    raise Unsettled  # naive under USE_TZ (the database holds it in UTC), text, a date


def _date(value, settled: bool, vendor: str):
    if value is None or settled or type(value) is datetime.date:
        return value
    raise Unsettled  # a datetime (the database keeps its date in the current zone), text


def _time(value, settled: bool, vendor: str):
    if value is None or settled or (type(value) is datetime.time and value.tzinfo is None):
        return value
    raise Unsettled


def _file(value, settled: bool, vendor: str):
    if value is None or type(value) is str or settled or not hasattr(
            value, "resolve_expression"):
        return None if value is None else str(value)  # what ``FileField`` stores: its name
    raise Unsettled


def _json_native(value, vendor: str) -> bool:
    """Whether ``value`` travels as itself and reads back as the database holds it."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return _INT64[0] <= value <= _INT64[1]
    if kind is float:
        # PostgreSQL's jsonb holds numbers as decimals: 1e+16 and beyond read back
        # as integers, which are not always that float.
        return math.isfinite(value) and (vendor != "postgresql" or -1e16 < value < 1e16)
    if kind is list:
        return all(_json_native(item, vendor) for item in value)
    if kind is dict:
        return (not (len(value) == 1 and JSON_TEXT in value)
                and all(type(key) is str and _json_native(item, vendor)
                        for key, item in value.items()))
    return False


def _json(field):
    def encode(value, settled: bool, vendor: str):
        if value is None or _json_native(value, vendor):
            return value
        if settled:
            return {JSON_TEXT: json.dumps(value, cls=field.encoder)}
        raise Unsettled  # the database holds the encoder's text, read back
    return encode


def _encoder(field):
    """How one non-relation field's value travels: ``encode(value, settled, vendor)``."""
    if isinstance(field, models.FloatField):
        return _float
    if isinstance(field, models.DecimalField):
        return _decimal(field)
    if isinstance(field, models.DateTimeField):
        return _datetime
    if isinstance(field, models.DateField):
        return _date
    if isinstance(field, models.TimeField):
        return _time
    if isinstance(field, models.JSONField):
        return _json(field)
    if isinstance(field, models.FileField):
        return _file
    return _plain


@cache
def _encoders(model: type[models.Model]) -> dict:
    """name -> (field, encode or None for a relation, its generic foreign key or None,
    whether a value of a ``_PLAIN`` type travels as it is), per synced field of a concrete
    model."""
    from .capture import generic

    keys = generic.object_id_fields(model)
    entries = {}
    for field in synced_fields(model):
        encode = None if field.is_relation else _encoder(field)
        key = keys.get(field.attname)
        entries[field.name] = (field, encode, key, encode is _plain and key is None)
    return entries


def _vendor(instance) -> str:
    alias = instance._state.db
    return connections[alias].vendor if alias else ""


def _related_key(instance, field, settled: bool):
    value = getattr(instance, field.attname)
    if value is None:
        return None
    if not settled and type(value) not in _PLAIN and hasattr(value, "resolve_expression"):
        raise Unsettled
    related = getattr(instance, field.name)
    try:
        return natural_key_of(related)
    except SyncError as exc:
        raise SyncError(
            f"{instance._meta.label_lower}.{field.name} points to "
            f"{related._meta.label_lower}, which has no natural_key(): {exc}") from None


def _encode(instance, field, encode, generic_key, settled: bool, vendor: str):
    if encode is None:
        return _related_key(instance, field, settled)
    value = encode(getattr(instance, field.attname), settled, vendor)
    if generic_key is not None and value is not None:
        from .capture import generic

        return generic.encode_object_id(instance, generic_key, value, strict=not settled)
    return value


def encode_field(instance: models.Model, field, settled: bool = True) -> object:
    """The travelling value of one field of ``instance``, which holds what its database
    stores (``settled``) or may hold values it stores otherwise (``Unsettled``)."""
    entry = _encoders(instance._meta.concrete_model).get(field.name)
    if entry is None:  # a field that does not travel (a local primary key, an MTI link)
        return _related_key(instance, field, settled) if field.is_relation else \
            field.value_from_object(instance)
    return _encode(instance, *entry[:3], settled, _vendor(instance))


def row_fields(instance: models.Model, settled: bool = True) -> dict:
    """name -> travelling value of every synced field of ``instance``, which holds what
    its database stores (``settled``), or may not: then ``Unsettled`` if it does not."""
    vendor = _vendor(instance)
    row = {}
    for name, (field, encode, generic_key, plain) in \
            _encoders(instance._meta.concrete_model).items():
        if plain:  # most fields: no call at all for a value of a plain type
            value = getattr(instance, field.attname)
            if type(value) in _PLAIN:
                row[name] = value
                continue
        row[name] = _encode(instance, field, encode, generic_key, settled, vendor)
    return row


def refusal(field, value, vendor: str) -> str | None:
    """Why ``vendor``'s database cannot store ``value`` in ``field`` as it is, or None."""
    if vendor == "sqlite" and type(value) is float and value != value \
            and isinstance(field, models.FloatField):
        return "SQLite stores NaN as NULL"
    return None


def decode_value(field, value):
    """Python value of a non-relation field from its travelling value."""
    if value is None:
        return None
    if isinstance(field, models.BinaryField):
        return base64.b64decode(value)
    if isinstance(field, models.JSONField):
        if type(value) is dict and len(value) == 1 and JSON_TEXT in value:
            return json.loads(value[JSON_TEXT], cls=field.decoder)
        return value
    return field.to_python(value)


def pk_value(instance: models.Model):
    return str(instance.pk) if isinstance(instance.pk, uuid.UUID) else instance.pk
