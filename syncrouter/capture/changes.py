"""Build the payload of one captured change and hand it to the outbox."""
from __future__ import annotations

import copy
from functools import lru_cache

from django.db import connections, models
from django.db.models import prefetch_related_objects

from .. import serialization as ser
from ..exceptions import SyncError
from ..registry import require_natural_key
from . import generic, outbox

BEFORE = "_syncrouter_before"
#: Rows per query when capture reads rows (before-states, related rows).
PREFETCH_CHUNK = 500


@lru_cache(maxsize=None)
def _checked(model: type[models.Model]) -> type[models.Model]:
    require_natural_key(model)
    return model


def _concrete(instance) -> type[models.Model]:
    return _checked(instance._meta.concrete_model)


def read_before(instances: list, using: str) -> None:
    """Read the rows ``instances`` stand for as the database holds them now, just before
    a write changes or deletes them, and keep each on its instance for the capture.

    The values an instance was loaded with are not enough: the row may have
    changed since (a ``QuerySet.update()``, another instance, another user),
    the instance may have been built by hand or loaded with ``only()``. Only the
    row as stored says what the write changes. Where the database can, the rows
    are locked (``SELECT ... FOR UPDATE``: the write locks them a moment later
    anyway), so no concurrent writer slips in between. One query per
    ``PREFETCH_CHUNK`` rows of a model.
    """
    by_model: dict = {}
    for obj in instances:
        if obj.pk is not None:
            by_model.setdefault(obj._meta.concrete_model, []).append(obj)
    for model, objs in by_model.items():
        attnames = [f.attname for f in model._meta.concrete_fields]
        rows = model._base_manager.using(using)
        if connections[using].features.has_select_for_update:
            rows = rows.select_for_update()
        found = {}
        for start in range(0, len(objs), PREFETCH_CHUNK):
            chunk = [obj.pk for obj in objs[start:start + PREFETCH_CHUNK]]
            for values in rows.filter(pk__in=chunk).values_list(*attnames):
                row = dict(zip(attnames, values))
                found[row[model._meta.pk.attname]] = row
        for obj in objs:
            stored = found.get(obj.pk)
            if stored is None:
                obj.__dict__.pop(BEFORE, None)
            else:
                obj.__dict__[BEFORE] = stored


def read_row(instance, using: str) -> dict:
    """attname -> the value the database holds now for each column of ``instance``'s row,
    read just after a write whose values the instance does not hold as stored."""
    model = instance._meta.concrete_model
    attnames = [f.attname for f in model._meta.concrete_fields]
    values = model._base_manager.using(using).filter(pk=instance.pk).values_list(*attnames).get()
    return dict(zip(attnames, values))


@lru_cache(maxsize=None)
def _storable_checks(model: type[models.Model], vendor: str) -> tuple:
    """The fields of ``model`` that may hold a value ``vendor`` cannot store."""
    return tuple(f for f in model._meta.concrete_fields
                 if vendor == "sqlite" and isinstance(f, models.FloatField))


def refuse_unstorable(model: type[models.Model], field, value, vendor: str) -> None:
    """``SyncError`` naming model, field and value if ``vendor`` cannot store ``value``."""
    reason = ser.refusal(field, value, vendor)
    if reason is not None:
        raise SyncError(f"{model._meta.label_lower}.{field.name} = {value!r} cannot be stored "
                        f"as it is ({reason}); refused before the write, nothing was written.")


def check_before_write(instances: list, using: str) -> None:
    """Refuse, before the write, what could not be stored or travel as it is (``SyncError``
    naming model, field and value), so that nothing of the write happens."""
    vendor = connections[using].vendor
    for obj in instances:
        model = obj._meta.concrete_model
        for field in _storable_checks(model, vendor):
            refuse_unstorable(model, field, getattr(obj, field.attname), vendor)
        generic.check(obj, using)


def _stored(instance, before: dict, update_fields) -> dict:
    """attname -> the value the database holds for each column after this save.

    ``save(update_fields=[...])`` writes only those fields: the others keep the
    values the row had, whatever the instance holds in memory.
    """
    stored = {}
    for field in instance._meta.concrete_fields:
        saved = update_fields is None or field.name in update_fields \
            or field.attname in update_fields
        stored[field.attname] = getattr(instance, field.attname) if saved \
            else before[field.attname]
    return stored


