"""Find many rows by natural key in a few queries.

``get_by_natural_key`` finds one row per query (two or three with joins), which
is most of the cost of replaying a row one at a time (benchmarks/RESULTS.md). Most
natural keys are a chain of attributes (``self.household_member.natural_key()
+ (self.visit_code,)``): calling ``natural_key()`` on a recording stand-in for
the instance reveals the lookups behind each element
(``household_member__subject_identifier``, ``visit_code``), and with them a
whole batch of keys is found with one filtered query. A natural key that is not
such a chain (it formats, computes, branches on values) has no lookups and its
keys are found one at a time with the model's own ``get_by_natural_key``.
"""
from __future__ import annotations

from functools import cache

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connections, models
from django.db.models import F

from .. import serialization as ser
from ..lookups import AnyOf, AnyRowOf
from ..params import chunk_size

#: Keys per query on PostgreSQL, which takes each column's keys as one array
#: (``lookups.AnyRowOf``): one query for a whole batch beats many small ones by far.
#: Elsewhere each part of each key takes a parameter (``params.chunk_size``).
ARRAY_CHUNK = 10_000


class _Leaf:
    def __init__(self, path: tuple):
        self.path = path


class _Recorder:
    """Stands in for an instance: attribute access records the lookup path."""

    def __init__(self, model, path: tuple = ()):
        self._model, self._path = model, path

    def __getattr__(self, name):
        if name == "natural_key":
            return lambda: self._model.natural_key(self)
        field = self._model._meta.get_field(name)
        if field.is_relation and (field.many_to_one or field.one_to_one) and field.concrete:
            return _Recorder(field.related_model, self._path + (name,))
        if field.is_relation:
            raise FieldDoesNotExist(name)
        return _Leaf(self._path + (name,))


@cache
def lookups(model: type[models.Model]) -> tuple[str, ...] | None:
    """The ORM lookups whose values make up ``model``'s natural key, or None if unknown."""
    try:
        key = model.natural_key(_Recorder(model))
    except Exception:  # any computed key: fall back to get_by_natural_key
        return None
    key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    if not key or not all(isinstance(part, _Leaf) for part in key):
        return None
    return tuple("__".join(part.path) for part in key)


def _normal(key) -> str:
    return ser.dumps(key if isinstance(key, list) else [key])


#: What ``resolve`` gives for a key that matches more than one row.
AMBIGUOUS = object()


class LookupFailed(Exception):
    """Keys that cannot be looked up at all (a value the field cannot take, a key of the
    wrong length): the batch must not read "not found" into that."""


def resolve(model: type[models.Model], keys, alias: str) -> dict[str, object]:
    """Natural key (as ``ser.dumps`` of the key list) -> primary key, for those found on ``alias``.

    Keys not found are absent from the result; a key that matches more than one
    row maps to ``AMBIGUOUS``. Raises ``LookupFailed`` if some key cannot be
    looked up, since absence would then mean nothing.
    """
    wanted = {_normal(key): key if isinstance(key, list) else [key] for key in keys}
    paths = lookups(model)
    try:
        if paths is None:
            return _one_by_one(model, wanted, alias)
        if any(len(key) != len(paths) for key in wanted.values()):
            raise ValueError("a key has the wrong number of parts")
        return _by_paths(model, paths, wanted, alias)
    except (ValueError, TypeError, ValidationError) as exc:
        raise LookupFailed(f"{model._meta.label_lower} natural keys: {exc}") from exc


def _one_by_one(model, wanted: dict, alias: str) -> dict[str, object]:
    found: dict[str, object] = {}
    manager = model._default_manager.db_manager(alias)
    for text, key in wanted.items():
        try:
            found[text] = manager.get_by_natural_key(*key).pk
        except model.DoesNotExist:
            continue
        except model.MultipleObjectsReturned:
            found[text] = AMBIGUOUS
    return found


def _by_paths(model, paths: tuple, wanted: dict, alias: str) -> dict[str, object]:
    found: dict[str, object] = {}
    items = list(wanted.items())
    postgres = connections[alias].vendor == "postgresql"
    size = ARRAY_CHUNK if postgres else chunk_size(connections[alias], len(paths))
    manager = model._base_manager.using(alias)
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        if postgres:  # whole keys: looked up by index however large the table
            filters = [AnyRowOf([F(path) for path in paths], [key for _, key in chunk])]
        else:  # each part: more rows than asked for, left out below
            filters = [AnyOf(F(path), {key[i] for _, key in chunk})
                       for i, path in enumerate(paths)]
        for *values, pk in manager.filter(*filters).values_list(*paths, "pk"):
            text = ser.dumps(values)
            if text in wanted:
                found[text] = AMBIGUOUS if text in found else pk
    return found
