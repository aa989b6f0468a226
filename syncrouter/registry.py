"""The registry of models whose writes are captured and may be replayed.

A model enters it in one of two ways: its class inherits ``SyncModelMixin``
(registered when the app registry is ready), or an app's ``sync_models.py``
calls ``site_sync_models.register([...])`` for models it does not own, such as
``auth.user``. Replay writes only to models found here (guarantee 8). A model
tracked by django-simple-history brings its history model (``history.py``).

The older tools' call forms (a wrapper class after the list, ``models=[...]``,
``site_models(app, sync=...)``) are accepted by way of ``legacy.py`` and explained
in ``compat.py``.

Capture attaches to a model when it is registered: the registry sends
``model_registered`` and ``model_unregistered``, and ``capture.hooks`` receives
them. The registry sits below capture and imports none of it.
"""
from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.db import models
from django.dispatch import Signal

from . import history as history_support
from .exceptions import AlreadyRegistered, SyncError
from .legacy import legacy_labels, listed_models
from .natural_keys import missing_natural_key_parts, require_natural_key

__all__ = ["SiteSyncModels", "missing_natural_key_parts", "model_registered",
           "model_unregistered", "require_natural_key", "site_sync_models"]

#: Sent with ``model`` when a model enters the registry (capture attaches to it) ...
model_registered = Signal()
#: ... and when it leaves (capture lets go of it).
model_unregistered = Signal()


class SiteSyncModels:
    def __init__(self) -> None:
        self._models: dict[str, type[models.Model]] = {}
        #: Bumped on every change, so caches derived from the registry know to refresh.
        self.version = 0
        self._tables: tuple[int, frozenset[str]] = (-1, frozenset())
        #: tracked model label -> the history model registered along with it
        self._companions: dict[str, type[models.Model]] = {}
        #: mixin model -> why its history could not be registered (``manage.py check``)
        self.history_problems: dict[type[models.Model], str] = {}

    def register(self, labels: Iterable[str | type[models.Model]] | str | type[models.Model]
                 | None = None, *legacy, history: bool = True, **legacy_keywords) -> None:
        """Register models by ``"app_label.model_name"`` (or class) for capture and replay.

        A model tracked by django-simple-history brings its history model along,
        unless ``history`` is False or the model sets ``sync_history = False``.
        ``legacy`` and ``legacy_keywords`` take the older tools' forms
        (``register(labels, SyncModel)``, ``register(models=[...])``, see
        ``compat.legacy_labels``).

        Raises ``SyncError`` if a model is unknown, already registered
        (``AlreadyRegistered``), has no natural key, or has a history that
        cannot travel.
        """
        if legacy or legacy_keywords or labels is None:
            labels = legacy_labels(labels, legacy, legacy_keywords)
        if isinstance(labels, (str, type)):
            labels = [labels]
        for label in labels:
            model = self._resolve(label)
            key = model._meta.label_lower
            if key in self._models:
                raise AlreadyRegistered(f"{key} is already registered with site_sync_models.")
            tracked = history_support.tracked_model(model)
            if tracked is not None:  # a history model registered by hand
                history_support.prepare(model, tracked)
            require_natural_key(model)
            self._add_with_history(model, history_support.companion(model, history))

    def register_mixin_model(self, model: type[models.Model]) -> None:
        """Register a ``SyncModelMixin`` model; its natural key is checked on write and by
        ``check``, and so is a history that cannot travel (the model goes without it)."""
        if model._meta.label_lower in self._models:
            return
        try:
            companion = history_support.companion(model)
        except SyncError as exc:  # at start-up: reported by manage.py check instead
            self.history_problems[model] = str(exc)
            companion = None
        self._add_with_history(model, companion)

    def _add_with_history(self, model, companion) -> None:
        self._add(model)
        if companion is not None and companion._meta.label_lower not in self._models:
            self._add(companion)
            self._companions[model._meta.label_lower] = companion

    def _add(self, model: type[models.Model]) -> None:
        self._models[model._meta.label_lower] = model
        self.version += 1
        model_registered.send(sender=type(self), model=model)

    def unregister(self, label: str | type[models.Model]) -> None:
        """Take a model out (and the history model registered along with it)."""
        model = self._models.pop(self._resolve(label)._meta.label_lower)
        self.version += 1
        model_unregistered.send(sender=type(self), model=model)
        companion = self._companions.pop(model._meta.label_lower, None)
        if companion is not None and companion._meta.label_lower in self._models:
            self.unregister(companion)

    @staticmethod
    def _resolve(label: str | type[models.Model]) -> type[models.Model]:
        if isinstance(label, type):
            model = label
        else:
            try:
                model = apps.get_model(label)
            except (LookupError, ValueError) as exc:
                raise SyncError(f"Cannot register {label!r}: {exc}") from None
        if model._meta.proxy:
            raise SyncError(
                f"Cannot register the proxy model {model._meta.label_lower}: register its "
                f"concrete model {model._meta.concrete_model._meta.label_lower}; proxies are "
                "captured as it."
            )
        return model

    def get(self, label: str) -> type[models.Model] | None:
        """The registered model for ``label`` (case-insensitive), or None."""
        return self._models.get(label.lower())

    def is_registered(self, model: type[models.Model]) -> bool:
        return self._models.get(model._meta.concrete_model._meta.label_lower) is not None

    def db_tables(self) -> frozenset[str]:
        """Lower-cased tables that hold registered data: each registered model's own table,
        its MTI parents' and its many-to-many tables (guarded by the raw-SQL guard)."""
        if self._tables[0] != self.version:
            self._tables = (self.version, self._collect_tables())
        return self._tables[1]

    def _collect_tables(self) -> frozenset[str]:
        tables = set()
        for model in self._models.values():
            for owner in [model, *model._meta.get_parent_list()]:
                tables.add(owner._meta.db_table.lower())
                tables.update(f.remote_field.through._meta.db_table.lower()
                              for f in owner._meta.local_many_to_many)
        return frozenset(tables)

    def guards(self, model: type[models.Model]) -> bool:
        """Whether writes to ``model`` change registered data: a registered model (or a
        proxy of one), or the many-to-many table of one (written by the M2M managers)."""
        return model._meta.db_table.lower() in self.db_tables()

    def site_models(self, app_label: str | None = None, sync: bool | None = None,
                    offline: bool | None = None):
        """Registered models, of one app if ``app_label`` is given.

        With ``sync`` (or django-offline's ``offline``) it answers as the older
        tools did: an app's models, registered or not, wrapped with ``.model``,
        ``.model_name`` and ``.sync`` (``compat.listed_models``).
        """
        if sync is not None or offline is not None:
            return listed_models(self, app_label, sync, offline)
        return [m for m in self._models.values() if app_label in (None, m._meta.app_label)]

    def __contains__(self, label: str) -> bool:
        return label.lower() in self._models

    def __iter__(self):
        return iter(list(self._models.values()))


site_sync_models = SiteSyncModels()
