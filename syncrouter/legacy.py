"""The older tools' call forms that the registry itself accepts.

edc-sync's ``register(labels, SyncModel)`` and ``(label, SyncModel)`` items,
django-offline's ``register(models=..., wrapper_cls=...)`` and the listing
``site_models(app, sync=...)``: ``registry.SiteSyncModels`` takes them through
this module. The older tools' names themselves (``site_offline_models``) are
in ``compat``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import apps
from django.db import models

from .exceptions import SyncError
from .natural_keys import require_natural_key

if TYPE_CHECKING:
    from .registry import SiteSyncModels


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
