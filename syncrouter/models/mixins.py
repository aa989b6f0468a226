from contextlib import nullcontext

from django.db import models


def _uncaptured(instance, save_kwargs: dict):
    return nullcontext()


#: What wraps every save of a mixin model: ``capture.hooks.capture_scope``, handed
#: over by ``AppConfig.ready`` (``use_save_scope``); the models do not import capture.
_save_scope = _uncaptured


def use_save_scope(scope) -> None:
    """Wrap each ``save_base`` of a mixin model in ``scope(instance, save_kwargs)``."""
    global _save_scope
    _save_scope = scope


class SyncModelMixin(models.Model):
    """Capture every insert, update and delete of this model as an OutgoingTransaction.

    The model needs ``natural_key()`` and a manager with ``get_by_natural_key()``;
    without them a write raises ``SyncError`` and ``manage.py check`` reports it.
    Concrete subclasses are registered with ``site_sync_models`` automatically.
    """

    class Meta:
        abstract = True

    def save_base(self, *args, **kwargs):
        with _save_scope(self, kwargs):
            super().save_base(*args, **kwargs)
