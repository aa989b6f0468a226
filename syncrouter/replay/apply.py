"""Apply one transaction's payload to the replaying alias, by natural key.

Everything is looked up on the replaying alias (the old tools looked up natural
foreign keys on ``default``). A function here either returns the outcome kind
and a text, or raises ``ApplyStopped`` for a result that must leave no trace.
"""
from __future__ import annotations

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connections, models
from django.db.models.deletion import Collector, ProtectedError, RestrictedError

from .. import serialization as ser
from ..enums import ReplayOutcome, Resolution
from ..models import IncomingTransaction, OutgoingTransaction
from ..signals import post_replay, pre_replay
from . import conflicts, decode
from .messages import ApplyStopped


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
        raise ApplyStopped(ReplayOutcome.ERROR, f"{model._meta.label_lower} natural key {key} matches more than "
                               f"one row on {alias!r}; the natural key is not unique.") from None
    except (TypeError, ValueError, ValidationError) as exc:
        raise ApplyStopped(ReplayOutcome.ERROR, f"{model._meta.label_lower} natural key {key} cannot be looked "
                               f"up: {exc}") from None


def _field(model, name: str):
    label = model._meta.label_lower
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        raise ApplyStopped(ReplayOutcome.ERROR, f"{label} has no field {name!r} on this node: the producer's "
                               "schema differs (migrate both nodes to the same version).") from None
    # Django 6.1 no longer calls many-to-many fields concrete; they are still real fields.
    if not (field.concrete or field.many_to_many) or field.auto_created:
        raise ApplyStopped(ReplayOutcome.ERROR, f"{label}.{name} is not a concrete field on this node.")
    return field


def _related(field, key, alias: str):
    related = find(field.remote_field.model, key, alias)
    if related is None:
        raise ApplyStopped(ReplayOutcome.DEFERRED, f"waits for {field.remote_field.model._meta.label_lower} "
                                  f"{key} (parent of {field.model._meta.label_lower}."
                                  f"{field.name}), not on this node yet")
    return getattr(related, field.target_field.attname)


def decode_fields(model, fields: dict, alias: str, row: dict | None = None) -> dict:
    """attname -> Python value for the payload's fields; FKs and generic object ids
    resolved on ``alias`` (the latter by the content type in ``row``, the payload's whole
    row, when ``fields`` is a part of it)."""
    from ..capture.generic import object_id_fields

    label = model._meta.label_lower
    generic_keys = object_id_fields(model._meta.concrete_model)
    vendor = connections[alias].vendor
    values = {}
    for name, value in fields.items():
        field = _field(model, name)
        if field.many_to_many:
            raise ApplyStopped(ReplayOutcome.ERROR, f"{label}.{name} is many-to-many: it "
                                   "travels as an M2M change, not as a field value.")
        if field.is_relation:
            values[field.attname] = None if value is None else _related(field, value, alias)
            continue
        if field.attname in generic_keys:
            value = decode.object_id(model, generic_keys[field.attname], value,
                                     fields if row is None else row, alias)
        try:
            values[field.attname] = ser.decode_value(field, value)
        except (ValidationError, ValueError, TypeError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            raise ApplyStopped(ReplayOutcome.ERROR, f"{label}.{name}: bad value {value!r}: {message}") from None
        reason = ser.refusal(field, values[field.attname], vendor)
        if reason is not None:
            raise ApplyStopped(ReplayOutcome.ERROR, f"{label}.{name}: {value!r} cannot be stored on {alias!r} "
                                                 f"({reason}); nothing was written.")
    return values


def write(obj, alias: str, insert: bool, update_fields: list[str] | None = None) -> None:
    """Save ``obj`` with the producer's values as they are (only ``update_fields`` if given).

    A raw save keeps ``auto_now``/``auto_now_add`` values instead of stamping this
    node's clock on them. Django skips parent tables in a raw save, so a
    multi-table-inheritance child gets a normal save and then its automatic
    date fields put back with one UPDATE; so does a model that asks for its own
    ``save()`` with ``sync_replay_save = True``.
    """
    if not obj._meta.parents and not getattr(obj, "sync_replay_save", False):
        obj.save_base(using=alias, raw=True, force_insert=insert, update_fields=update_fields)
        return
    obj.save(using=alias, force_insert=insert, update_fields=update_fields)
    stamped = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields
               if (getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False))
               and (update_fields is None or f.name in update_fields)}
    if stamped:
        type(obj)._base_manager.using(alias).filter(pk=obj.pk).update(**stamped)


