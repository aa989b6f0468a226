from django.apps import AppConfig, apps
from django.utils.module_loading import autodiscover_modules


class SyncRouterConfig(AppConfig):
    name = "syncrouter"
    verbose_name = "syncrouter"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Join the layers, register mixin models, import each installed app's
        ``sync_models`` module (or ``offline_models``, django-offline's name for it),
        and install the queryset capture, the raw-SQL guard and the policy for
        Django's own flush, loaddata and migrations (once per process).

        The models sit below capture, transfer and replay and import none of
        them: here the mixin gets capture's save wrapper and the transaction
        managers get the copy and replay querysets. Importing ``capture.hooks``
        connects capture to the registry before the first model is registered.
        """
        from . import checks  # noqa: F401  (registers the system checks)
        from .capture import hooks, local, queryset, rawsql
        from .models import SyncModelMixin, managers, mixins
        from .registry import site_sync_models
        from .replay.runner import ReplayQuerySet
        from .transfer.copy import OutboxQuerySet

        mixins.use_save_scope(hooks.capture_scope)
        managers.use_querysets(outgoing=OutboxQuerySet, incoming=ReplayQuerySet)
        for model in apps.get_models():
            if issubclass(model, SyncModelMixin) and not model._meta.proxy:
                site_sync_models.register_mixin_model(model)
        autodiscover_modules("sync_models", "offline_models")
        queryset.install()
        rawsql.install()
        local.install()
