"""Completeness proof: random writes on every captured path, replayed, give equal tables.

A fixed-seed run of ``OPERATIONS`` randomly chosen writes (save, bulk_create with
and without conflict handling, bulk_update, QuerySet.update/delete, related
managers, get_or_create/update_or_create, M2M on both sides, an explicit
``through`` model, a proxy, an MTI child, an integer-pk model, auth users and
groups, natural-key changes) runs on the client. Its outbox is copied to the
empty server and replayed; then every registered table must hold the same rows
on both nodes, compared by natural key and travelling field values.
"""
import datetime
import decimal
import random

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat

from syncrouter.models import OutgoingTransaction
from tests.support.checksum import assert_replayed_equal
from tests.support.factories import SYMPTOMS
from tests.support.nodes import DATABASES
from tests.testapp.models import (
    Clinic,
    CrfOne,
    CrfTwo,
    Household,
    HouseholdMember,
    HouseholdProxy,
    Patient,
    Person,
    Referral,
    ReferralClinic,
    SubjectVisit,
    Symptom,
)

OPERATIONS = 1500
SEED = 20261123


_VISIT = ("subject_visit__household_member__subject_identifier", "subject_visit__visit_code")
NATURAL_ORDER = {
    Household: ["household_identifier"], HouseholdProxy: ["household_identifier"],
    HouseholdMember: ["subject_identifier"], CrfOne: _VISIT, Clinic: ["code"],
    Referral: ["code"], ReferralClinic: ["referral__code", "clinic__code"],
    Person: ["national_id"], Patient: ["national_id"], User: ["username"], Group: ["name"],
    CrfTwo: _VISIT,
}


