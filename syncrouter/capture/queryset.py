"""Capture of the queryset paths that send no ``post_save``: bulk_create, bulk_update,
update(), and Collector deletes (``QuerySet.delete()``, ``Model.delete()``).

Why class-level wrappers of ``django.db.models.QuerySet`` and ``Collector``: a
custom manager or queryset class would only cover models whose managers we
control, and users declare their own managers (``auth.user`` has
``UserManager``). The wrappers are installed once from ``AppConfig.ready``; for
a model that is not registered they cost one set lookup
(``site_sync_models.guards``) and call Django's method unchanged.

For a registered model each wrapper runs Django's method and the capture in one
``transaction.atomic(using=alias, savepoint=False)``: the rows and their outgoing
transactions commit together or not at all. A write of N rows costs a constant
number of extra queries per ~thousand rows: one SELECT of the rows before (for the
before-state), one after, one per foreign key and level for natural keys, one
clock UPDATE and the outbox INSERT of ``outbox.record_many``.

Collector deletes already send ``post_delete`` per row (a registered model has
receivers, so Django never fast-deletes it); the wrapper makes the delete atomic
with its capture, marks it for the raw-SQL guard and writes the outgoing rows in
one ``record_many``. ``SET_NULL``/``SET_DEFAULT`` on a registered child goes
through ``QuerySet.update()`` and is captured there, before the parent's delete.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.db.models.deletion import Collector

from .. import conf, serialization as ser
from ..exceptions import SyncError
from ..params import chunks
from ..registry import site_sync_models
from ..state import is_replaying, state_of
from . import changes, outbox
from .rawsql import captured_writes


@contextmanager
def _capturing(using: str):
    """Atomic, marked for the raw-SQL guard, and flagged so that Django's own nested
    queryset calls (bulk_update calls update()) are not captured twice."""
    per_connection = state_of(using)
    with transaction.atomic(using=using, savepoint=False), captured_writes(using):
        per_connection.bulk_write = True
        try:
            yield
        finally:
            per_connection.bulk_write = False


def _fetch(model, using: str, pks, lock: bool = False) -> dict:
    """pk -> row of ``model`` for ``pks``, in as few SELECTs as the parameter limit allows;
    with ``lock``, locked where the database can (rows about to be written: no
    concurrent writer may change them between this read and the write)."""
    pks = list(dict.fromkeys(pks))
    query = model._base_manager.using(using)
    if lock and connections[using].features.has_select_for_update:
        query = query.select_for_update()
    rows = {}
    for chunk in chunks(pks, connections[using]):
        for obj in query.filter(pk__in=chunk):
            rows[obj.pk] = obj
    return rows


def _update_entries(model, using: str, before: dict) -> list:
    """Outbox entries for rows that were ``before`` and are now in the database."""
    after = _fetch(model, using, before)
    changes.load_related([*before.values(), *after.values()])
    return [changes.update_entry(before[pk], after[pk]) for pk in before if pk in after]


def _unique_checks(model) -> list[tuple[str, ...]]:
    """Attname tuples of every unconditional uniqueness rule of ``model``."""
    checks, _ = model()._get_unique_checks(include_meta_constraints=True)
    return [tuple(model._meta.get_field(name).attname for name in names)
            for _, names in checks]


def _existing(model, using: str, attnames: tuple, keys) -> dict:
    """key tuple -> row, for rows of ``model`` whose ``attnames`` values are in ``keys``."""
    keys = {key for key in keys if None not in key}
    firsts = sorted({key[0] for key in keys}, key=repr)
    found = {}
    for chunk in chunks(firsts, connections[using]):
        query = model._base_manager.using(using).filter(**{f"{attnames[0]}__in": chunk})
        for obj in query:
            key = tuple(getattr(obj, a) for a in attnames)
            if key in keys:
                found[key] = obj
    return found


def _without_conflicts(model, using: str, objs: list) -> list:
    """The objects an ``ignore_conflicts`` insert would write: those clashing with no
    existing row, nor an earlier object, on any uniqueness rule."""
    taken = {}
    for attnames in _unique_checks(model):
        keys = [tuple(getattr(obj, a) for a in attnames) for obj in objs]
        taken[attnames] = set(_existing(model, using, attnames, keys))
    kept = []
    for obj in objs:
        keys = {a: tuple(getattr(obj, n) for n in a) for a in taken}
        if any(None not in key and key in taken[a] for a, key in keys.items()):
            continue
        kept.append(obj)
        for a, key in keys.items():
            taken[a].add(key)
    return kept


def _bulk_create(original, queryset, using, objs, batch_size=None, ignore_conflicts=False,
                 update_conflicts=False, update_fields=None, unique_fields=None, **others):
    """Insert and record exactly the rows written.

    ``ignore_conflicts``: the clashing objects are found first (one SELECT per
    uniqueness rule) and only the others are inserted, without ``ignore_conflicts``:
    Django cannot tell which rows a conflict-ignoring INSERT skipped. A row that
    starts to clash between that SELECT and the INSERT (a concurrent writer) raises
    ``IntegrityError`` instead of being skipped silently.
    ``update_conflicts``: rows are read before and after by ``unique_fields``; rows
    that existed are recorded as updates with their before-state, others as inserts.
    """
    model = queryset.model._meta.concrete_model
    objs = list(objs)
    if not objs:
        return original(queryset, objs, batch_size=batch_size, **others)
    if update_conflicts:
        if not unique_fields:
            raise SyncError(
                f"bulk_create(update_conflicts=True) of {model._meta.label_lower} needs "
                "unique_fields: capture reads the rows by them to tell updates from inserts.")
        names = [model._meta.pk.name if n == "pk" else n for n in unique_fields]
        attnames = tuple(model._meta.get_field(n).attname for n in names)
        keys = list(dict.fromkeys(tuple(getattr(o, a) for a in attnames) for o in objs))
        before = _existing(model, using, attnames, keys)
        result = original(queryset, objs, batch_size=batch_size, update_conflicts=True,
                          update_fields=update_fields, unique_fields=unique_fields, **others)
        after = _existing(model, using, attnames, keys)
        changes.load_related([*before.values(), *after.values()])
        entries = [changes.update_entry(before[key], after[key]) if key in before
                   else changes.insert_entry(after[key]) for key in keys if key in after]
        outbox.record_entries(using, entries)
        return result
    written = _without_conflicts(model, using, objs) if ignore_conflicts else objs
    if written:
        original(queryset, written, batch_size=batch_size, **others)
    changes.load_related(written)
    outbox.record_entries(using, _insert_entries(model, using, written))
    return objs


def _insert_entries(model, using: str, written: list) -> list:
    """Outbox entries of inserted rows; rows whose objects do not hold what the database
    stored (an expression, a value it rounds) are read back, one query per chunk."""
    entries, unsettled = [], []
    for index, obj in enumerate(written):
        try:
            entries.append(changes.insert_entry(obj))
        except ser.Unsettled:
            entries.append(None)
            unsettled.append(index)
    if unsettled:
        stored = _fetch(model, using, [written[index].pk for index in unsettled])
        changes.load_related(list(stored.values()))
        for index in unsettled:
            entries[index] = changes.insert_entry(stored[written[index].pk], settled=True)
    return entries


def _bulk_update(original, queryset, using, objs, fields, batch_size=None, **others):
    model = queryset.model._meta.concrete_model
    objs = list(objs)
    before = _fetch(model, using, [obj.pk for obj in objs], lock=True)
    result = original(queryset, objs, fields, batch_size=batch_size, **others)
    outbox.record_entries(using, _update_entries(model, using, before))
    return result


def _update(original, queryset, using, **kwargs):
    model = queryset.model._meta.concrete_model
    pks = list(queryset.values_list("pk", flat=True))
    before = _fetch(model, using, pks, lock=True)
    result = original(queryset, **kwargs)
    outbox.record_entries(using, _update_entries(model, using, before))
    return result


def _checked_objects(queryset, using: str, objs, *args, **kwargs) -> tuple:
    """bulk_create/bulk_update arguments, the objects listed and checked before the write."""
    objs = list(objs)
    changes.check_before_write(objs, using)
    return (objs, *args), kwargs


def _checked_update(queryset, using: str, **kwargs) -> tuple:
    """update() arguments, each value checked before the write."""
    model, vendor = queryset.model._meta.concrete_model, connections[using].vendor
    for name, value in kwargs.items():
        changes.refuse_unstorable(model, model._meta.get_field(name), value, vendor)
    return (), kwargs


def _wrap_queryset_method(original, capture, check):
    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        model = self.model
        if not site_sync_models.guards(model):
            return original(self, *args, **kwargs)
        using = self._db or router.db_for_write(model, **self._hints)
        if (state_of(using).bulk_write or is_replaying(using)
                or not conf.capture_enabled() or not site_sync_models.is_registered(model)):
            with captured_writes(using):
                return original(self, *args, **kwargs)
        # Refusals come before the atomic block: they leave the caller's transaction usable.
        args, kwargs = check(self, using, *args, **kwargs)
        with _capturing(using):
            return capture(original, self, using, *args, **kwargs)

    wrapper.syncrouter_original = original
    return wrapper


def _wrap_collector_delete(original):
    """Collector deletes of registered rows: atomic with their capture, marked for the
    raw-SQL guard, and their ``post_delete`` records written in one batch. The
    doomed rows are read as stored first (their before-state, a query per model)
    and the rows behind their foreign keys loaded, a query per relation, so
    their natural keys cost no query per deleted row."""

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        models = [*self.data, *(qs.model for qs in self.fast_deletes)]
        if not any(site_sync_models.guards(model) for model in models):
            return original(self, *args, **kwargs)
        with transaction.atomic(using=self.using, savepoint=False), \
                captured_writes(self.using), outbox.batch(self.using):
            doomed = [obj for model, objs in self.data.items()
                      if site_sync_models.is_registered(model) for obj in objs]
            changes.read_before(doomed, self.using)
            changes.load_related(doomed)
            return original(self, *args, **kwargs)

    wrapper.syncrouter_original = original
    return wrapper


_TARGETS = ((QuerySet, "bulk_create", _bulk_create, _checked_objects),
            (QuerySet, "bulk_update", _bulk_update, _checked_objects),
            (QuerySet, "update", _update, _checked_update))


def install() -> None:
    """Wrap the queryset write methods and ``Collector.delete`` once per process."""
    if hasattr(Collector.delete, "syncrouter_original"):
        return
    for cls, name, capture, check in _TARGETS:
        setattr(cls, name, _wrap_queryset_method(getattr(cls, name), capture, check))
    Collector.delete = _wrap_collector_delete(Collector.delete)