def save(obj, alias: str, values: dict, tx, insert: bool = False) -> None:
    """Write ``values`` (attname -> value) to ``obj`` between the replay signals.

    An update writes only the fields in ``values``, plus any a ``pre_replay``
    receiver changed: the other columns keep what this node holds.
    """
    for attname, value in values.items():
        setattr(obj, attname, value)
    fields = obj._meta.concrete_fields
    seen = None if insert else [getattr(obj, f.attname) for f in fields]
    pre_replay.send(sender=type(obj), alias=alias, instances=[obj], transactions=[tx])
    update_fields = None
    if not insert:
        update_fields = [f.name for f, value in zip(fields, seen) if not f.primary_key and (
            f.attname in values or getattr(obj, f.attname) != value)]
    if update_fields != []:
        write(obj, alias, insert, update_fields)
    post_replay.send(sender=type(obj), alias=alias, instances=[obj], transactions=[tx])


def _other_row(existing, payload) -> bool:
    """This node's row under the natural key is a different row (another primary key)."""
    return payload.get("pk") is not None and str(existing.pk) != str(payload["pk"])


def guarded_delete(model, rows: list, alias: str) -> None:
    """Delete the rows and their MTI parents, or wait (``ApplyStopped`` deferred) while this
    node holds rows that protect them or that would be deleted with them although their
    producer did not delete them: a later change may remove those rows."""
    collector = Collector(using=alias)
    label = model._meta.label_lower
    pks = ", ".join(str(row.pk) for row in rows)
    try:
        collector.collect(rows)
    except (ProtectedError, RestrictedError) as exc:
        holders = sorted({f"{obj._meta.label_lower} {obj.pk}" for obj in exc.protected_objects
                          if hasattr(obj, "_meta")})
        raise ApplyStopped(ReplayOutcome.DEFERRED, f"deleting {label} {pks} here is refused: "
                                  f"{', '.join(holders[:5])}{' ...' if len(holders) > 5 else ''} "
                                  "still refer to it on this node; waits until they are gone"
                      ) from None
    own = {label} | {parent._meta.label_lower for parent in model._meta.get_parent_list()}
    extra = [f"{m._meta.label_lower} ({len(objs)})" for m, objs in collector.data.items()
             if m._meta.label_lower not in own and objs]
    extra += [f"{qs.model._meta.label_lower}" for qs in collector.fast_deletes
              if not qs.model._meta.auto_created and qs.exists()]
    if extra:
        raise ApplyStopped(ReplayOutcome.DEFERRED, f"deleting {label} {pks} here would also delete "
                                  f"{', '.join(extra)}, which the producer did not delete; "
                                  "nothing was deleted, waits until they are gone")
    collector.delete()


def _locate(model, payload: dict, alias: str):
    """This node's row for the change: by the natural key it had before the change, then
    by primary key (a key renamed here since), locked for the rest of the transaction
    where the database can, so no concurrent writer slips between check and write."""
    existing = find(model, payload.get("old_nk", payload["nk"]), alias)
    if existing is None and payload.get("pk") is not None:
        try:
            existing = model._base_manager.using(alias).filter(pk=payload["pk"]).first()
        except (ValidationError, ValueError, TypeError) as exc:
            raise ApplyStopped(ReplayOutcome.ERROR, f"{model._meta.label_lower} primary key "
                                   f"{payload['pk']!r}: {exc}") from None
    if existing is not None and connections[alias].features.has_select_for_update:
        existing = model._base_manager.using(alias).select_for_update().get(pk=existing.pk)
    return existing


