"""Where capture attaches to a registered model.

* ``capture_scope`` wraps ``save_base`` in an atomic block on the write's alias.
  Django sends ``post_save`` after its own atomic block has closed, so without this
  an autocommit save would be committed before its outbox row is written
  (guarantee 1). Inside the block, before a save that may update a row, the
  row is read as stored (``changes.read_before``), so the update can carry
  exactly the fields it changes and their old values (guarantee 6). Values no
  database could store or send as they are are refused first
  (``changes.check_before_write``), so nothing is written. Deletes
  and M2M changes already signal inside Django's atomic block.
* The queryset paths that send no ``post_save`` (bulk_create, bulk_update,
  update(), Collector deletes) are captured in ``queryset.py``.
* An M2M change through a registered explicit ``through`` model is captured as
  rows of that model, not as an M2M change of the owner (that would be twice).
* Signal receivers are connected per registered model and its proxies, never
  globally: a global ``post_delete`` receiver would disable Django's fast delete
  for every model in the project.

Mixin models get ``capture_scope`` from ``SyncModelMixin``; models registered
through ``site_sync_models`` get the same wrapper installed on their class.
``install`` and ``uninstall`` run when the registry says a model came or went
(``registry.model_registered``). Deletes of a django-simple-history model's rows
are not captured (``history.py``: history is append-only on its way).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

from django.apps import apps
from django.db import router, transaction
from django.db.models import signals

from .. import conf, history
from ..models.mixins import SyncModelMixin
from ..registry import model_registered, model_unregistered, site_sync_models
from ..state import is_replaying
from . import changes
from .rawsql import captured_writes


def capture_scope(instance, save_kwargs: dict):
    """Atomic block on the alias ``save_base`` will write to, when capture is on."""
    if save_kwargs.get("raw") or not conf.capture_enabled():
        return nullcontext()
    using = save_kwargs.get("using") or router.db_for_write(type(instance), instance=instance)
    save_kwargs["using"] = using
    if is_replaying(using):
        return nullcontext()
    return _captured_save(instance, using, _may_update(instance, save_kwargs))


def _may_update(instance, save_kwargs: dict) -> bool:
    """Whether ``save_base`` may UPDATE an existing row (Django inserts straight away a new
    instance whose primary key has a default, and any with ``force_insert``)."""
    if save_kwargs.get("force_insert") or instance.pk is None:
        return False
    pk = instance._meta.pk
    if instance._state.adding and not save_kwargs.get("force_update") and (
            pk.has_default() or getattr(pk, "has_db_default", lambda: False)()):
        return False
    return True


@contextmanager
def _captured_save(instance, using: str, may_update: bool):
    changes.check_before_write([instance], using)  # outside: a refusal breaks no transaction
    with transaction.atomic(using=using, savepoint=False), captured_writes(using):
        if may_update:
            changes.read_before([instance], using)
        yield


def _on_post_save(sender, instance, created, raw, using, update_fields, **kwargs):
    if raw or not conf.capture_enabled() or is_replaying(using):
        return
    changes.record_save(instance, using, created, update_fields)


def _on_post_delete(sender, instance, using, origin=None, **kwargs):
    if not conf.capture_enabled() or is_replaying(using):
        return
    changes.record_delete(instance, using)


def _on_m2m_changed(sender, instance, action, reverse, model, pk_set, using, **kwargs):
    if not conf.capture_enabled() or is_replaying(using):
        return
    if site_sync_models.is_registered(sender):
        return  # a registered ``through`` model: its rows are captured as rows
    changes.record_m2m(sender, instance, action, reverse, model, pk_set, using)


def _senders(model):
    """The model and every proxy of it: Django signals with the proxy as sender."""
    yield model
    for candidate in apps.get_models():
        if candidate._meta.proxy and candidate._meta.concrete_model is model:
            yield candidate


def _uid(kind, model):
    return f"syncrouter.{kind}.{model._meta.label_lower}"


def install(model) -> None:
    keeps_deletes = history.tracked_model(model) is None
    for sender in _senders(model):
        signals.post_save.connect(_on_post_save, sender=sender, dispatch_uid=_uid("save", sender))
        if keeps_deletes:
            signals.post_delete.connect(_on_post_delete, sender=sender,
                                        dispatch_uid=_uid("delete", sender))
    for field in model._meta.local_many_to_many:
        through = field.remote_field.through
        signals.m2m_changed.connect(_on_m2m_changed, sender=through,
                                    dispatch_uid=_uid("m2m", through))
    if not issubclass(model, SyncModelMixin):
        _patch(model)


def uninstall(model) -> None:
    for sender in _senders(model):
        signals.post_save.disconnect(sender=sender, dispatch_uid=_uid("save", sender))
        signals.post_delete.disconnect(sender=sender, dispatch_uid=_uid("delete", sender))
    for field in model._meta.local_many_to_many:
        through = field.remote_field.through
        signals.m2m_changed.disconnect(sender=through, dispatch_uid=_uid("m2m", through))
    original = model.__dict__.get("_syncrouter_original")
    if original:
        for name, value in original.items():
            if value is None:
                delattr(model, name)
            else:
                setattr(model, name, value)
        del model._syncrouter_original


def _patch(model) -> None:
    """Give a model we do not own the mixin's atomic, captured ``save_base``."""
    if "_syncrouter_original" in model.__dict__:
        return
    model._syncrouter_original = {"save_base": model.__dict__.get("save_base")}
    save_base = model.save_base

    def patched_save_base(self, *args, **kwargs):
        with capture_scope(self, kwargs):
            save_base(self, *args, **kwargs)

    model.save_base = patched_save_base


def _on_registered(sender, model, **kwargs) -> None:
    install(model)


def _on_unregistered(sender, model, **kwargs) -> None:
    uninstall(model)


model_registered.connect(_on_registered, dispatch_uid="syncrouter.capture.hooks")
model_unregistered.connect(_on_unregistered, dispatch_uid="syncrouter.capture.hooks")
