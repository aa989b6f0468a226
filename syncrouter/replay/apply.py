"""Apply one transaction's payload to the replaying alias, by natural key.

Everything is looked up on the replaying alias (the old tools looked up natural
foreign keys on ``default``). A function here either returns the outcome kind
and a text, or raises ``Outcome`` for a result that must leave no trace.
"""
from __future__ import annotations

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models.deletion import Collector

from .. import serialization as ser
from ..signals import post_replay, pre_replay
from . import conflicts
from .messages import Outcome


def key_args(key) -> list:
    return key if isinstance(key, list) else [key]


def find(model: type[models.Model], key, alias: str):
    """The row of ``model`` with natural key ``key`` on ``alias``, or None."""
    manager = model._default_manager.db_manager(alias)
    try:
        return manager.get_by_natural_key(*key_args(key))
    except model.DoesNotExist:
        return None
    except model.MultipleObjectsReturned:
        raise Outcome("error", f"{model._meta.label_lower} natural key {key} matches more than "
                               f"one row on {alias!r}; the natural key is not unique.") from None
    except (TypeError, ValueError, ValidationError) as exc:
        raise Outcome("error", f"{model._meta.label_lower} natural key {key} cannot be looked "
                               f"up: {exc}") from None


def _field(model, name: str):
    label = model._meta.label_lower
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        raise Outcome("error", f"{label} has no field {name!r} on this node: the producer's "
                               "schema differs (migrate both nodes to the same version).") from None
    # Django 6.1 no longer calls many-to-many fields concrete; they are still real fields.
    if not (field.concrete or field.many_to_many) or field.auto_created:
        raise Outcome("error", f"{label}.{name} is not a concrete field on this node.")
    return field


def _related(field, key, alias: str):
    related = find(field.remote_field.model, key, alias)
    if related is None:
        raise Outcome("deferred", f"waits for {field.remote_field.model._meta.label_lower} "
                                  f"{key} (parent of {field.model._meta.label_lower}."
                                  f"{field.name}), not on this node yet")
    return getattr(related, field.target_field.attname)


def decode_fields(model, fields: dict, alias: str) -> dict:
    """attname -> Python value for the payload's fields; FKs resolved on ``alias``."""
    values = {}
    for name, value in fields.items():
        field = _field(model, name)
        if field.many_to_many:
            raise Outcome("error", f"{model._meta.label_lower}.{name} is many-to-many: it "
                                   "travels as an M2M change, not as a field value.")
        if field.is_relation:
            values[field.attname] = None if value is None else _related(field, value, alias)
            continue
        try:
            values[field.attname] = ser.decode_value(field, value)
        except (ValidationError, ValueError, TypeError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            raise Outcome("error", f"{model._meta.label_lower}.{name}: bad value {value!r}: "
                                   f"{message}") from None
    return values


def write(obj, alias: str, insert: bool) -> None:
    """Save ``obj`` with the producer's values as they are.

    A raw save keeps ``auto_now``/``auto_now_add`` values instead of stamping this
    node's clock on them. Django skips parent tables in a raw save, so a
    multi-table-inheritance child gets a normal save and then its automatic
    date fields put back with one UPDATE; so does a model that asks for its own
    ``save()`` with ``sync_replay_save = True``.
    """
    if not obj._meta.parents and not getattr(obj, "sync_replay_save", False):
        obj.save_base(using=alias, raw=True, force_insert=insert)
        return
    obj.save(using=alias, force_insert=insert)
    stamped = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields
               if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)}
    if stamped:
        type(obj)._base_manager.using(alias).filter(pk=obj.pk).update(**stamped)


def _other_row(existing, payload) -> bool:
    """This node's row under the natural key is a different row (another primary key)."""
    return payload.get("pk") is not None and str(existing.pk) != str(payload["pk"])


def guarded_delete(model, rows: list, alias: str) -> None:
    """Delete the rows and their MTI parents; refuse if anything else would cascade with them."""
    collector = Collector(using=alias)
    collector.collect(rows)
    own = {model._meta.label_lower} | {
        parent._meta.label_lower for parent in model._meta.get_parent_list()}
    extra = [f"{m._meta.label_lower} ({len(objs)})" for m, objs in collector.data.items()
             if m._meta.label_lower not in own and objs]
    extra += [f"{qs.model._meta.label_lower}" for qs in collector.fast_deletes
              if not qs.model._meta.auto_created and qs.exists()]
    if extra:
        pks = ", ".join(str(row.pk) for row in rows)
        raise Outcome("conflict", f"deleting {model._meta.label_lower} {pks} here would "
                                  f"also delete {', '.join(extra)}, which the producer did not "
                                  "delete; nothing was deleted.")
    collector.delete()


