"""The older tools' names, for code written against edc-sync, django-offline and
django-collect-offline. New code uses ``syncrouter.registry.site_sync_models``.

Everything here ends in the one registry: ``site_offline_models`` is
``site_sync_models`` under django-offline's name, and the wrapper classes
``SyncModel``/``OfflineModel`` are accepted where the older tools took them.
They carry no behaviour: capture and replay are built in, so a wrapper has
nothing left to do. A wrapper class that is not one of these two (a subclass
with overrides, say) is refused, since its overrides would silently not run.

What each old form does now is listed in the README section "Coming from
edc-sync / django-offline / django-collect-offline".
"""
from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps

from . import history
from .exceptions import AlreadyRegistered
from .legacy import ListedModel, OfflineModel, SyncModel, legacy_labels
from .registry import SiteSyncModels, site_sync_models

__all__ = ["AlreadyRegistered", "ListedModel", "OfflineModel", "SyncModel",
           "site_offline_models", "site_sync_models"]


class OfflineModels:
    """django-offline's ``site_offline_models``: the one registry under its old name.

    ``register_historical = False`` (an attribute the older tools had) registers
    models without their history models.
    """

    register_historical = True

    def __init__(self, registry: SiteSyncModels):
        self._registry = registry

    def register(self, models: Iterable | None = None, wrapper_cls=None, **keywords) -> None:
        labels = legacy_labels(models, (wrapper_cls,), keywords)
        self._registry.register(labels, history=self.register_historical)

    def register_for_app(self, app_label: str, exclude_models: Iterable[str] | None = None,
                         exclude_model_classes: tuple | None = None) -> None:
        """Register every model of an app but those excluded (by label or base class).

        History models are left to come with their tracked models; proxies are
        left out (captured as their concrete model).
        """
        excluded = {label.lower() for label in exclude_models or ()}
        labels = []
        for model in apps.get_app_config(app_label).get_models():
            if (model._meta.label_lower in excluded or model._meta.proxy
                    or (exclude_model_classes and issubclass(model, exclude_model_classes))
                    or (self.register_historical and history.is_history_model(model))):
                continue
            labels.append(model._meta.label_lower)
        self.register(labels)

    def site_models(self, app_label: str | None = None, sync: bool | None = None,
                    offline: bool | None = None):
        return self._registry.site_models(app_label, sync=sync, offline=offline)

    def __getattr__(self, name: str):
        return getattr(self._registry, name)

    def __contains__(self, label: str) -> bool:
        return label in self._registry

    def __iter__(self):
        return iter(self._registry)


site_offline_models = OfflineModels(site_sync_models)
