"""The benchmark workload: a visit and a case report form, registered and not.

``Visit``/``Crf`` are registered (``SyncModelMixin``); ``PlainVisit``/``PlainCrf``
are field-for-field twins that nothing captures, the baseline every ratio is taken
against. ``OldTransaction`` is the transaction table of the reproduced older tools.
The app has no migrations: the runner creates its tables with ``migrate
--run-syncdb`` on fresh databases.
"""
import uuid

from django.db import models

from syncrouter.models import SyncModelMixin


class VisitManager(models.Manager):
    def get_by_natural_key(self, subject_identifier, visit_code):
        return self.get(subject_identifier=subject_identifier, visit_code=visit_code)


class CrfManager(models.Manager):
    def get_by_natural_key(self, subject_identifier, visit_code):
        return self.get(visit__subject_identifier=subject_identifier,
                        visit__visit_code=visit_code)


class VisitFields(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    subject_identifier = models.CharField(max_length=20)
    visit_code = models.CharField(max_length=10)
    report_datetime = models.DateTimeField()
    objects = VisitManager()

    class Meta:
        abstract = True
        unique_together = ("subject_identifier", "visit_code")

    def natural_key(self):
        return (self.subject_identifier, self.visit_code)


class CrfFields(models.Model):
    """~15 fields of mixed types and a 200-character text; subclasses add the visit link."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    report_datetime = models.DateTimeField()
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1, null=True)
    height_cm = models.FloatField(null=True)
    temperature = models.FloatField(null=True)
    systolic = models.IntegerField(null=True)
    diastolic = models.IntegerField(null=True)
    is_smoker = models.BooleanField(default=False)
    cigarettes_per_day = models.IntegerField(null=True)
    visit_date = models.DateField(null=True)
    arrival_time = models.TimeField(null=True)
    consult_duration = models.DurationField(null=True)
    reference = models.UUIDField(null=True)
    outcome = models.CharField(max_length=10, default="well")
    comments = models.TextField(max_length=200, blank=True, default="")
    extra = models.JSONField(null=True)
    objects = CrfManager()

    class Meta:
        abstract = True


class Visit(SyncModelMixin, VisitFields):
    pass


class Crf(SyncModelMixin, CrfFields):
    visit = models.OneToOneField(Visit, on_delete=models.PROTECT)

    def natural_key(self):
        return self.visit.natural_key()

    natural_key.dependencies = ["benchapp.visit"]


class PlainVisit(VisitFields):
    """Unregistered twin of ``Visit``."""


class PlainCrf(CrfFields):
    """Unregistered twin of ``Crf``."""

    visit = models.OneToOneField(PlainVisit, on_delete=models.PROTECT)

    def natural_key(self):
        return self.visit.natural_key()

    natural_key.dependencies = ["benchapp.plainvisit"]


class OldTransaction(models.Model):
    """The older tools' transaction row: Django-serialized JSON, written with the ORM."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    tx = models.TextField()
    tx_name = models.CharField(max_length=128)
    tx_pk = models.CharField(max_length=64)
    producer = models.CharField(max_length=200)
    hostname = models.CharField(max_length=200)
    action = models.CharField(max_length=1)
    timestamp = models.DateTimeField(auto_now_add=True)
    is_consumed = models.BooleanField(default=False)
    consumed_datetime = models.DateTimeField(null=True)
