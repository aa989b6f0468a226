"""The fast path: replay a run of inserts, updates and deletes of one model in a few queries.

Replaying row by row costs two or three natural-key SELECTs and a write per
row. For a run of plain changes of one model the per-row work is done for the
whole batch at once, inside one database transaction: one query reads (and,
where the database can, locks) the rows the batch names by primary key, one
finds which natural keys exist, one per foreign key finds the parents, one
finds which rows a later change of the same producer was already applied to;
then one bulk INSERT of the new rows (``bulk.insert``: COPY on PostgreSQL), one
``executemany`` UPDATE per set of changed columns, one ``Collector`` delete,
and one UPDATE of the consumed marks (guarantee 3). Values are written as the
producer sent them, ``auto_now`` fields included; an update writes only the
columns its producer changed.

A unit goes the row-by-row way instead when anything about it is not plain: a
row already here (by primary key or natural key) for an insert, a row that is
not here, or no longer holds the before-state, for an update or delete (a
conflict, or the change already applied), a parent not found, a row a later
change of its producer was applied to, a key repeated inside the batch, a value
that does not decode, a model with multi-table inheritance or
``sync_replay_save = True`` (which asks for ``save()`` on each object, with its
signals). If the batch write itself fails (a constraint the checks did not
foresee, a delete this node refuses) it is rolled back and every unit goes the
row-by-row way, which reports each one. Either way the result is the one the
row-by-row path gives: the fast path only takes changes whose outcome it knows.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.models import F

from .. import serialization as ser
from ..enums import ReplayOutcome
from ..lookups import AnyOf
from ..models import IncomingTransaction
from ..signals import post_replay, pre_replay
from ..state import replaying
from . import bulk, keys, natural, values
from .apply import guarded_delete
from .messages import ApplyStopped

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


def _overtaken(label: str, items, alias: str) -> set:
    """Ids of transactions whose row a later change of the same producer was applied to.

    Those go the row-by-row way, which works out what of them still counts
    (``conflicts.Later``).
    """
    rows = defaultdict(list)
    for item in items:
        rows[item.row.tx_pk].append(item.row)
    later = IncomingTransaction.objects.using(alias).filter(
        AnyOf(F("tx_pk"), rows), tx_name=label, is_error=False, is_consumed=True).values_list(
        "tx_pk", "producer", "sequence")
    return {row.id for tx_pk, producer, sequence in later for row in rows[tx_pk]
            if producer == row.producer and sequence > row.sequence}


class Plan(NamedTuple):
    """What the fast path does for one transaction."""

    #: Values to write, in ``Columns`` order (None for a delete or an update that changes nothing).
    values: list | None
    #: The row it changes (None for an insert).
    existing: object
    #: Indexes of the columns an update writes.
    changed: tuple = ()
    #: Text of the transaction's message.
    text: str = ""


class _Batch:
    """What the database holds for the rows of a batch, read in a few queries."""

    def __init__(self, model, items, alias: str):
        self.columns = values.columns(model, connections[alias].vendor)
        pks = {str(item.payload["pk"]) for item in items}
        rows = model._base_manager.using(alias)
        if connections[alias].features.has_select_for_update:
            rows = rows.select_for_update()  # no writer between this check and the write
        try:
            self.current = {str(obj.pk): obj for obj in rows.filter(AnyOf(F("pk"), pks))}
        except (ValidationError, ValueError, TypeError) as exc:
            raise natural.LookupFailed(f"{model._meta.label_lower} primary keys: {exc}") from exc
        self.keys = natural.resolve(model, [item.payload["nk"] for item in items], alias)
        self.parents = _resolve_parents(model, items, alias)
        self.overtaken = _overtaken(model._meta.label_lower, items, alias)
        self.seen: set = set()

    def plan(self, item) -> Plan | None:
        """The ``Plan`` of ``item`` if it may take the fast path, else None."""
        pk, key = str(item.payload["pk"]), ser.dumps(item.payload["nk"])
        if pk in self.seen or key in self.seen or item.row.id in self.overtaken:
            return None
        existing = self.current.get(pk)
        if item.row.action == "I":
            if existing is not None or key in self.keys:
                return None
            return Plan(self.columns.read(item.payload["fields"], self.parents), None)
        if existing is None or str(self.keys.get(key)) != pk:
            return None
        before = item.payload["before"]
        if not self.columns.holds(existing, before, self.parents):
            return None  # a conflict, or already applied: the row-by-row path says which
        if item.row.action == "D":
            return Plan(None, existing)
        if not before:
            return Plan(None, existing, (), "no field changed")
        current = self.columns.values_of(existing)
        fields = item.payload["fields"]
        after = self.columns.read({name: fields[name] for name in before}, self.parents, current)
        changed = self.columns.changed(current, after)
        if not changed:
            return None
        return Plan(after, existing, changed)


def _split(batch: _Batch, model, units: list, held: dict) -> tuple[list, list]:
    """(fast units with their plans, units for the row-by-row path), in order.

    A unit goes whole one way or the other. Fast units are written before slow
    ones, so a slow unit keeps on the slow path every later unit that writes
    the same row, and every later unit of its producer that touches one of its
    keys (as a parent, say); so do the keys in ``held`` (producer -> keys its
    earlier rows left unapplied in this run). The row-by-row path then applies
    them in order, or defers them behind the row that holds them (guarantee 5).
    The batch writes its deletes after its inserts and updates, so a later unit
    that names a row a fast unit deletes (as a parent) goes the row-by-row way
    too, and meets that row gone, as it would one unit at a time.
    """
    blocked = {producer: set(held_keys) for producer, held_keys in held.items()}
    gone: set = set()  # keys of rows fast units delete: the batch deletes them last
    fast, slow = [], []
    for unit in units:
        plans = []
        for item in unit:
            held_back = blocked.get(item.row.producer)
            touched = keys.touched(item.row, item.payload, model) \
                if held_back or gone else ()
            if held_back and not held_back.isdisjoint(touched):
                break
            if not gone.isdisjoint(touched):  # it names a row an earlier unit deletes
                break
            try:
                plan = batch.plan(item)
            except values.Unfit:
                plan = None
            if plan is None:
                break
            plans.append(plan)
        for item in unit:
            batch.seen.update((str(item.payload["pk"]), ser.dumps(item.payload["nk"])))
        if len(plans) == len(unit):
            fast.append((unit, plans))
            gone.update(key for item in unit if item.row.action == "D"
                        for key in keys.own(item.row, item.payload))
        else:
            slow.append(unit)
            for item in unit:
                blocked.setdefault(item.row.producer, set()).update(
                    keys.own(item.row, item.payload))
    return fast, slow


def _write(model, fast: list, alias: str, consumer: str) -> None:
    """Write the planned rows and consume their transactions (inside the caller's atomic block).

    New rows go in with one bulk INSERT, changed rows with one bulk UPDATE per
    set of changed columns, and deleted rows go with one ``Collector``, which
    refuses (and so sends the batch row by row) if the deletes would cascade
    to rows the producer did not delete. Model instances of the inserts and
    updates are built only when a ``pre_replay`` or ``post_replay`` receiver
    listens for the model; what a receiver changes in ``pre_replay`` is written.
    Deletes send no replay signals (Django's delete signals go as usual).
    """
    columns = values.columns(model, connections[alias].vendor)
    planned = [(item.row, plan) for unit, plans in fast for item, plan in zip(unit, plans)]
    writes = [(tx, plan) for tx, plan in planned if plan.values is not None]
    gone = [plan.existing for tx, plan in planned
            if plan.values is None and tx.action == "D"]
    listening = pre_replay.has_listeners(model) or post_replay.has_listeners(model)
    if listening:
        held = [None if plan.existing is None else columns.values_of(plan.existing)
                for _, plan in writes]
        objs = [columns.instance(list(plan.values), plan.existing) for _, plan in writes]
        transactions = [tx for tx, _ in writes]
        pre_replay.send(sender=model, alias=alias, instances=objs, transactions=transactions)
        writes = [(tx, plan._replace(values=columns.values_of(obj), changed=plan.changed if (
            values_held is None) else columns.changed(values_held, columns.values_of(obj))))
            for obj, (tx, plan), values_held in zip(objs, writes, held)]
    connection = connections[alias]
    new = [columns.prepare(plan.values, connection) for _, plan in writes
           if plan.existing is None]
    if new:
        bulk.insert(model, columns.names, new, alias)
    by_columns = defaultdict(list)
    for _, plan in writes:
        if plan.existing is not None and plan.changed:
            by_columns[plan.changed].append(columns.prepare(plan.values, connection))
    for changed, rows in by_columns.items():
        bulk.update(model, columns.subset(changed), [columns.pick(row, changed) for row in rows],
                    alias)
    if gone:
        guarded_delete(model, gone, alias)
    if bulk.consume([tx.id for tx, _ in planned], alias, consumer) != len(planned):
        raise ApplyStopped(ReplayOutcome.SKIPPED, "some rows were consumed by another replay")
    if listening:
        post_replay.send(sender=model, alias=alias, instances=objs, transactions=transactions)


def apply(model, units: list, alias: str, held: dict, consumer: str) -> tuple[list, list]:
    """Replay what of ``units`` the fast path can, in one database transaction.

    Returns (the (transaction, outcome, text) of each row applied, the units
    left for the row-by-row path, in order). If anything fails the batch is
    rolled back and every unit is left for the row-by-row path, which reports
    each one.
    """
    items = [item for unit in units for item in unit]
    try:
        with transaction.atomic(using=alias), replaying(alias):
            fast, slow = _split(_Batch(model, items, alias), model, units, held)
            if fast:
                _write(model, fast, alias, consumer)
    except natural.LookupFailed as exc:  # a bad key somewhere: each row reports its own
        logger.info("Batch lookups failed (%s); replaying %d units one by one.", exc, len(units))
        return [], list(units)
    except Exception as exc:  # a constraint, a receiver: the row-by-row path reports it
        logger.info("Batch of %d %s rows on %s refused (%s); replaying them one by one.",
                    len(items), model._meta.label_lower, alias, exc)
        return [], list(units)
    done = [(item, _DONE[item.row.action], plan.text)
            for unit, plans in fast for item, plan in zip(unit, plans)]
    return done, slow


#: The outcome of an action applied on the fast path.
_DONE = {"I": ReplayOutcome.INSERTED, "U": ReplayOutcome.UPDATED, "D": ReplayOutcome.DELETED}