def _diverged(model, existing, payload: dict, tx, alias: str) -> bool:
    """Whether ``existing`` is another row than the one ``tx``'s producer changes.

    A row under another primary key is another row, unless this node applied
    the producer's insert over it (a conflict resolved for the incoming row).
    Where primary keys do not travel, the natural key is the only identity, so
    the rows are one, unless this node refused the producer's insert.
    """
    if _other_row(existing, payload):
        return conflicts.insert_resolution(tx, alias) != Resolution.INCOMING_APPLIED
    if payload.get("pk") is None:
        return conflicts.insert_resolution(tx, alias) == Resolution.SERVER_KEPT
    return False


def _superseded(tx, later: int) -> tuple[str, str]:
    return ReplayOutcome.SKIPPED, (f"superseded: this node already reflects {tx.producer}#{later}, a later "
                       "change of the same row")


def _outcome(done: str, conflict_text: str) -> tuple[str, str]:
    """Outcome after the conflict check: a conflict, whichever side won, says so."""
    return (ReplayOutcome.CONFLICT, conflict_text) if conflict_text else (done, "")


def _attnames(model, names) -> dict:
    return {name: model._meta.get_field(name).attname for name in names}


def _wait_for_gap(gap, tx, why: str) -> None:
    """Wait rather than decide while earlier changes of the producer are missing here:
    one of them may be what makes the difference (a delete and re-create under one key,
    an earlier change of the same field, a rename)."""
    if gap is not None:
        raise ApplyStopped(ReplayOutcome.DEFERRED, f"{why}, and {tx.producer}#{gap[0]}-{gap[1]} have not "
                                  "arrived; waiting for them before calling it a conflict")


def apply_insert(model, payload: dict, alias: str, tx, existing, gap=None) -> tuple[str, str]:
    later = conflicts.later_changes(tx, alias)
    if later.consumed:
        return _superseded(tx, later.consumed)
    other = existing is not None and _other_row(existing, payload)
    if existing is not None and not other and payload.get("pk") is not None:
        return ReplayOutcome.SKIPPED, ("already here: this node holds the row under its primary key "
                           "(later changes, if any, replay after this one)")
    values = decode_fields(model, payload["fields"], alias)
    if existing is None:
        save(model(), alias, values, tx, insert=True)
        return ReplayOutcome.INSERTED, ""
    attnames = _attnames(model, payload["fields"])
    _wait_for_gap(gap, tx, f"another {model._meta.label_lower} row holds the key {payload['nk']}")
    if other:  # two rows under one key: every field is in question
        base = conflicts.as_unknown_base(payload["fields"])
    else:
        base = conflicts.as_unknown_base(
            name for name, attname in attnames.items()
            if not ser.same(getattr(existing, attname), values[attname]))
        if not base:
            return ReplayOutcome.SKIPPED, "already present with the same values"
    differing = conflicts.mismatches(model, existing, base)
    incoming, text = conflicts.check(model, existing, payload, alias, tx, base, differing)
    if incoming:
        values.pop(model._meta.pk.attname, None)  # this node's row keeps its identity
        save(existing, alias, values, tx)
    return _outcome(ReplayOutcome.INSERTED, text)


def _deleted_by_key(model, key, alias: str) -> bool:
    """Whether this node deleted a row of ``model`` under natural key ``key`` (for models
    whose primary key does not travel, so a row deleted here has no key in common)."""
    needle = f'"nk":{ser.dumps(key)}'
    rows = {"tx_name": model._meta.label_lower, "action": "D", "tx__contains": needle}
    return (IncomingTransaction.objects.using(alias).filter(is_consumed=True, **rows).exists()
            or OutgoingTransaction.objects.using(alias).filter(**rows).exists())


