"""Models at the edges of what syncrouter carries: a primary key as long as Django
allows, and a list of villages that fixtures and a data migration write."""
from django.db import models

from syncrouter.models import SyncModelMixin
from tests.testapp.models import NaturalKeyManager


class LongKeyItem(SyncModelMixin, models.Model):
    """A character primary key far longer than the 64 characters ``tx_pk`` once held."""

    code = models.CharField(primary_key=True, max_length=2000)
    label = models.CharField(max_length=50)
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.code,)


class Village(SyncModelMixin, models.Model):
    name = models.CharField(max_length=50, unique=True)
    district = models.CharField(max_length=50)
    natural_key_fields = ("name",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.name,)
