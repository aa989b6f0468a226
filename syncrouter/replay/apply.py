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
    if not field.concrete:
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
    date fields put back with one UPDATE.
    """
    if not obj._meta.parents:
        obj.save_base(using=alias, raw=True, force_insert=insert)
        return
    obj.save(using=alias, force_insert=insert)
    stamped = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields
               if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)}
    if stamped:
        type(obj)._base_manager.using(alias).filter(pk=obj.pk).update(**stamped)


def _same_identity(model, existing, payload) -> None:
    if payload.get("pk") is not None and str(existing.pk) != str(payload["pk"]):
        raise Outcome("conflict", f"{model._meta.label_lower} {payload['nk']}: this node holds "
                                  f"a different row (pk {existing.pk}) with that natural key; "
                                  f"the incoming row has pk {payload['pk']}.")


def _guarded_delete(model, existing, alias: str) -> None:
    """Delete the row and its MTI parents; refuse if anything else would cascade with it."""
    collector = Collector(using=alias)
    collector.collect([existing])
    own = {existing._meta.label_lower} | {
        parent._meta.label_lower for parent in existing._meta.get_parent_list()}
    extra = [f"{m._meta.label_lower} ({len(objs)})" for m, objs in collector.data.items()
             if m._meta.label_lower not in own and objs]
    extra += [f"{qs.model._meta.label_lower}" for qs in collector.fast_deletes
              if not qs.model._meta.auto_created and qs.exists()]
    if extra:
        raise Outcome("conflict", f"deleting {model._meta.label_lower} {existing.pk} here would "
                                  f"also delete {', '.join(extra)}, which the producer did not "
                                  "delete; nothing was deleted.")
    collector.delete()


def apply_m2m(model, payload, alias: str) -> tuple[str, str]:
    change = payload["m2m"]
    owner = find(model, payload["nk"], alias)
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
    if change["op"] == "clear":
        manager.clear()
    elif change["op"] in ("add", "remove"):
        getattr(manager, change["op"])(*targets)
    else:
        raise Outcome("error", f"unknown many-to-many operation {change['op']!r}")
    return "updated", f"{field.name}.{change['op']} {len(targets)}"


def apply_row(model, action: str, payload: dict, alias: str, tx) -> tuple[str, str]:
    """Apply one insert, update, delete or M2M change; return (outcome, text)."""
    if "m2m" in payload:
        return apply_m2m(model, payload, alias)
    existing = find(model, payload.get("old_nk", payload["nk"]), alias)
    if action == "D":
        if existing is None:
            return "skipped", "already absent on this node"
        _same_identity(model, existing, payload)
        decision, text = conflicts.check(model, existing, payload, alias, tx)
        if decision == "apply":
            _guarded_delete(model, existing, alias)
        return _outcome("deleted", decision, text)
    values = decode_fields(model, payload["fields"], alias)
    if existing is None:
        if action == "U":
            raise Outcome("deferred", "the row is not on this node yet (its insert has not "
                                      "arrived, or it was deleted here)")
        obj = model(**values)
        write(obj, alias, insert=True)
        return "inserted", ""
    _same_identity(model, existing, payload)
    if action == "I":
        if all(getattr(existing, attname) == value for attname, value in values.items()):
            return "skipped", "already present with the same values"
        payload = {**payload, "before": conflicts.as_unknown_base(payload["fields"])}
    decision, text = conflicts.check(model, existing, payload, alias, tx)
    if decision == "apply":
        for attname, value in values.items():
            setattr(existing, attname, value)
        write(existing, alias, insert=False)
    return _outcome("updated", decision, text)


def _outcome(done: str, decision: str, conflict_text: str) -> tuple[str, str]:
    """Outcome of an update/delete after the conflict check; "held" is not consumed."""
    if decision == "hold":
        return "held", conflict_text
    if conflict_text:
        return "conflict", conflict_text
    return done, ""
