"""The fast path: insert a run of new rows of one model with a handful of queries.

Replaying row by row costs two or three natural-key SELECTs and an INSERT per
row. Most of a first sync is inserts of rows the node has never seen, and for
those the per-row work can be done for the whole batch at once: one query finds
which primary keys exist, one which natural keys do, one per foreign key which
parents exist, one which rows a later change of the same producer supersedes;
then one bulk INSERT (``bulk.insert``: COPY on PostgreSQL) and one UPDATE of
the consumed marks, in one database transaction (guarantee 3). The values are
written as the producer sent them, ``auto_now`` fields included.

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

from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.models import F, Q

from .. import serialization as ser
from ..capture.context import replaying
from ..lookups import AnyOf
from ..signals import post_replay, pre_replay
from . import bulk, keys, natural, values
from .apply import guarded_delete
from .messages import Outcome

logger = logging.getLogger("syncrouter.replay")


def batchable(model, payload: dict, action: str) -> bool:
    """Whether a row may take the fast path (before looking at the database)."""
    if action not in ("I", "U", "D") or "m2m" in payload or payload.get("pk") is None:
        return False
    if model._meta.parents or getattr(model, "sync_replay_save", False):
        return False
    return action == "I" or (isinstance(payload.get("before"), dict)
                             and payload.get("old_nk", payload["nk"]) == payload["nk"])


def _fk_fields(model) -> list:
    return [f for f in model._meta.concrete_fields if f.is_relation]


def _resolve_parents(model, items, alias: str) -> dict:
    """(field name, key text) -> target value, for every foreign key value in the batch,
    after the change and (for updates) before it."""
    wanted = defaultdict(list)
    for item in items:
        for state in (item.payload.get("fields") or {}, item.payload.get("before") or {}):
            for field in _fk_fields(model):
                key = state.get(field.name)
                if key is not None:
                    wanted[field].append(key)
    resolved = {}
    for field, wanted_keys in wanted.items():
        target = field.remote_field.model
        found = natural.resolve(target, wanted_keys, alias)
        if field.target_field.attname != target._meta.pk.attname:  # to_field
            by_pk = dict(target._base_manager.using(alias).filter(
                AnyOf(F("pk"), found.values())).values_list("pk", field.target_field.attname))
            found = {text: by_pk[pk] for text, pk in found.items()}
        for text, value in found.items():
            if value is not natural.AMBIGUOUS:
                resolved[(field.name, text)] = value
    return resolved


def _superseded(label: str, items, alias: str) -> set:
    """Ids of transactions a later change of the same row by the same producer overtakes."""
    from ..models import IncomingTransaction

    rows = defaultdict(list)
    for item in items:
        rows[item.row.tx_pk].append(item.row)
    later = IncomingTransaction.objects.using(alias).filter(
        AnyOf(F("tx_pk"), rows), tx_name=label, is_error=False).filter(
        Q(is_consumed=True) | Q(action="D")).values_list("tx_pk", "producer", "sequence")
    return {row.id for tx_pk, producer, sequence in later for row in rows[tx_pk]
            if producer == row.producer and sequence > row.sequence}


class _Batch:
    """What the database holds for the rows of a batch, read in a few queries."""

    def __init__(self, model, items, alias: str):
        self.columns = values.columns(model, connections[alias].vendor)
        pks = {str(item.payload["pk"]) for item in items}
        try:
            self.current = {str(obj.pk): obj for obj in model._base_manager.using(alias).filter(
                AnyOf(F("pk"), pks))}
        except (ValidationError, ValueError, TypeError) as exc:
            raise natural.LookupFailed(f"{model._meta.label_lower} primary keys: {exc}") from exc
        self.keys = natural.resolve(model, [item.payload["nk"] for item in items], alias)
        self.parents = _resolve_parents(model, items, alias)
        self.stale = _superseded(model._meta.label_lower, items, alias)
        self.seen: set = set()

    def plan(self, item) -> tuple | None:
        """(values to write, the row it changes) if ``item`` may take the fast path.

        An insert has no row it changes, a delete no values to write.
        """
        pk, key = str(item.payload["pk"]), ser.dumps(item.payload["nk"])
        if pk in self.seen or key in self.seen or item.row.id in self.stale:
            return None
        existing = self.current.get(pk)
        if item.row.action == "I":
            if existing is not None or key in self.keys:
                return None
            return self.columns.read(item.payload["fields"], self.parents), None
        if existing is None or str(self.keys.get(key)) != pk:
            return None
        if item.row.action == "D":
            if not self.columns.holds(existing, item.payload["before"], self.parents):
                return None
            return None, existing
        before = self.columns.values_of(existing)
        after = self.columns.read(item.payload["fields"], self.parents, before)
        if after == before or not self.columns.holds(existing, item.payload["before"],
                                                     self.parents):
            return None  # already applied, or a conflict: the row-by-row path says which
        return after, existing


def split(model, units: list, alias: str, held: dict) -> tuple[list, list]:
    """(fast units with their planned writes, units for the row-by-row path), in order.

    A unit goes whole one way or the other. Fast units are written before slow
    ones, so a slow unit keeps on the slow path every later unit that writes
    the same row, and every later unit of its producer that touches one of its
    keys (as a parent, say); so do the keys in ``held`` (producer -> keys its
    earlier rows left unapplied in this run). The row-by-row path then applies
    them in order, or defers them behind the row that holds them (guarantee 5).
    """
    try:
        batch = _Batch(model, [item for unit in units for item in unit], alias)
    except natural.LookupFailed as exc:  # a bad key somewhere: each row reports its own
        logger.info("Batch lookups failed (%s); replaying %d units one by one.", exc, len(units))
        return [], list(units)
    blocked = {producer: set(held_keys) for producer, held_keys in held.items()}
    fast, slow = [], []
    for unit in units:
        writes = []
        for item in unit:
            held_back = blocked.get(item.row.producer)
            if held_back and held_back & keys.touched(item.row, item.payload, model):
                break
            try:
                planned = batch.plan(item)
            except values.Unfit:
                planned = None
            if planned is None:
                break
            writes.append(planned)
        for item in unit:
            batch.seen.update((str(item.payload["pk"]), ser.dumps(item.payload["nk"])))
        if len(writes) == len(unit):
            fast.append((unit, writes))
        else:
            slow.append(unit)
            for item in unit:
                blocked.setdefault(item.row.producer, set()).update(
                    keys.own(item.row, item.payload))
    return fast, slow


def write(model, fast: list, alias: str, consumer: str) -> bool:
    """Write the planned rows and consume their transactions in one database transaction.

    New rows go in with one bulk INSERT, changed rows with one bulk UPDATE of
    every column, and deleted rows go with one ``Collector``, which refuses
    (and so sends the batch row by row) if the deletes would cascade to rows
    the producer did not delete. Model instances of the inserts and updates are
    built only when a ``pre_replay`` or ``post_replay`` receiver listens for
    the model; one that changes them in ``pre_replay`` changes what is written.
    Deletes send no replay signals (Django's delete signals go as usual).
    Returns False (and writes nothing) if the database or a receiver refused
    the batch.
    """
    columns = values.columns(model, connections[alias].vendor)
    planned = [(item.row, write) for unit, unit_writes in fast
               for item, write in zip(unit, unit_writes)]
    writes = [write for _, write in planned if write[0] is not None]
    gone = [existing for _, (row, existing) in planned if row is None]
    listening = pre_replay.has_listeners(model) or post_replay.has_listeners(model)
    try:
        with transaction.atomic(using=alias), replaying(alias):
            if listening:
                objs = [columns.instance(row, existing) for row, existing in writes]
                written = [tx for tx, write in planned if write[0] is not None]
                pre_replay.send(sender=model, alias=alias, instances=objs, transactions=written)
                writes = [(columns.values_of(obj), existing)
                          for obj, (_, existing) in zip(objs, writes)]
            connection = connections[alias]
            new = [columns.prepare(row, connection) for row, existing in writes
                   if existing is None]
            changed = [columns.pk_last(columns.prepare(row, connection))
                       for row, existing in writes if existing is not None]
            if new:
                bulk.insert(model, columns.names, new, alias)
            if changed:
                bulk.update(model, columns.pk_last(columns.names)[:-1], changed, alias)
            if gone:
                guarded_delete(model, gone, alias)
            if bulk.consume([tx.id for tx, _ in planned], alias, consumer) != len(planned):
                raise Outcome("skipped", "some rows were consumed by another replay")
            if listening:
                post_replay.send(sender=model, alias=alias, instances=objs, transactions=written)
    except Exception as exc:  # a constraint, a receiver: the row-by-row path reports it
        logger.info("Batch write of %d %s rows on %s refused (%s); replaying them one by one.",
                    len(planned), model._meta.label_lower, alias, exc)
        return False
    return True
