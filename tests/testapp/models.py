"""A small clinical study: Household -> HouseholdMember -> SubjectVisit -> CRFs.

Shaped like the models syncrouter is built for: UUID primary keys on most models, natural keys that
go through parents, a list model, an M2M, a proxy, a multi-table-inheritance
child, and a model with an integer auto primary key.
"""
import uuid

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from simple_history.models import HistoricalRecords

from syncrouter.models import SyncModelMixin


class NaturalKeyManager(models.Manager):
    """get_by_natural_key from a model's ``natural_key_fields``."""

    def get_by_natural_key(self, *key):
        return self.get(**dict(zip(self.model.natural_key_fields, key)))


class Symptom(models.Model):
    """A list model: loaded on every node, not synced."""

    name = models.CharField(max_length=50, unique=True)
    display_name = models.CharField(max_length=100)
    natural_key_fields = ("name",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.name,)


class Household(SyncModelMixin, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    household_identifier = models.CharField(max_length=20, unique=True)
    village = models.CharField(max_length=50)
    gps_lat = models.FloatField(null=True)
    gps_lon = models.FloatField(null=True)
    enumerated = models.BooleanField(default=False)
    modified = models.DateTimeField(auto_now=True)
    natural_key_fields = ("household_identifier",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.household_identifier,)


class HouseholdProxy(Household):
    class Meta:
        proxy = True


class HouseholdMember(SyncModelMixin, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    household = models.ForeignKey(Household, on_delete=models.PROTECT)
    subject_identifier = models.CharField(max_length=20, unique=True)
    first_name = models.CharField(max_length=50)
    gender = models.CharField(max_length=1, choices=(("M", "Male"), ("F", "Female")))
    dob = models.DateField()
    natural_key_fields = ("subject_identifier",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.subject_identifier,)

    natural_key.dependencies = ["testapp.household"]


class SubjectVisitManager(models.Manager):
    def get_by_natural_key(self, subject_identifier, visit_code):
        return self.get(household_member__subject_identifier=subject_identifier,
                        visit_code=visit_code)


class SubjectVisit(SyncModelMixin, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    household_member = models.ForeignKey(HouseholdMember, on_delete=models.PROTECT)
    visit_code = models.CharField(max_length=10)
    report_datetime = models.DateTimeField()
    objects = SubjectVisitManager()

    class Meta:
        unique_together = ("household_member", "visit_code")

    def natural_key(self):
        return self.household_member.natural_key() + (self.visit_code,)

    natural_key.dependencies = ["testapp.householdmember"]


class CrfManager(models.Manager):
    def get_by_natural_key(self, subject_identifier, visit_code):
        return self.get(subject_visit__household_member__subject_identifier=subject_identifier,
                        subject_visit__visit_code=visit_code)


class CrfOne(SyncModelMixin, models.Model):
    """A case report form with ~15 fields of mixed types."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    subject_visit = models.OneToOneField(SubjectVisit, on_delete=models.PROTECT)
    report_datetime = models.DateTimeField()
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1, null=True)
    height_cm = models.FloatField(null=True)
    is_smoker = models.BooleanField(default=False)
    cigarettes_per_day = models.IntegerField(null=True)
    visit_date = models.DateField(null=True)
    arrival_time = models.TimeField(null=True)
    consult_duration = models.DurationField(null=True)
    reference = models.UUIDField(null=True)
    outcome = models.CharField(max_length=10, default="well",
                               choices=(("well", "Well"), ("ill", "Ill"), ("referred", "Ref")))
    comments = models.TextField(max_length=200, blank=True, default="")
    extra = models.JSONField(null=True)
    main_symptom = models.ForeignKey(Symptom, on_delete=models.PROTECT, null=True,
                                     related_name="+")
    symptoms = models.ManyToManyField(Symptom, blank=True)
    objects = CrfManager()

    def natural_key(self):
        return self.subject_visit.natural_key()

    natural_key.dependencies = ["testapp.subjectvisit"]


class CrfTwo(SyncModelMixin, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    subject_visit = models.OneToOneField(SubjectVisit, on_delete=models.PROTECT)
    hiv_result = models.CharField(max_length=10)
    cd4 = models.IntegerField(null=True)
    objects = CrfManager()

    def natural_key(self):
        return self.subject_visit.natural_key()

    natural_key.dependencies = ["testapp.subjectvisit"]


class Person(SyncModelMixin, models.Model):
    """Multi-table inheritance parent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    national_id = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=50)
    natural_key_fields = ("national_id",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.national_id,)


class Patient(Person):
    """Multi-table inheritance child: replay must recreate both rows."""

    clinic_number = models.CharField(max_length=20)
    objects = NaturalKeyManager()


class Clinic(SyncModelMixin, models.Model):
    """Integer auto primary key: each node assigns its own; found by natural key."""

    code = models.CharField(max_length=10, unique=True)
    name = models.CharField(max_length=50)
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.code,)


class LocalNote(models.Model):
    """Not registered: replay must refuse any transaction naming it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    text = models.CharField(max_length=50, unique=True)
    natural_key_fields = ("text",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.text,)


class Referral(SyncModelMixin, models.Model):
    """Owner of a many-to-many with an explicit ``through`` model that is itself synced."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    code = models.CharField(max_length=20, unique=True)
    clinics = models.ManyToManyField(Clinic, through="ReferralClinic", related_name="referrals")
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.code,)