def _update_of_deleted(model, payload: dict, alias: str, tx, gap=None) -> tuple[str, str]:
    """An update of a row this node deleted: a conflict; if the incoming change wins, the row
    comes back with the producer's values."""
    pk = payload.get("pk")
    gone = conflicts.deleted_here(model, pk, alias) if pk is not None else _deleted_by_key(
        model, payload.get("old_nk", payload["nk"]), alias)
    if not gone:
        raise ApplyStopped(ReplayOutcome.DEFERRED, "the row is not on this node yet (its insert has not "
                                  "arrived)")
    _wait_for_gap(gap, tx, "the row was deleted on this node")
    before = payload.get("before") or conflicts.as_unknown_base(payload["fields"])
    differing = {name: (base, None) for name, base in before.items()}
    incoming, text = conflicts.check(model, None, payload, alias, tx, before, differing)
    if incoming:
        save(model(), alias, decode_fields(model, payload["fields"], alias), tx, insert=True)
    return ReplayOutcome.CONFLICT, text


def apply_update(model, payload: dict, alias: str, tx, existing, gap=None) -> tuple[str, str]:
    """Write the fields the producer changed, each only if this node still holds the value
    the producer saw (or the policy says so); leave every other field alone."""
    later = conflicts.later_changes(tx, alias)
    if later.deleted:
        return _superseded(tx, later.deleted)
    if gap is not None and payload.get("old_nk", payload["nk"]) != payload["nk"]:
        raise ApplyStopped(ReplayOutcome.DEFERRED, f"changes the natural key {payload['old_nk']} to "
                                  f"{payload['nk']}; waits for {tx.producer}#{gap[0]}-{gap[1]}, "
                                  "which may still name the old key")
    if existing is None:
        if later.consumed:
            return _superseded(tx, later.consumed)
        return _update_of_deleted(model, payload, alias, tx, gap)
    before = payload.get("before")
    if not isinstance(before, dict):  # written before before-states: all fields, unchecked
        before = None
        names = list(payload["fields"])
    else:
        names = list(before)
        if not names:
            return ReplayOutcome.UPDATED, "no field changed"
    stale = later.stale_fields(names, existing, before)
    names = [name for name in names if name not in stale]
    if not names:
        return _superseded(tx, min(stale.values()))
    values = decode_fields(model, {name: payload["fields"][name] for name in names}, alias,
                           payload["fields"])
    attnames = _attnames(model, names)
    todo = [name for name in names
            if not ser.same(getattr(existing, attnames[name]), values[attnames[name]])]
    if not todo:
        return ReplayOutcome.SKIPPED, "already so on this node"
    if before is None:
        base, differing = {}, {}
    else:
        if _diverged(model, existing, payload, tx, alias):
            base = conflicts.as_unknown_base(todo)
        else:
            base = {name: before[name] for name in todo}
        differing = conflicts.mismatches(model, existing, base)
        if differing:
            _wait_for_gap(gap, tx, f"{model._meta.label_lower} {payload['nk']}: "
                                   f"{', '.join(sorted(differing))} differ from what "
                                   f"{tx.producer} saw")
    incoming, text = conflicts.check(model, existing, payload, alias, tx, base, differing)
    written = [name for name in todo if incoming or name not in differing]
    if written:
        save(existing, alias, {attnames[name]: values[attnames[name]] for name in written}, tx)
    return _outcome(ReplayOutcome.UPDATED, text)


def apply_delete(model, payload: dict, alias: str, tx, existing) -> tuple[str, str]:
    if existing is None:
        return ReplayOutcome.SKIPPED, "already absent on this node"
    before = payload.get("before") or {}
    if _diverged(model, existing, payload, tx, alias):
        before = conflicts.as_unknown_base(before or [f.name for f in ser.synced_fields(model)])
    differing = conflicts.mismatches(model, existing, before) if before else {}
    incoming, text = conflicts.check(model, existing, payload, alias, tx, before, differing)
    if incoming:
        guarded_delete(model, [existing], alias)
    return _outcome(ReplayOutcome.DELETED, text)


