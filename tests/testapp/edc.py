"""Stand-ins for the edc packages the seed READMEs import (edc-base, edc-consent,
edc-offstudy, edc-visit-tracking, edc-metadata), so their model code runs as
written. Each does what the seed says of it and nothing more.
"""
import uuid

import simple_history.models
from django.db import models
from django.utils import timezone

from tests.testapp.models import SubjectVisit


class BaseUuidModel(models.Model):
    """edc-base: a UUID primary key and audit dates."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created = models.DateTimeField(default=timezone.now)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class HistoricalRecords(simple_history.models.HistoricalRecords):
    """edc-base's HistoricalRecords: django-simple-history with a UUID ``history_id``
    (the older tools required one), declared once on an abstract base for every
    concrete model below it, as the seeds do, and writing each history row on the
    alias of its tracked row (a process here holds several nodes' aliases)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("history_id_field", models.UUIDField(default=uuid.uuid4))
        kwargs.setdefault("inherit", True)
        kwargs.setdefault("use_base_model_db", True)
        super().__init__(**kwargs)


class CrfModelManager(models.Manager):
    """A CRF is found by its visit's natural key (the seeds' ``(visit.natural_key(), )``)."""

    def get_by_natural_key(self, visit_key):
        visit = SubjectVisit.objects.db_manager(self.db).get_by_natural_key(*visit_key)
        field = next(f.name for f in self.model._meta.fields if f.related_model is SubjectVisit)
        return self.get(**{field: visit})


class CrfModelMixin(models.Model):
    """edc-visit-tracking: "declares the ``objects`` model manager that includes the
    required manager method"."""

    objects = CrfModelManager()

    class Meta:
        abstract = True

    def get_visit(self):
        return next(getattr(self, f.name) for f in self._meta.fields
                    if f.related_model is SubjectVisit)


class OffStudyMixin:
    """edc-offstudy (reads ``off_study_model``; nothing to check here)."""


class RequiresConsentMixin:
    """edc-consent (reads ``consent_model``; nothing to check here)."""


class MaternalConsent:
    """The consent model the seed's CRFs name."""


class CrfMetaDataManager:
    """edc-metadata: told which visit model a CRF hangs off."""

    def __init__(self, visit_model):
        self.visit_model = visit_model