class ReferralClinicManager(models.Manager):
    def get_by_natural_key(self, referral_code, clinic_code):
        return self.get(referral__code=referral_code, clinic__code=clinic_code)


class ReferralClinic(SyncModelMixin, models.Model):
    """Explicit ``through`` row: captured as its own inserts and deletes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE)
    priority = models.IntegerField(default=0)
    objects = ReferralClinicManager()

    class Meta:
        unique_together = ("referral", "clinic")

    def natural_key(self):
        return self.referral.natural_key() + self.clinic.natural_key()

    natural_key.dependencies = ["testapp.referral", "testapp.clinic"]


class Specimen(SyncModelMixin, models.Model):
    """Tracked by plain django-simple-history (an integer ``history_id``): its history
    rows travel keyed by (id, history_date)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    subject_visit = models.ForeignKey(SubjectVisit, on_delete=models.PROTECT)
    specimen_identifier = models.CharField(max_length=20, unique=True)
    specimen_type = models.CharField(max_length=10, default="blood")
    collected = models.DateField(null=True)
    volume_ml = models.DecimalField(max_digits=5, decimal_places=1, null=True)
    natural_key_fields = ("specimen_identifier",)
    objects = NaturalKeyManager()
    history = HistoricalRecords()

    def natural_key(self):
        return (self.specimen_identifier,)

    natural_key.dependencies = ["testapp.subjectvisit"]


class Ward(models.Model):
    """Not registered at start-up: an integer auto primary key, whose history cannot travel."""

    code = models.CharField(max_length=10, unique=True)
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()
    history = HistoricalRecords()

    def natural_key(self):
        return (self.code,)


class Room(models.Model):
    """Not registered at start-up: a history with a foreign key to its tracked row."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    code = models.CharField(max_length=10, unique=True)
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()
    history = HistoricalRecords(related_name="history_rows")

    def natural_key(self):
        return (self.code,)


class Bed(models.Model):
    """Not registered at start-up: a history of many-to-many changes (``m2m_fields``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    code = models.CharField(max_length=10, unique=True)
    symptoms = models.ManyToManyField(Symptom, blank=True, related_name="+")
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()
    history = HistoricalRecords(m2m_fields=["symptoms"])

    def natural_key(self):
        return (self.code,)


class EveryField(SyncModelMixin, models.Model):
    """A column of each field type Django ships (all nullable), for the test that every
    value a client stores arrives exactly (tests/test_values_exact.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    code = models.CharField(max_length=20, unique=True)
    char = models.CharField(max_length=50, null=True)
    text = models.TextField(null=True)
    slug = models.SlugField(null=True)
    email = models.EmailField(null=True)
    url = models.URLField(null=True)
    file = models.FileField(null=True)
    file_path = models.FilePathField(null=True)
    boolean = models.BooleanField(null=True)
    integer = models.IntegerField(null=True)
    big = models.BigIntegerField(null=True)
    small = models.SmallIntegerField(null=True)
    positive = models.PositiveIntegerField(null=True)
    positive_big = models.PositiveBigIntegerField(null=True)
    positive_small = models.PositiveSmallIntegerField(null=True)
    float = models.FloatField(null=True)
    decimal = models.DecimalField(max_digits=9, decimal_places=3, null=True)
    wide_decimal = models.DecimalField(max_digits=30, decimal_places=10, null=True)
    date = models.DateField(null=True)
    datetime = models.DateTimeField(null=True)
    time = models.TimeField(null=True)
    duration = models.DurationField(null=True)
    uuid = models.UUIDField(null=True)
    json = models.JSONField(null=True)
    binary = models.BinaryField(null=True)
    ip = models.GenericIPAddressField(null=True)
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.code,)


class Annotation(SyncModelMixin, models.Model):
    """Two generic foreign keys: an integer object id (Django's usual one) and a text one,
    which may name a row with an auto-increment key (travels by its natural key) or a UUID."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    code = models.CharField(max_length=20, unique=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, null=True,
                                     related_name="+")
    object_id = models.PositiveIntegerField(null=True)
    subject = GenericForeignKey("content_type", "object_id")
    other_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, null=True,
                                   related_name="+")
    other_id = models.CharField(max_length=64, null=True)
    other = GenericForeignKey("other_type", "other_id")
    natural_key_fields = ("code",)
    objects = NaturalKeyManager()

    def natural_key(self):
        return (self.code,)


from tests.testapp.seed_models import MaternalCrf, OfflineCrf  # noqa: E402,F401