def _as_stored(instance, stored: dict):
    """``instance`` itself if it holds ``stored``, else a copy that does (for natural keys)."""
    differing = {a: v for a, v in stored.items() if not ser.same(getattr(instance, a), v)}
    return _with_values(instance, differing) if differing else instance


def _with_values(instance, attrs: dict):
    copied = copy.copy(instance)
    copied._state = copy.copy(instance._state)
    copied._state.fields_cache = dict(instance._state.fields_cache)
    for attname, value in attrs.items():
        setattr(copied, attname, value)  # a changed FK id drops its cached object
    return copied


def _settled(instance, view, using: str) -> tuple:
    """(view, travelling fields) of the row as stored: from ``view`` if it holds what the
    database stored, else from the row read back (after an ``F()`` expression, a value
    the database rounds): one query, only then."""
    try:
        return view, ser.row_fields(view, settled=False)
    except ser.Unsettled:
        view = _as_stored(instance, read_row(instance, using))
        return view, ser.row_fields(view)


def _head(model, instance) -> dict:
    return {"v": ser.VERSION, "model": model._meta.label_lower,
            "pk": ser.pk_value(instance) if ser.pk_travels(model) else None,
            "nk": ser.natural_key_of(instance)}


def record_save(instance, using: str, created: bool, update_fields=None) -> None:
    """Record an insert, or an update of the fields the save changed.

    An update carries the row as the database now holds it (``fields``), the
    old values of the fields that changed (``before``, from ``read_before``)
    and, if the natural key changed, the old key (``old_nk``). With
    ``update_fields`` only those fields count as written: values the instance
    holds but did not save never travel.
    """
    model = _concrete(instance)
    before_row = instance.__dict__.pop(BEFORE, None)
    if created or before_row is None:
        view, fields = _settled(instance, instance, using)
        outbox.record(using, model, instance.pk, "I", {**_head(model, view), "fields": fields})
        return
    view, fields = _settled(
        instance, _as_stored(instance, _stored(instance, before_row, update_fields)), using)
    payload = {**_head(model, view), "fields": fields}
    changed, old_attrs = [], {}
    for field in ser.synced_fields(model):
        old = before_row[field.attname]
        if not ser.same(old, getattr(view, field.attname)):
            changed.append(field)
            old_attrs[field.attname] = old
    old_view = _with_values(view, old_attrs) if old_attrs else view
    payload["before"] = {field.name: ser.encode_field(old_view, field) for field in changed}
    if old_attrs:
        old_nk = ser.natural_key_of(old_view)
        if old_nk != payload["nk"]:
            payload["old_nk"] = old_nk
    outbox.record(using, model, instance.pk, "U", payload)


def record_delete(instance, using: str) -> None:
    """Record a delete with the row as the database held it (``read_before``), which is
    what replay compares with the target's row before deleting it there."""
    model = _concrete(instance)
    stored = instance.__dict__.pop(BEFORE, None)
    view = instance if stored is None else _as_stored(instance, stored)
    outbox.record(using, model, instance.pk, "D",
                  {**_head(model, view), "before": ser.row_fields(view)})


#: How many foreign-key hops ``load_related`` follows; natural keys reach through
#: their parents (a CRF's key is its visit's, which is its member's plus a code).
RELATED_DEPTH = 3


def load_related(instances: list) -> None:
    """Cache the rows behind every forward foreign key of ``instances``, to ``RELATED_DEPTH``.

    One query per relation and level, so the natural keys and FK values of N rows
    cost a constant number of queries instead of N. Which FKs a ``natural_key()``
    follows is not declared anywhere, so all forward FKs are loaded.
    """
    level = list(instances)
    for _ in range(RELATED_DEPTH):
        by_model: dict = {}
        for obj in level:
            by_model.setdefault(type(obj), []).append(obj)
        level = []
        for model, objs in by_model.items():
            names = [f.name for f in model._meta.concrete_fields
                     if f.is_relation and not f.remote_field.parent_link]
            if names:
                # Django 5.2 prefetches through TupleIn, which SQLite runs as an OR
                # chain limited to ~1000 terms: prefetch in chunks below that.
                for start in range(0, len(objs), PREFETCH_CHUNK):
                    prefetch_related_objects(objs[start:start + PREFETCH_CHUNK], *names)
                level += [related for obj in objs for name in names
                          if (related := obj._state.fields_cache.get(name)) is not None]


