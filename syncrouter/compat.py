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
from django.db import models

from . import history
from .exceptions import AlreadyRegistered, SyncError
from .registry import SiteSyncModels, require_natural_key, site_sync_models

__all__ = ["AlreadyRegistered", "ListedModel", "OfflineModel", "SyncModel",
           "site_offline_models", "site_sync_models"]


class SyncModel:
    """edc-sync's wrapper of a model instance, kept as a name to pass to ``register``.

    Wrapping an instance checks, as the older tools did, that its model can be
    found on another node (``natural_key`` and ``get_by_natural_key``).
    """

    def __init__(self, instance: models.Model):
        require_natural_key(type(instance))
        self.instance = instance

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.instance!r})"

    def __str__(self) -> str:
        return self.instance._meta.label_lower


class OfflineModel(SyncModel):
    """django-offline's name for ``SyncModel``."""


WRAPPERS = (SyncModel, OfflineModel)

#: The keyword names the older tools' ``register`` took.
_KEYWORDS = {"models", "wrapper_cls", "sync_model_cls"}


def legacy_labels(labels, args: tuple, keywords: dict) -> list:
    """The labels of an older tools' ``register`` call.

    Accepts ``register(labels, Wrapper)``, ``register(models=labels,
    wrapper_cls=Wrapper)`` (or ``sync_model_cls=``), and edc-sync's items of
    the form ``(label, Wrapper)``. Raises ``TypeError`` for any other argument,
    as a wrong call would, and ``SyncError`` for a wrapper syncrouter does not
    know.
    """
    unknown = set(keywords) - _KEYWORDS
    if unknown or len(args) > 1:
        extra = f"unexpected keyword argument {sorted(unknown)[0]!r}" if unknown else (
            f"takes at most 2 positional arguments but {len(args) + 1} were given")
        raise TypeError(f"site_sync_models.register() {extra}")
    if "models" in keywords:
        if labels is not None:
            raise TypeError("site_sync_models.register() got the models twice "
                            "(positional and models=)")
        labels = keywords["models"]
    if labels is None:
        raise TypeError("site_sync_models.register() needs the models to register")
    wrappers = [*args, *(keywords[k] for k in ("wrapper_cls", "sync_model_cls") if k in keywords)]
    for wrapper in wrappers:
        _check_wrapper(wrapper)
    if isinstance(labels, (str, type)):
        labels = [labels]
    result = []
    for item in labels:
        if isinstance(item, tuple) and len(item) == 2:  # edc-sync: (label, wrapper)
            item, wrapper = item
            _check_wrapper(wrapper)
        result.append(item)
    return result


def _check_wrapper(wrapper) -> None:
    if wrapper is not None and wrapper not in WRAPPERS:
        raise SyncError(
            f"{wrapper!r} is not a wrapper syncrouter knows. Capture and replay are built in, "
            "so a wrapper class has no behaviour to add and its methods would not run; pass "
            "syncrouter.compat.SyncModel or OfflineModel, or nothing.")


class ListedModel:
    """One model in the older tools' ``site_models(app, sync=...)`` listing."""

    __slots__ = ("model", "app_label", "model_name", "verbose_name", "sync")

    def __init__(self, model: type[models.Model], sync: bool):
        self.model = model
        self.app_label, self.model_name = model._meta.app_label, model._meta.model_name
        self.verbose_name = model._meta.verbose_name
        self.sync = sync

    @property
    def offline(self) -> bool:
        """django-offline's name for ``sync``."""
        return self.sync

    def __repr__(self) -> str:
        return f"ListedModel({self.app_label}.{self.model_name}, sync={self.sync})"

    def __str__(self) -> str:
        return str(self.verbose_name)


def listed_models(registry: SiteSyncModels, app_label: str | None, sync: bool | None,
                  offline: bool | None):
    """The models of ``app_label`` registered (``sync=True``) or not (``False``), as
    ``ListedModel`` items sorted by verbose name; without an app, a dict
    ``{app_label: [items]}`` over every app that has some.

    ``offline`` is django-offline's spelling of ``sync``. History models are
    listed like any model (registered along with their tracked model), as in the
    older tools. Proxies are left out: they are captured as their concrete
    model and cannot be registered. Where the older tools returned None for an
    app with no such model, this returns an empty list.
    """
    if sync is not None and offline is not None and sync != offline:
        raise TypeError(f"site_models() got sync={sync} and offline={offline}; they mean the "
                        "same, pass one")
    wanted = sync if sync is not None else offline
    configs = [apps.get_app_config(app_label)] if app_label else apps.get_app_configs()
    listing = {}
    for config in configs:
        items = [ListedModel(model, registry.is_registered(model))
                 for model in config.get_models() if not model._meta.proxy]
        items = sorted((item for item in items if item.sync == wanted),
                       key=lambda item: str(item.verbose_name))
        if items:
            listing[config.label] = items
    return listing.get(app_label, []) if app_label else listing


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
