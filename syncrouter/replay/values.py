"""Payload values to model values and query parameters, for replay's bulk writes.

The row-by-row path reads a payload value with ``Field.to_python`` and lets
``save()`` turn it into a query parameter with ``Field.get_db_prep_save``. For
a batch of thousands of rows those two calls are most of the Python time: a
duration goes through three regular expressions, every value through several
layers of calls. Here each concrete field gets its two conversions chosen once
per model and database:

- **Reading.** Built-in field classes whose JSON value already is the Python
  value (``str`` for a ``CharField``, ``int`` for an ``IntegerField``...) take
  it as it is. Dates, times, datetimes, UUIDs, decimals and durations parse the
  canonical text the serializer writes with the standard library's parsers.
- **Preparing.** Those same built-in classes need no preparation where the
  driver takes the Python value as it is: native types on SQLite and MySQL;
  on PostgreSQL strings, booleans, floats, dates, times, UUIDs, decimals and
  durations. Integers and aware datetimes go straight to the backend's last
  step (``adapt_integerfield_value``, ``adapt_datetimefield_value``): the
  layers of ``get_db_prep_save`` above it return such values unchanged.

Only exact built-in classes qualify: a subclass may override either step. Any
other field, and any value not in the expected form, goes the general way
(``serialization.decode_value`` then ``get_db_prep_save``), so a shortcut can
only ever be faster, never different; ``tests/test_replay_values.py`` checks
each one against the general way on every backend.
"""
from __future__ import annotations

import datetime
import decimal
import re
import uuid
from functools import lru_cache

from django.db import models

from .. import serialization as ser
from ..capture.generic import object_id_fields

#: Exact field classes whose JSON value, when of the given type, is the Python value.
_NATIVE = {models.CharField: str, models.TextField: str, models.SlugField: str,
           models.EmailField: str, models.URLField: str, models.BooleanField: bool,
           models.IntegerField: int, models.BigIntegerField: int,
           models.SmallIntegerField: int, models.PositiveIntegerField: int,
           models.PositiveBigIntegerField: int, models.PositiveSmallIntegerField: int,
           models.FloatField: float}

#: ``serialization`` writes durations as Django's ``duration_iso_string`` does.
_DURATION = re.compile(r"(-?)P(\d+)DT(\d\d)H(\d\d)M(\d\d)(?:\.(\d{6}))?S\Z")


def _duration(text: str) -> datetime.timedelta:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(text)
    sign, days, hours, minutes, seconds, micro = match.groups()
    value = datetime.timedelta(days=int(days), hours=int(hours), minutes=int(minutes),
                               seconds=int(seconds), microseconds=int(micro or 0))
    return -value if sign else value


def _aware_datetime(text: str) -> datetime.datetime:
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is None:  # to_python decides what a naive value means here
        raise ValueError(text)
    return value


def _time(text: str) -> datetime.time:
    value = datetime.time.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError(text)
    return value


def _finite_decimal(text: str) -> decimal.Decimal:
    value = decimal.Decimal(text)
    if not value.is_finite():
        raise ValueError(text)
    return value


#: Exact field classes whose canonical text a standard-library parser reads.
_PARSED = {models.DateTimeField: _aware_datetime, models.DateField: datetime.date.fromisoformat,
           models.TimeField: _time, models.UUIDField: uuid.UUID,
           models.DecimalField: _finite_decimal, models.DurationField: _duration}

#: Exact classes whose value the PostgreSQL driver takes as it is. Not integers:
#: Django gives psycopg the column's integer type (Int4, Int8...) for them. Not
#: datetimes: a naive one is made aware.
_POSTGRES_AS_IS = ({cls for cls, kind in _NATIVE.items() if kind is not int}
                   | set(_PARSED) - {models.DateTimeField})


def _reader(field, vendor: str, generic: bool):
    """Payload value (not None, not already the Python value) -> Python value.

    Refused (``Unfit``, for the row-by-row path to resolve or report): a generic
    object id travelling as its target's natural key, a value this database
    cannot store as it is (NaN on SQLite).
    """
    parse = _PARSED.get(type(field))

    def general(value):
        if generic and type(value) is list:
            raise Unfit(field.name)
        result = ser.decode_value(field, value)
        if ser.refusal(field, result, vendor) is not None:
            raise Unfit(field.name)
        return result
    if parse is None:
        return general

    def read(value):
        if type(value) is str:
            try:
                return parse(value)
            except ValueError:
                pass
        return general(value)
    return read


def _needs_preparing(field, vendor: str) -> bool:
    cls = type(field.target_field if field.is_relation else field)
    if vendor == "postgresql":
        return cls not in _POSTGRES_AS_IS
    return cls not in _NATIVE


def _preparer(field):
    """Python value (not None) -> query parameter, as ``get_db_prep_save`` gives it."""
    target = field.target_field if field.is_relation else field
    cls, internal = type(target), target.get_internal_type()
    if _NATIVE.get(cls) is int:
        def prepare(value, connection):
            if type(value) is int:
                return connection.ops.adapt_integerfield_value(value, internal)
            return field.get_db_prep_save(value, connection)
    elif cls is models.DateTimeField:
        def prepare(value, connection):
            if type(value) is datetime.datetime and value.tzinfo is not None:
                return connection.ops.adapt_datetimefield_value(value)
            return field.get_db_prep_save(value, connection)
    else:
        prepare = field.get_db_prep_save
    return prepare