def insert_entry(instance, settled: bool = False) -> tuple:
    """The outbox entry of a row just inserted by a bulk write (FKs loaded); raises
    ``Unsettled`` unless ``settled`` when the instance does not hold the row as stored."""
    model = _concrete(instance)
    payload = {**_head(model, instance), "fields": ser.row_fields(instance, settled)}
    return model._meta.label_lower, instance.pk, "I", payload


def update_entry(before, after) -> tuple:
    """The outbox entry of a row a bulk write changed from ``before`` to ``after`` (both
    loaded from the database, FKs loaded), in the format ``record_save`` gives an update."""
    model = _concrete(after)
    payload = {**_head(model, after), "fields": ser.row_fields(after),
               "before": {f.name: ser.encode_field(before, f) for f in ser.synced_fields(model)
                          if not ser.same(getattr(before, f.attname), getattr(after, f.attname))}}
    old_nk = ser.natural_key_of(before)
    if old_nk != payload["nk"]:
        payload["old_nk"] = old_nk
    return model._meta.label_lower, after.pk, "U", payload


def _m2m_field(owner_model, through):
    for field in owner_model._meta.many_to_many:
        if field.remote_field.through is through:
            return field
    raise LookupError(f"No many-to-many field of {owner_model._meta.label} uses {through}")


def _record_m2m_change(owner, field, op: str, keys: list, using: str) -> None:
    model = _concrete(owner)
    payload = {**_head(model, owner), "m2m": {"field": field.name, "op": op, "keys": keys}}
    outbox.record(using, model, owner.pk, "U", payload)


def _linked_keys(instance, field, using: str) -> list:
    """Natural keys of the rows ``instance`` links to through ``field``, as stored now."""
    through = field.remote_field.through
    pks = through._base_manager.using(using).filter(
        **{field.m2m_field_name(): instance.pk}).values_list(field.m2m_reverse_name(), flat=True)
    targets = field.related_model._base_manager.using(using).filter(pk__in=list(pks))
    return sorted((ser.natural_key_of(t) for t in targets), key=repr)


def record_m2m(through, instance, action, reverse, model, pk_set, using: str) -> None:
    """Record an M2M change as updates of the owning model (the one declaring the field).

    From the reverse side, each affected owner gets its own transaction. A
    ``clear()`` travels as the removal of the links the producer had: a link
    another node added, which this producer never saw, is not its to remove.
    """
    if action not in ("post_add", "post_remove", "pre_clear", "post_clear"):
        return
    if not reverse:
        field = _m2m_field(type(instance), through)
        stash = f"_syncrouter_clear_{field.name}"
        if action == "pre_clear":
            instance.__dict__[stash] = _linked_keys(instance, field, using)
        elif action == "post_clear":
            keys = instance.__dict__.pop(stash, [])
            if keys:
                _record_m2m_change(instance, field, "remove", keys, using)
        elif pk_set:
            targets = model._base_manager.using(using).filter(pk__in=pk_set)
            keys = sorted((ser.natural_key_of(t) for t in targets), key=repr)
            _record_m2m_change(instance, field, action[5:], keys, using)
        return
    field = _m2m_field(model, through)
    if action == "pre_clear":
        owners = list(model._base_manager.using(using).filter(**{field.name: instance}))
        instance.__dict__[f"_syncrouter_clear_{field.name}"] = owners
        return
    if action == "post_clear":
        owners = instance.__dict__.pop(f"_syncrouter_clear_{field.name}", [])
        op = "remove"
    else:
        owners = model._base_manager.using(using).filter(pk__in=pk_set or ())
        op = action[5:]
    key = ser.natural_key_of(instance)
    for owner in owners:
        _record_m2m_change(owner, field, op, [key], using)