def apply_m2m(model, payload, alias: str, tx) -> tuple[str, str]:
    change = payload["m2m"]
    owner = find(model, payload["nk"], alias)
    if owner is None and payload.get("pk") is not None:  # its natural key changed since
        owner = model._base_manager.using(alias).filter(pk=payload["pk"]).first()
    later = conflicts.reflected_later(tx, alias, owner, None)
    if later is not None:
        return _superseded(tx, later)
    if owner is None:
        raise Outcome("deferred", f"waits for {model._meta.label_lower} {payload['nk']} "
                                  "(owner of the many-to-many change)")
    field = _field(model, change["field"])
    if not field.many_to_many:
        raise Outcome("error", f"{model._meta.label_lower}.{field.name} is not many-to-many here.")
    targets = []
    for key in change["keys"]:
        target = find(field.related_model, key, alias)
        if target is None:
            raise Outcome("deferred", f"waits for {field.related_model._meta.label_lower} {key}")
        targets.append(target)
    manager = getattr(owner, field.name)
    op = change["op"]
    if op not in ("add", "remove", "clear"):
        raise Outcome("error", f"unknown many-to-many operation {op!r}")
    linked = set(manager.values_list("pk", flat=True))
    if op == "clear":
        targets = list(linked)
    else:
        targets = [t for t in targets if (t.pk in linked) == (op == "remove")]
    if not targets:
        return "skipped", f"{field.name}.{op}: already so on this node"
    if op == "clear":
        manager.clear()
    else:
        getattr(manager, op)(*targets)
    return "updated", f"{field.name}.{op} {len(targets)}"


def save(obj, alias: str, values: dict, tx, insert: bool = False) -> None:
    """Write ``obj`` with ``values`` (see ``write``) between the replay signals."""
    for attname, value in values.items():
        setattr(obj, attname, value)
    pre_replay.send(sender=type(obj), alias=alias, instances=[obj], transactions=[tx])
    write(obj, alias, insert)
    post_replay.send(sender=type(obj), alias=alias, instances=[obj], transactions=[tx])


def apply_row(model, action: str, payload: dict, alias: str, tx,
              gap: tuple[int, int] | None = None) -> tuple[str, str]:
    """Apply one insert, update, delete or M2M change; return (outcome, text).

    ``gap`` is a range of the producer's earlier sequences missing on this node
    (see ``conflicts.check``).
    """
    if "m2m" in payload:
        return apply_m2m(model, payload, alias, tx)
    if gap is not None and payload.get("old_nk") not in (None, payload["nk"]):
        raise Outcome("deferred", f"changes the natural key {payload['old_nk']} to "
                                  f"{payload['nk']}; waits for {tx.producer}#{gap[0]}-{gap[1]}, "
                                  "which may still name the old key")
    existing = find(model, payload.get("old_nk", payload["nk"]), alias)
    if existing is None and action != "D" and payload.get("pk") is not None:
        existing = model._base_manager.using(alias).filter(pk=payload["pk"]).first()
    if action == "D":
        if existing is None:
            if gap is not None:
                raise Outcome("deferred", f"the row is not here and {tx.producer}#{gap[0]}-"
                                          f"{gap[1]} (perhaps its insert) have not arrived")
            return "skipped", "already absent on this node"
        if _other_row(existing, payload):
            payload = {**payload, "before": conflicts.as_unknown_base(payload["before"])}
        decision, text = conflicts.check(model, existing, payload, alias, tx, gap)
        if decision == "apply":
            guarded_delete(model, [existing], alias)
        return _outcome("deleted", text)
    if action == "I" and existing is not None and payload.get("pk") is not None \
            and not _other_row(existing, payload):
        return "skipped", ("already here: this node holds the row under its primary key "
                           "(later changes, if any, replay after this one)")
    try:
        values = decode_fields(model, payload["fields"], alias)
    except Outcome as outcome:  # a parent missing: perhaps renamed by a later change here
        stale = _stale(model, tx, alias, existing) if outcome.kind == "deferred" else None
        if stale:
            return stale
        raise
    if existing is None:
        stale = _stale(model, tx, alias, None)
        if stale:
            return stale
        text = ""
        if action == "U":
            if not conflicts.deleted_here(model, payload.get("pk"), alias):
                raise Outcome("deferred", "the row is not on this node yet (its insert has "
                                          "not arrived)")
            decision, text = conflicts.check(model, None, payload, alias, tx, gap)
            if decision != "apply":
                return _outcome("inserted", text)
        save(model(), alias, values, tx, insert=True)
        return _outcome("inserted", text)
    other = _other_row(existing, payload)
    if not other and _holds(existing, values):
        return "skipped", "already present with the same values"
    if action == "I" or other:
        payload = {**payload, "before": conflicts.as_unknown_base(payload["fields"])}
    differing = conflicts.mismatches(model, existing, payload["before"] or {})
    if differing:
        stale = _stale(model, tx, alias, existing)
        if stale:
            return stale
    decision, text = conflicts.check(model, existing, payload, alias, tx, gap, differing)
    if decision == "apply":
        if other:  # this node's row keeps its identity; children point to it
            values.pop(model._meta.pk.attname, None)
        save(existing, alias, values, tx)
    return _outcome("updated", text)


def _holds(existing, values: dict) -> bool:
    return all(getattr(existing, attname) == value for attname, value in values.items())


def _stale(model, tx, alias: str, existing) -> tuple[str, str] | None:
    """("skipped", why) if a later change of this row by the same producer is already here."""
    def holds(fields):
        try:
            return _holds(existing, decode_fields(model, fields, alias))
        except Outcome:
            return False

    later = conflicts.reflected_later(tx, alias, existing, holds)
    return None if later is None else _superseded(tx, later)


def _superseded(tx, later: int) -> tuple[str, str]:
    return "skipped", (f"superseded: this node already reflects {tx.producer}#{later}, a later "
                       "change of the same row")


def _outcome(done: str, conflict_text: str) -> tuple[str, str]:
    """Outcome after the conflict check: a conflict, whichever side won, says so."""
    return ("conflict", conflict_text) if conflict_text else (done, "")
