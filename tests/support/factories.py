"""Realistic study data for tests, written through the ORM on a given alias."""
import datetime
import decimal
import random
import string
import uuid

from django.utils import timezone

from tests.testapp.models import (
    CrfOne,
    Household,
    HouseholdMember,
    SubjectVisit,
    Symptom,
)

SYMPTOMS = ("cough", "fever", "headache", "rash", "diarrhoea")


def load_symptoms(alias):
    for name in SYMPTOMS:
        Symptom.objects.using(alias).get_or_create(name=name, defaults={"display_name": name})


def household(alias, identifier="H001", village="Ramotswa"):
    return Household.objects.using(alias).create(
        household_identifier=identifier, village=village, gps_lat=-24.87, gps_lon=25.87)


def member(alias, hh, subject_identifier="S001", first_name="Neo", gender="F"):
    return HouseholdMember.objects.using(alias).create(
        household=hh, subject_identifier=subject_identifier, first_name=first_name,
        gender=gender, dob=datetime.date(1990, 5, 17))


def visit(alias, hm, visit_code="1000"):
    return SubjectVisit.objects.using(alias).create(
        household_member=hm, visit_code=visit_code,
        report_datetime=timezone.now().replace(microsecond=0))


def crf(alias, sv, **overrides):
    values = dict(
        subject_visit=sv, report_datetime=timezone.now(), weight_kg=decimal.Decimal("61.5"),
        height_cm=164.2, is_smoker=True, cigarettes_per_day=4,
        visit_date=datetime.date(2026, 11, 2), arrival_time=datetime.time(9, 30),
        consult_duration=datetime.timedelta(minutes=25), reference=uuid.uuid4(),
        outcome="ill", comments="x" * 200, extra={"bp": [120, 80], "note": "ok"},
        main_symptom=Symptom.objects.using(alias).get(name="fever"))
    values.update(overrides)
    obj = CrfOne.objects.using(alias).create(**values)
    obj.symptoms.add(*Symptom.objects.using(alias).filter(name__in=["cough", "fever"]))
    return obj


def study(alias, households=2, members=2, visits=2, prefix="H"):
    """A household tree: households x members x visits, one CRF per visit."""
    for h in range(households):
        hh = household(alias, f"{prefix}{h:03d}")
        for m in range(members):
            hm = member(alias, hh, f"{prefix}{h:03d}-{m:02d}", first_name=f"Name{m}")
            for v in range(visits):
                crf(alias, visit(alias, hm, f"{1000 + v}"))


def incompressible(length: int) -> str:
    """Random letters (the same for a length): no compression brings ``length`` of them
    under PostgreSQL's index entry limit (about 2.7 KB) when ``length`` is 6,000."""
    rng = random.Random(length)
    return "".join(rng.choice(string.ascii_letters) for _ in range(length))
