"""The fast path: insert a run of new rows of one model with a handful of queries.

Replaying row by row costs two or three natural-key SELECTs and an INSERT per
row. Most of a first sync is inserts of rows the node has never seen, and for
those the per-row work can be done for the whole batch at once: one query finds
which primary keys exist, one which natural keys do, one per foreign key which
parents exist, one which rows a later change of the same producer supersedes;
then one ``bulk_create`` and one UPDATE of the consumed marks, in one database
transaction (guarantee 3).

A unit goes the row-by-row way instead when anything about it is not plain: a
row already here (by primary key or natural key), a parent not found, a
superseded row, a key repeated inside the batch, a value that does not decode,
a model with multi-table inheritance or ``sync_replay_save = True`` (which asks
for ``save()`` on each object, with its signals). If the batch write itself
fails (a constraint the checks did not foresee) it is rolled back and every
unit goes the row-by-row way, which reports each one.
"""
from __future__ import annotations

import logging
from collections import defaultdict

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from .. import serialization as ser
from ..capture.context import replaying
from ..signals import post_replay, pre_replay
from . import natural
from .messages import Outcome

logger = logging.getLogger("syncrouter.replay")


def batchable(model, payload: dict, action: str) -> bool:
    """Whether a row may take the fast path (before looking at the database)."""
    return (action == "I" and "m2m" not in payload and payload.get("pk") is not None
            and not model._meta.parents and not getattr(model, "sync_replay_save", False))


def _fk_fields(model) -> list:
    return [f for f in model._meta.concrete_fields if f.is_relation]


def _resolve_parents(model, items, alias: str) -> dict:
    """(field name, key text) -> target value, for every foreign key in the batch."""
    wanted = defaultdict(list)
    for item in items:
        for field in _fk_fields(model):
            key = item.payload["fields"].get(field.name)
            if key is not None:
                wanted[field].append(key)
    resolved = {}
    for field, keys in wanted.items():
        target = field.remote_field.model
        found = natural.resolve(target, keys, alias)
        if field.target_field.attname != target._meta.pk.attname:  # to_field
            by_pk = dict(target._base_manager.using(alias).filter(
                pk__in=list(found.values())).values_list("pk", field.target_field.attname))
            found = {text: by_pk[pk] for text, pk in found.items()}
        for text, value in found.items():
            resolved[(field.name, text)] = value
    return resolved


def _superseded(label: str, items, alias: str) -> set:
    """Ids of transactions a later change of the same row by the same producer overtakes."""
    from ..models import IncomingTransaction

    rows = {item.row.tx_pk: item.row for item in items}
    later = IncomingTransaction.objects.using(alias).filter(
        tx_name=label, tx_pk__in=list(rows), is_error=False).filter(
        Q(is_consumed=True) | Q(action="D")).values_list("tx_pk", "producer", "sequence")
    stale = set()
    for tx_pk, producer, sequence in later:
        row = rows[tx_pk]
        if producer == row.producer and sequence > row.sequence:
            stale.add(row.id)
    return stale


def _fields(model) -> dict:
    """Payload field name -> concrete field, for the payload names this node knows."""
    return {f.name: f for f in model._meta.concrete_fields}


#: Fields whose JSON value is already the Python value when it has this type.
_NATIVE = ((models.BooleanField, bool), (models.IntegerField, int), (models.FloatField, float),
           (models.CharField, str), (models.TextField, str))


def _native_type(field) -> type | None:
    return next((kind for cls, kind in _NATIVE if isinstance(field, cls)), None)


def _build(model, fields: dict, natives: dict, item, parents: dict):
    """The unsaved instance for one insert, or None if it needs the row-by-row path."""
    values = {}
    for name, value in item.payload["fields"].items():
        field = fields.get(name)
        if field is None:
            return None  # unknown here: the row-by-row path names it
        if value is None:
            values[field.attname] = None
        elif field.is_relation:
            target = parents.get((name, ser.dumps(value)))
            if target is None:
                return None
            values[field.attname] = target
        elif type(value) is natives[name]:
            values[field.attname] = value
        else:
            try:
                values[field.attname] = ser.decode_value(field, value)
            except Exception:  # the row-by-row path reports the bad value
                return None
    if len(values) == len(fields):  # every column: positional, as Model.from_db does
        return model(*[values[f.attname] for f in fields.values()])
    return model(**values)


def split(model, units: list, alias: str) -> tuple[list, list]:
    """(fast units with their instances, units for the row-by-row path), in order."""
    items = [item for unit in units for item in unit]
    label = model._meta.label_lower
    pks = {str(item.payload["pk"]) for item in items}
    present_pks = {str(pk) for pk in model._base_manager.using(alias).filter(
        pk__in=list(pks)).values_list("pk", flat=True)}
    present_keys = natural.resolve(model, [item.payload["nk"] for item in items], alias)
    parents = _resolve_parents(model, items, alias)
    stale = _superseded(label, items, alias)
    seen_pks, seen_keys = set(), set()
    fast, slow, fields = [], [], _fields(model)
    natives = {name: _native_type(field) for name, field in fields.items()}
    for unit in units:
        built = []
        for item in unit:
            pk, key = str(item.payload["pk"]), ser.dumps(item.payload["nk"])
            obj = None
            if not (pk in present_pks or key in present_keys or item.row.id in stale
                    or pk in seen_pks or key in seen_keys):
                obj = _build(model, fields, natives, item, parents)
            seen_pks.add(pk)
            seen_keys.add(key)
            if obj is None:
                break
            built.append(obj)
        if len(built) == len(unit):
            fast.append((unit, built))
        else:
            slow.append(unit)
    return fast, slow


def _stamped(model) -> list[str]:
    return [f.name for f in model._meta.concrete_fields
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]


def write(model, fast: list, alias: str, consumer: str) -> bool:
    """Insert the instances and consume their transactions in one database transaction.

    Returns False (and writes nothing) if the database refused the batch.
    """
    from ..models import IncomingTransaction

    objs = [obj for _, built in fast for obj in built]
    rows = [item.row for unit, _ in fast for item in unit]
    stamped = _stamped(model)
    try:
        with transaction.atomic(using=alias), replaying(alias):
            pre_replay.send(sender=model, alias=alias, instances=objs, transactions=rows)
            values = {name: [getattr(o, model._meta.get_field(name).attname) for o in objs]
                      for name in stamped}
            model._base_manager.using(alias).bulk_create(objs)
            if stamped:  # bulk_create stamps this node's clock; keep the producer's
                for name, column in values.items():
                    attname = model._meta.get_field(name).attname
                    for obj, value in zip(objs, column):
                        setattr(obj, attname, value)
                model._base_manager.using(alias).bulk_update(objs, stamped)
            consumed = IncomingTransaction.objects.using(alias).filter(
                id__in=[row.id for row in rows], is_consumed=False).update(
                is_consumed=True, is_deferred=False, is_error=False, error="",
                consumed_datetime=timezone.now(), consumer=consumer)
            if consumed != len(rows):
                raise Outcome("skipped", "some rows were consumed by another replay")
            post_replay.send(sender=model, alias=alias, instances=objs, transactions=rows)
    except Exception as exc:  # a constraint, a receiver: the row-by-row path reports it
        logger.info("Batch insert of %d %s rows on %s refused (%s); replaying them one by one.",
                    len(objs), model._meta.label_lower, alias, exc)
        return False
    return True

