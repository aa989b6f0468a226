"""Build the payload of one captured change and hand it to the outbox."""
from __future__ import annotations

import copy
from functools import lru_cache

from django.db import models
from django.db.models import prefetch_related_objects

from .. import serialization as ser
from ..registry import require_natural_key
from . import outbox

LOADED = "_syncrouter_loaded"


@lru_cache(maxsize=None)
def _checked(model: type[models.Model]) -> type[models.Model]:
    require_natural_key(model)
    return model


def _concrete(instance) -> type[models.Model]:
    return _checked(instance._meta.concrete_model)


def _loaded_map(instance) -> dict | None:
    loaded = instance.__dict__.get(LOADED)
    return dict(zip(*loaded)) if loaded else None


def _remember_saved(instance) -> None:
    fields = instance._meta.concrete_fields
    instance.__dict__[LOADED] = (
        [f.attname for f in fields], [getattr(instance, f.attname) for f in fields])


def _before(instance, model, loaded: dict, using: str) -> tuple[dict, dict]:
    """Old travelling values and old attname values of the fields that changed."""
    before, old_attrs = {}, {}
    for field in ser.synced_fields(model):
        if field.attname not in loaded:
            continue
        old = loaded[field.attname]
        if old != getattr(instance, field.attname):
            before[field.name] = ser.encode_value(field, old, using)
            old_attrs[field.attname] = old
    return before, old_attrs


def _old_natural_key(instance, old_attrs: dict) -> list:
    old = copy.copy(instance)
    old._state = copy.copy(instance._state)
    old._state.fields_cache = dict(instance._state.fields_cache)
    for attname, value in old_attrs.items():
        setattr(old, attname, value)  # a changed FK id drops its cached object
    return ser.natural_key_of(old)


def _head(model, instance) -> dict:
    return {"v": ser.VERSION, "model": model._meta.label_lower,
            "pk": ser.pk_value(instance) if ser.pk_travels(model) else None,
            "nk": ser.natural_key_of(instance)}


def record_save(instance, using: str, created: bool) -> None:
    model = _concrete(instance)
    payload = {**_head(model, instance), "fields": ser.row_fields(instance)}
    loaded = None if created else _loaded_map(instance)
    if loaded is not None:
        before, old_attrs = _before(instance, model, loaded, using)
        payload["before"] = before
        if old_attrs:
            old_nk = _old_natural_key(instance, old_attrs)
            if old_nk != payload["nk"]:
                payload["old_nk"] = old_nk
    outbox.record(using, model, instance.pk, "I" if created else "U", payload)
    _remember_saved(instance)


def _encode_loaded(instance, field, value, using: str):
    """Travelling value of a loaded value; an unchanged FK uses the instance's cached row."""
    if field.is_relation and value == getattr(instance, field.attname):
        return ser.encode_field(instance, field)
    return ser.encode_value(field, value, using)


def record_delete(instance, using: str) -> None:
    model = _concrete(instance)
    loaded = _loaded_map(instance)
    if loaded is None:
        before = ser.row_fields(instance)
    else:
        before = {f.name: _encode_loaded(instance, f, loaded[f.attname], using)
                  for f in ser.synced_fields(model) if f.attname in loaded}
    outbox.record(using, model, instance.pk, "D", {**_head(model, instance), "before": before})


#: How many foreign-key hops ``load_related`` follows; natural keys reach through
#: their parents (a CRF's key is its visit's, which is its member's plus a code).
RELATED_DEPTH = 3


PREFETCH_CHUNK = 500


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


def insert_entry(instance) -> tuple:
    """The outbox entry of a row just inserted by a bulk write (FKs loaded)."""
    model = _concrete(instance)
    payload = {**_head(model, instance), "fields": ser.row_fields(instance)}
    _remember_saved(instance)
    return model._meta.label_lower, instance.pk, "I", payload


def update_entry(before, after) -> tuple:
    """The outbox entry of a row a bulk write changed from ``before`` to ``after`` (both
    loaded from the database, FKs loaded), in the format ``record_save`` gives an update."""
    model = _concrete(after)
    payload = {**_head(model, after), "fields": ser.row_fields(after),
               "before": {f.name: ser.encode_field(before, f) for f in ser.synced_fields(model)
                          if getattr(before, f.attname) != getattr(after, f.attname)}}
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
    payload = {"v": ser.VERSION, "model": model._meta.label_lower,
               "pk": ser.pk_value(owner) if ser.pk_travels(model) else None,
               "nk": ser.natural_key_of(owner),
               "m2m": {"field": field.name, "op": op, "keys": keys}}
    outbox.record(using, model, owner.pk, "U", payload)


def record_m2m(through, instance, action, reverse, model, pk_set, using: str) -> None:
    """Record an M2M change as updates of the owning model (the one declaring the field).

    From the reverse side, each affected owner gets its own transaction.
    """
    if action not in ("post_add", "post_remove", "pre_clear", "post_clear"):
        return
    if not reverse:
        if action == "pre_clear":
            return
        field = _m2m_field(type(instance), through)
        if action == "post_clear":
            _record_m2m_change(instance, field, "clear", [], using)
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