class Unfit(Exception):
    """A payload the bulk path does not take; the row-by-row path handles (and reports) it."""


_MISSING = object()


class Columns:
    """Conversions for every concrete field of one model, for one database vendor."""

    def __init__(self, model: type[models.Model], vendor: str):
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.names = [f.column for f in self.fields]
        self._pk = self.fields.index(model._meta.pk)
        self._index = {f.name: i for i, f in enumerate(self.fields)}
        self._natives = [_NATIVE.get(type(f)) for f in self.fields]
        generic = object_id_fields(model._meta.concrete_model)
        self._readers = [None if f.is_relation else _reader(f, vendor, f.attname in generic)
                         for f in self.fields]
        self._nothing = [None] * len(self.fields)
        self._prepared = [(i, _preparer(f)) for i, f in enumerate(self.fields)
                          if _needs_preparing(f, vendor)]
        self._compared = {name: i for name, i in self._index.items()
                          if not getattr(self.fields[i], "auto_now", False)}

    def read(self, fields: dict, parents: dict, base: list | None = None) -> list:
        """The Python values (attname order) of a payload's ``fields``.

        ``parents`` maps (field name, natural key text) to the related row's
        value, found beforehand for the whole batch. Fields left out keep their
        value in ``base`` (the row being changed) or, for a new row, take their
        default. Raises ``Unfit`` for a field this node lacks, a parent not
        found, a value that does not decode, or a field left out with no
        default to take.
        """
        values = list(base) if base is not None else [_MISSING] * len(self.fields)
        index, natives, readers = self._index, self._natives, self._readers
        name = None
        try:  # the hottest loop of a replay: one pass, no calls for native values
            for name, value in fields.items():
                i = index[name]
                if value is None or type(value) is natives[i]:
                    values[i] = value
                elif readers[i] is None:  # a foreign key, by natural key
                    values[i] = parents[(name, ser.dumps(value))]
                else:
                    values[i] = readers[i](value)
        except Exception:  # unknown field, parent not found, bad value
            raise Unfit(name) from None
        if base is None and len(fields) != len(values):
            self._fill_defaults(values)
        return values

    def _value(self, name: str, value, parents: dict):
        return self.read({name: value}, parents, self._nothing)[self._index[name]]

    def holds(self, obj: models.Model, before: dict, parents: dict) -> bool:
        """Whether ``obj`` still has the values of the before-state ``before``.

        The comparison ``conflicts.mismatches`` makes, for a whole batch:
        foreign keys compare by the row their natural key names, which
        ``parents`` holds; automatic dates are not compared.
        """
        for name, base in before.items():
            i = self._compared.get(name)
            if i is None:
                if name in self._index:
                    continue  # an auto_now field
                raise Unfit(name)
            current = getattr(obj, self.fields[i].attname)
            if not ser.same(self._value(name, base, parents), current):
                return False
        return True

    def _fill_defaults(self, values: list) -> None:
        """Fields left out of the payload take their default, as ``Model()`` gives them.

        Automatic dates have no value to take: the row-by-row path decides.
        """
        for i, value in enumerate(values):
            if value is _MISSING:
                field = self.fields[i]
                if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                    raise Unfit(field.name)
                values[i] = field.get_default()

    def prepare(self, values: list, connection) -> list:
        """Query parameters for Python values in attname order."""
        params = list(values)
        for i, prepare in self._prepared:
            if params[i] is not None:
                params[i] = prepare(params[i], connection)
        return params

    def changed(self, current: list, after: list) -> tuple[int, ...]:
        """Indexes of the columns whose value differs between ``current`` and ``after``."""
        return tuple(i for i, (old, new) in enumerate(zip(current, after))
                     if i != self._pk and old != new)

    def subset(self, indexes: tuple[int, ...]) -> list[str]:
        """The column names at ``indexes``, as ``bulk.update`` takes them."""
        return [self.names[i] for i in indexes]

    def pick(self, params: list, indexes: tuple[int, ...]) -> list:
        """The parameters at ``indexes`` and then the primary key, as ``bulk.update`` takes them."""
        return [params[i] for i in indexes] + [params[self._pk]]

    def instance(self, values: list, existing: models.Model | None = None) -> models.Model:
        """The instance about to be written: ``existing`` given these values, or a new one
        built positionally as ``Model.from_db`` does."""
        if existing is None:
            return self.model(*values)
        for field, value in zip(self.fields, values):
            setattr(existing, field.attname, value)
        return existing

    def values_of(self, obj: models.Model) -> list:
        return [getattr(obj, f.attname) for f in self.fields]


@lru_cache(maxsize=None)
def columns(model: type[models.Model], vendor: str) -> Columns:
    """The ``Columns`` of ``model`` for a database ``vendor`` (``connection.vendor``)."""
    return Columns(model, vendor)
