from django.db import models

from ..capture import hooks


class SyncModelMixin(models.Model):
    """Capture every insert, update and delete of this model as an OutgoingTransaction.

    The model needs ``natural_key()`` and a manager with ``get_by_natural_key()``;
    without them a write raises ``SyncError`` and ``manage.py check`` reports it.
    Concrete subclasses are registered with ``site_sync_models`` automatically.
    """

    class Meta:
        abstract = True

    def save_base(self, *args, **kwargs):
        with hooks.capture_scope(self, kwargs):
            super().save_base(*args, **kwargs)