def apply_m2m(model, payload: dict, alias: str, tx) -> tuple[str, str]:
    """Add or remove links of the owner; only the links the producer named, each only if
    no later change of the producer already settled it here."""
    change = payload["m2m"]
    label = model._meta.label_lower
    later = conflicts.later_changes(tx, alias)
    if later.deleted:
        return _superseded(tx, later.deleted)
    field = _field(model, change.get("field", ""))
    if not field.many_to_many:
        raise ApplyStopped(ReplayOutcome.ERROR, f"{label}.{field.name} is not many-to-many here.")
    op = change.get("op")
    if op not in ("add", "remove", "clear"):
        raise ApplyStopped(ReplayOutcome.ERROR, f"unknown many-to-many operation {op!r}")
    owner = _locate(model, payload, alias)
    if owner is None:
        if not conflicts.deleted_here(model, payload.get("pk"), alias):
            raise ApplyStopped(ReplayOutcome.DEFERRED, f"waits for {label} {payload['nk']} (owner of the "
                                      "many-to-many change)")
        differing = {field.name: (None, None)}
        incoming, text = conflicts.check(model, None, payload, alias, tx, differing, differing)
        if incoming:
            raise ApplyStopped(ReplayOutcome.DEFERRED, f"waits for {label} {payload['nk']}, deleted here: its "
                                      "many-to-many change won a conflict")
        return ReplayOutcome.CONFLICT, text
    settled = later.settled_links(field.name)
    targets = []
    for key in change.get("keys", ()):
        if ser.dumps(key) in settled:
            continue
        target = find(field.related_model, key, alias)
        if target is None and op == "add":
            raise ApplyStopped(ReplayOutcome.DEFERRED, f"waits for {field.related_model._meta.label_lower} {key}")
        if target is not None:
            targets.append(target)
    manager = getattr(owner, field.name)
    linked = set(manager.values_list("pk", flat=True))
    if op == "clear":  # written by an older version: every link this node has
        targets = list(linked)
    else:
        targets = [t for t in targets if (t.pk in linked) == (op == "remove")]
    if not targets:
        return ReplayOutcome.SKIPPED, f"{field.name}.{op}: already so on this node"
    if _diverged(model, owner, payload, tx, alias):
        base = {field.name: conflicts.UNKNOWN}
        differing = {field.name: (None, sorted((ser.natural_key_of(t) for t in targets), key=repr))}
        incoming, text = conflicts.check(model, owner, payload, alias, tx, base, differing)
        if not incoming:
            return ReplayOutcome.CONFLICT, text
    else:
        text = ""
    if op == "clear":
        manager.clear()
    else:
        getattr(manager, op)(*targets)
    return _outcome(ReplayOutcome.UPDATED, text) if text else (ReplayOutcome.UPDATED, f"{field.name}.{op} {len(targets)}")


def apply_row(model, action: str, payload: dict, alias: str, tx,
              gap: tuple[int, int] | None = None) -> tuple[str, str]:
    """Apply one insert, update, delete or M2M change; return (outcome, text).

    Raises ``ApplyStopped`` for a result that must leave no trace (deferred, error,
    held); the caller rolls the unit back. ``gap`` is a range of the
    producer's earlier sequences missing on this node: an insert or update
    that would be a conflict waits for it instead (deletes and link changes
    with a gap below never get here: the runner makes them wait).
    """
    if "m2m" in payload:
        return apply_m2m(model, payload, alias, tx)
    existing = _locate(model, payload, alias)
    if action == "I":
        return apply_insert(model, payload, alias, tx, existing, gap)
    if action == "U":
        return apply_update(model, payload, alias, tx, existing, gap)
    return apply_delete(model, payload, alias, tx, existing)
