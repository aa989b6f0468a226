"""The registry of models whose writes are captured and may be replayed.

A model enters it in one of two ways: its class inherits ``SyncModelMixin``
(registered when the app registry is ready), or an app's ``sync_models.py``
calls ``site_sync_models.register([...])`` for models it does not own, such as
``auth.user``. Replay writes only to models found here (guarantee 8).
"""
from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.db import models

from .exceptions import SyncError


def missing_natural_key_parts(model: type[models.Model]) -> list[str]:
    """What ``model`` lacks to be found by natural key on another node."""
    missing = []
    if not callable(getattr(model, "natural_key", None)):
        missing.append(f"the model method {model.__name__}.natural_key()")
    if not callable(getattr(model._default_manager, "get_by_natural_key", None)):
        missing.append(
            f"the manager method {model.__name__}.{model._default_manager.name}.get_by_natural_key()"
        )
    return missing


def require_natural_key(model: type[models.Model]) -> None:
    missing = missing_natural_key_parts(model)
    if missing:
        raise SyncError(
            f"{model._meta.label_lower} cannot be synchronised: it needs {' and '.join(missing)}."
        )


class SiteSyncModels:
    def __init__(self) -> None:
        self._models: dict[str, type[models.Model]] = {}
        #: Bumped on every change, so caches derived from the registry know to refresh.
        self.version = 0
        self._tables: tuple[int, frozenset[str]] = (-1, frozenset())

    def register(self, labels: Iterable[str | type[models.Model]]) -> None:
        """Register models by ``"app_label.model_name"`` (or class) for capture and replay.

        Raises ``SyncError`` if a model is unknown, already registered, or has no
        natural key.
        """
        if isinstance(labels, (str, type)):
            labels = [labels]
        for label in labels:
            model = self._resolve(label)
            key = model._meta.label_lower
            if key in self._models:
                raise SyncError(f"{key} is already registered with site_sync_models.")
            require_natural_key(model)
            self._add(model)

    def register_mixin_model(self, model: type[models.Model]) -> None:
        """Register a ``SyncModelMixin`` model; its natural key is checked on write and by ``check``."""
        if model._meta.label_lower not in self._models:
            self._add(model)

    def _add(self, model: type[models.Model]) -> None:
        from .capture import hooks

        self._models[model._meta.label_lower] = model
        self.version += 1
        hooks.install(model)

    def unregister(self, label: str | type[models.Model]) -> None:
        from .capture import hooks

        model = self._models.pop(self._resolve(label)._meta.label_lower)
        self.version += 1
        hooks.uninstall(model)

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

    def site_models(self, app_label: str | None = None) -> list[type[models.Model]]:
        """Registered models, of one app if ``app_label`` is given."""
        return [m for m in self._models.values() if app_label in (None, m._meta.app_label)]

    def __contains__(self, label: str) -> bool:
        return label.lower() in self._models

    def __iter__(self):
        return iter(list(self._models.values()))


site_sync_models = SiteSyncModels()