class Workload:
    """Random writes over every capture path, on one alias."""

    def __init__(self, alias: str, seed: int):
        self.alias, self.rng, self.serial = alias, random.Random(seed), 0

    def objects(self, model):
        return model.objects.using(self.alias)

    def sample(self, model, count: int, **filters) -> list:
        """Up to ``count`` rows chosen by the seeded generator (ordered by natural key, so
        the choice does not depend on random UUIDs)."""
        rows = list(self.objects(model).filter(**filters).order_by(*NATURAL_ORDER[model]))
        return self.rng.sample(rows, min(count, len(rows)))

    def pick(self, model, **filters):
        rows = self.sample(model, 1, **filters)
        return rows[0] if rows else None

    def pks(self, model, count: int, **filters) -> list:
        return [obj.pk for obj in self.sample(model, count, **filters)]

    def name(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial:05d}"

    def run(self, count: int) -> None:
        """``count`` operations in database transactions of 1 to 20 operations each."""
        steps = [getattr(self, name) for name in sorted(dir(self)) if name.startswith("op_")]
        done = 0
        while done < count:
            size = min(self.rng.randint(1, 20), count - done)
            with transaction.atomic(using=self.alias):
                for _ in range(size):
                    self.rng.choice(steps)()
            done += size

    # households, members, visits, CRFs: save paths
    def op_household_save(self):
        self.objects(Household).create(household_identifier=self.name("H"), village="Gabane",
                                       gps_lat=self.rng.uniform(-25, -24))

    def op_household_rename(self):  # natural key change: carries old_nk
        hh = self.pick(Household)
        if hh:
            hh.household_identifier = self.name("R")
            hh.save()

    def op_proxy_save(self):
        hh = self.pick(HouseholdProxy)
        if hh:
            hh.village = self.name("village")
            hh.save()

    def op_member_save(self):
        hh = self.pick(Household)
        if hh:
            self.objects(HouseholdMember).create(
                household=hh, subject_identifier=self.name("S"), first_name="Kago",
                gender=self.rng.choice("MF"), dob=datetime.date(1980, 1, 1))

    def op_visit_and_crf(self):
        member = self.pick(HouseholdMember)
        if not member:
            return
        visit, created = self.objects(SubjectVisit).get_or_create(
            household_member=member, visit_code=self.rng.choice(["1000", "2000", "3000"]),
            defaults={"report_datetime": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)})
        if created:
            crf = self.objects(CrfOne).create(
                subject_visit=visit, report_datetime=visit.report_datetime,
                weight_kg=decimal.Decimal(self.rng.randint(400, 900)) / 10,
                extra={"n": self.serial},
                consult_duration=datetime.timedelta(minutes=self.rng.randint(1, 60)),
                main_symptom=self.objects(Symptom).get(name=self.rng.choice(SYMPTOMS)))
            self.objects(CrfTwo).update_or_create(subject_visit=visit,
                                                  defaults={"hiv_result": "neg"})
            crf.symptoms.set(self.objects(Symptom).filter(name__in=self.rng.sample(SYMPTOMS, 2)))

    def op_crf_symptoms(self):
        crf = self.pick(CrfOne)
        symptom = self.objects(Symptom).get(name=self.rng.choice(SYMPTOMS))
        if not crf:
            return
        action = self.rng.choice(["add", "remove", "clear", "reverse_add", "reverse_remove"])
        if action == "clear":
            crf.symptoms.clear()
        elif action.startswith("reverse"):
            getattr(symptom.crfone_set, action[8:])(crf)
        else:
            getattr(crf.symptoms, action)(symptom)

    # bulk paths
    def op_bulk_households(self):
        self.objects(Household).bulk_create(
            [Household(household_identifier=self.name("B"), village="Mochudi")
             for _ in range(self.rng.randint(1, 8))], batch_size=3)

    def op_bulk_clinics_ignore(self):
        codes = [f"C{self.rng.randint(0, 60):03d}" for _ in range(5)]
        self.objects(Clinic).bulk_create([Clinic(code=c, name="new") for c in codes],
                                         ignore_conflicts=True)

    def op_bulk_clinics_upsert(self):
        codes = [f"C{n:03d}" for n in self.rng.sample(range(61), 5)]  # no repeats: PostgreSQL
        self.objects(Clinic).bulk_create(                                # refuses them here
            [Clinic(code=c, name=self.name("clinic")) for c in codes], update_conflicts=True,
            unique_fields=["code"], update_fields=["name"])

    def op_bulk_update_members(self):
        members = self.sample(HouseholdMember, 5)
        for member in members:
            member.first_name = self.name("N")
            if self.rng.random() < 0.2:
                member.subject_identifier = self.name("X")
        self.objects(HouseholdMember).bulk_update(members, ["first_name", "subject_identifier"])

    def op_queryset_update(self):
        self.objects(Household).filter(pk__in=self.pks(Household, 6)).filter(
            gps_lat__isnull=True).update(gps_lon=self.rng.uniform(25, 26), village="Oodi")

    def op_clinic_recode(self):  # QuerySet.update() changing the natural key
        clinic = self.pick(Clinic, code__startswith="C")
        if clinic:
            self.objects(Clinic).filter(pk=clinic.pk).update(
                code=Concat(Value("Z"), Value(self.name(""))))  # an expression

    def op_related_manager(self):
        hh = self.pick(Household, householdmember__isnull=False)
        if not hh:
            return
        members = hh.householdmember_set.filter(subjectvisit__isnull=True)
        if self.rng.random() < 0.5:
            members.update(first_name=self.name("M"))
        else:
            members.filter(gender="M").delete()

    # deletes
    def op_queryset_delete(self):
        model = self.rng.choice([CrfOne, CrfTwo, Clinic, Household])
        filters = {"householdmember__isnull": True} if model is Household else {}
        self.objects(model).filter(pk__in=self.pks(model, 3, **filters)).delete()

    def op_instance_delete(self):
        obj = self.pick(self.rng.choice([Referral, Patient, Person, User]))
        if obj:
            obj.delete()

    # explicit through model, MTI, integer pk, auth
    def op_referral(self):
        referral = self.objects(Referral).create(code=self.name("REF"))
        clinics = self.sample(Clinic, 3)
        referral.clinics.set(clinics, through_defaults={"priority": 1})

    def op_referral_m2m(self):
        referral, clinic = self.pick(Referral), self.pick(Clinic)
        if not (referral and clinic):
            return
        action = self.rng.choice(["add", "remove", "clear", "reverse_add", "reverse_clear"])
        if action == "add":
            referral.clinics.add(clinic, through_defaults={"priority": 2})
        elif action == "remove":
            referral.clinics.remove(clinic)
        elif action == "clear":
            referral.clinics.clear()
        elif action == "reverse_add":
            clinic.referrals.add(referral, through_defaults={"priority": 3})
        else:
            clinic.referrals.clear()

    def op_through_bulk(self):
        self.objects(ReferralClinic).filter(pk__in=self.pks(ReferralClinic, 3)).update(
            priority=F("priority") + 1)

    def op_person_patient(self):
        if self.rng.random() < 0.5:
            self.objects(Person).create(national_id=self.name("P"), name="Mpho")
        else:
            self.objects(Patient).create(national_id=self.name("Q"), name="Lesego",
                                         clinic_number=self.name("CN"))

    def op_patient_update(self):
        self.objects(Patient).filter(pk__in=self.pks(Patient, 2)).update(
            name=self.name("patient"), clinic_number="updated")

    def op_user(self):
        user = self.objects(User).create(username=self.name("user"), is_staff=True)
        group, _ = Group.objects.using(self.alias).get_or_create(
            name=self.rng.choice(["field", "lab", "data"]))
        user.groups.add(group)

    def op_user_bulk(self):
        users = self.sample(User, 4)
        for user in users:
            user.first_name = self.name("F")
        self.objects(User).bulk_update(users, ["first_name"])
        group = self.pick(Group)
        if group and self.rng.random() < 0.3:
            group.user_set.clear()


@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_random_writes_replay_to_identical_tables(nodes):
    """Committed transactions, as in an application (replay applies one at a time)."""
    Workload(nodes.client, SEED).run(OPERATIONS)
    assert OutgoingTransaction.objects.using(nodes.client).count() > OPERATIONS // 2
    assert_replayed_equal(nodes)
