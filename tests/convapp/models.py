"""The schema of the convergence tests: every kind of link replay must keep in order.

FK chains with each ``on_delete`` (``Family`` -PROTECT-> ``Person`` -CASCADE->
``Visit``; ``Site`` -SET_NULL-> ``Person``), a self-referential FK
(``Person.mentor``), a many-to-many between two synced models
(``Person.tags``), a multi-table-inheritance child (``Leader``) and a model with
an integer auto primary key (``Site``, found on other nodes by natural key only).
Every other model has a UUID primary key. ``note`` and ``hits`` are the fields
histories edit; natural keys are ``code`` fields that histories rename.
"""
import uuid

from django.db import models

from syncrouter.models import SyncModelMixin


class CodeManager(models.Manager):
    def get_by_natural_key(self, code):
        return self.get(code=code)


class Coded(SyncModelMixin, models.Model):
    code = models.CharField(max_length=30, unique=True)
    note = models.CharField(max_length=60, blank=True, default="")
    hits = models.IntegerField(default=0)
    objects = CodeManager()

    class Meta:
        abstract = True

    def natural_key(self):
        return (self.code,)

    def __str__(self):
        return self.code


class Site(Coded):
    """Integer auto primary key: each node numbers its own rows."""


class Tag(Coded):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)


class Family(Coded):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)


class Person(Coded):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    family = models.ForeignKey(Family, on_delete=models.PROTECT)
    site = models.ForeignKey(Site, on_delete=models.SET_NULL, null=True, blank=True)
    mentor = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="mentees")
    tags = models.ManyToManyField(Tag, blank=True)

    def natural_key(self):
        return (self.code,)

    natural_key.dependencies = ["convapp.family", "convapp.site"]


class Leader(Person):
    """Multi-table inheritance: a Person row and a Leader row, one natural key."""

    rank = models.IntegerField(default=0)
    objects = CodeManager()


class VisitManager(models.Manager):
    def get_by_natural_key(self, person_code, code):
        return self.get(person__code=person_code, code=code)


class Visit(SyncModelMixin, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    person = models.ForeignKey(Person, on_delete=models.CASCADE)
    code = models.CharField(max_length=30)
    note = models.CharField(max_length=60, blank=True, default="")
    hits = models.IntegerField(default=0)
    objects = VisitManager()

    class Meta:
        unique_together = ("person", "code")

    def natural_key(self):
        return self.person.natural_key() + (self.code,)

    natural_key.dependencies = ["convapp.person"]
