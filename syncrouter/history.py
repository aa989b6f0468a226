"""django-simple-history: a registered model's history rows travel with it.

A model with ``history = HistoricalRecords()`` writes a row of its generated
history model (``HistoricalCrf``) for every change. The older tools registered
that model along with the tracked one; so does ``site_sync_models.register``
(and the registration of a ``SyncModelMixin`` model), unless the tracked model
says ``sync_history = False`` or ``register(..., history=False)`` is used.

Three things make a history model travel:

* **A natural key**, which the generated class does not have. With a UUID
  ``history_id`` (``SIMPLE_HISTORY_HISTORY_ID_USE_UUID = True``, or
  ``HistoricalRecords(history_id_field=UUIDField(default=uuid.uuid4))``) the
  key is ``(history_id,)`` and the primary key travels as it is. With the
  default integer ``history_id`` each node numbers its own rows, so the key is
  the tracked row's primary key and ``history_date``: unique unless one object
  is saved twice within the clock's resolution, in which case the second row
  meets the first and is reported as a conflict, never merged.
* **A tracked primary key that travels**: each history row holds a copy of its
  tracked row's primary key. An auto-increment key means something else on
  every node, so such a model's history cannot travel and registering it
  raises ``SyncError`` (opt out, or give the model a UUID key). So does a
  history with ``related_name`` (a foreign key to the tracked row, whose insert
  is captured after the history row) or ``m2m_fields`` (history models of its
  own, which do not travel).
* **No second history row on the replaying node.** Replay writes the tracked
  row itself; its history row arrives as its own transaction. The raw writes
  of replay already send no ``post_save`` that django-simple-history acts on,
  but ``save()`` (``sync_replay_save = True``, multi-table inheritance),
  deletes and many-to-many changes do: ``HistoricalRecords`` is told to write
  nothing on an alias while it replays.

History is append-only on its way to the server: inserts and updates of
history rows travel, deletes do not. Pruning a laptop's history
(``clean_old_history``) frees the laptop's disk and leaves the server's audit
trail whole; old history rows may also point to rows deleted since, whose
natural keys could no longer be computed.
"""
from __future__ import annotations

import functools

from django.db import models

from . import serialization as ser
from .exceptions import SyncError
from .state import is_replaying

#: The tracked model's attribute that keeps its history model out (``False``).
OPT_OUT = "sync_history"


def history_model(model: type[models.Model]) -> type[models.Model] | None:
    """The django-simple-history model that tracks ``model``, if any."""
    manager = getattr(model._meta, "simple_history_manager_attribute", None)
    return None if manager is None else getattr(model, manager).model


def is_history_model(model: type[models.Model]) -> bool:
    """Whether django-simple-history generated ``model`` (a history model, or one of
    its many-to-many history models)."""
    return isinstance(model.__dict__.get("instance_type"), type)


def tracked_model(model: type[models.Model]) -> type[models.Model] | None:
    """The model ``model`` is the history model of, if it is one."""
    tracked = model.__dict__.get("instance_type")
    if isinstance(tracked, type) and history_model(tracked) is model:
        return tracked
    return None


def companion(model: type[models.Model], wanted: bool = True) -> type[models.Model] | None:
    """The history model to register along with ``model``, ready to travel.

    None if ``model`` has no history or it is left out (``wanted`` False, or
    ``sync_history = False`` on the model). Raises ``SyncError`` if its history
    cannot travel.
    """
    history = history_model(model)
    if history is None:
        return None
    _install_replay_guard()  # even when left out: replay must not write history here
    if not wanted or not getattr(model, OPT_OUT, True):
        return None
    prepare(history, model)
    return history


def prepare(history: type[models.Model], tracked: type[models.Model]) -> None:
    """Check that ``history`` can travel and give it a natural key if it has none."""
    label, tracked_label = history._meta.label_lower, tracked._meta.label_lower
    opt_out = (f"set {OPT_OUT} = False on {tracked.__name__} or register it with "
               "history=False to leave its history out")
    if not ser.pk_travels(tracked):
        raise SyncError(
            f"{label} cannot travel: each of its rows copies the primary key of a "
            f"{tracked_label} row, an auto-increment key that differs on every node. Give "
            f"{tracked_label} a UUID primary key, or {opt_out}.")
    if any(field.name == "history_relation" for field in history._meta.fields):
        raise SyncError(
            f"{label} has a foreign key to {tracked_label} (HistoricalRecords(related_name="
            "...)), but a history row is captured before the insert of its tracked row, so "
            f"it would wait for it forever on the replaying node. Drop related_name, or "
            f"{opt_out}.")
    if getattr(history, "_history_m2m_fields", None):
        raise SyncError(
            f"{label} records many-to-many changes in models of its own "
            f"(HistoricalRecords(m2m_fields=...)), which do not travel, so the history would "
            f"arrive incomplete. Drop m2m_fields, or {opt_out}.")
    if _has_natural_key(history):
        return
    if ser.pk_travels(history):
        names = (history._meta.pk.attname,)
    else:
        names = (tracked._meta.pk.attname, "history_date")
    history.natural_key = _natural_key(names)
    history._syncrouter_history_key = names
    _add_lookup(history)


def _has_natural_key(model) -> bool:
    return callable(getattr(model, "natural_key", None)) and callable(
        getattr(model._default_manager, "get_by_natural_key", None))


def _natural_key(names: tuple[str, ...]):
    # Plain attribute reads, so that replay's batch lookups see which columns make the key.
    def natural_key(self) -> tuple:
        return tuple(getattr(self, name) for name in names)

    return natural_key


class _HistoryKeyLookup:
    """Mixed into a history model's default manager: ``get_by_natural_key``."""

    def get_by_natural_key(self, *key):
        names = self.model._syncrouter_history_key
        if len(key) != len(names):
            raise ValueError(f"{self.model._meta.label_lower} natural keys have {len(names)} "
                             f"parts ({', '.join(names)}); got {len(key)}")
        return self.get(**dict(zip(names, key)))


def _add_lookup(history) -> None:
    """Give the default manager of ``history`` a ``get_by_natural_key``.

    The manager is Django's auto-created one, of a class every model shares, so
    the method goes on a subclass made for this model's manager instances:
    both the declared one and the per-model copies Django hands out (which
    ``db_manager()`` copies in turn, keeping the class).
    """
    name = history._meta.default_manager.name
    for manager in [*history._meta.local_managers, *history._meta.managers]:
        if manager.name == name and not isinstance(manager, _HistoryKeyLookup):
            manager.__class__ = type(manager.__class__.__name__,
                                     (_HistoryKeyLookup, manager.__class__), {})


def _install_replay_guard() -> None:
    """Make ``HistoricalRecords`` write no history row for a write made by replay."""
    from simple_history.models import HistoricalRecords

    original = HistoricalRecords.create_historical_record
    if hasattr(original, "syncrouter_original"):
        return

    @functools.wraps(original)
    def create_historical_record(self, instance, history_type, using=None):
        alias = using or instance._state.db  # m2m_changed passes no alias
        if alias and is_replaying(alias):
            return None
        return original(self, instance, history_type, using=using)

    create_historical_record.syncrouter_original = original
    HistoricalRecords.create_historical_record = create_historical_record
