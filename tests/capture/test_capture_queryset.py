"""Queryset paths (bulk_create, bulk_update, update, delete, related managers, M2M through
an explicit model, proxy, MTI, integer pk): each write is captured once, in the same
database transaction, at a constant query cost, in the payload format replay applies."""
import datetime

import pytest
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, connections, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from syncrouter import serialization as ser
from syncrouter.capture import outbox
from syncrouter.exceptions import SyncError
from syncrouter.models import OutgoingTransaction
from syncrouter.registry import site_sync_models
from tests.support import factories
from tests.support.checksum import assert_replayed_equal
from tests.testapp.models import (
    Clinic,
    CrfOne,
    Household,
    HouseholdMember,
    HouseholdProxy,
    Patient,
    Person,
    Referral,
)


def outgoing(alias, **filters) -> list:
    return [(row.action, row.tx_name, ser.loads(row.tx))
            for row in OutgoingTransaction.objects.using(alias).filter(**filters)
            .order_by("sequence")]


def members(hh, count, prefix="S"):
    return [HouseholdMember(household=hh, subject_identifier=f"{prefix}{i:04d}",
                            first_name="Neo", gender="F", dob=datetime.date(1990, 1, 1))
            for i in range(count)]


def test_bulk_create_records_each_row_like_save(nodes):
    hh = factories.household(nodes.client)
    HouseholdMember.objects.using(nodes.client).bulk_create(members(hh, 3))
    factories.member(nodes.client, hh, "SAVED")
    rows = outgoing(nodes.client, tx_name="testapp.householdmember")
    assert [action for action, _, _ in rows] == ["I"] * 4
    bulk, saved = rows[0][2], rows[3][2]
    assert bulk.keys() == saved.keys()
    assert bulk["fields"].keys() == saved["fields"].keys()
    assert bulk["fields"]["household"] == saved["fields"]["household"] == ["H001"]
    assert [payload["nk"] for _, _, payload in rows[:3]] == [["S0000"], ["S0001"], ["S0002"]]
    assert_replayed_equal(nodes)


def bulk_costs(alias: str, count: int, prefix: str) -> tuple[int, int, int]:
    """Queries taken by bulk_create, bulk_update and update() of ``count`` members."""
    hh = factories.household(alias, identifier=prefix)
    with CaptureQueriesContext(connections[alias]) as create:
        objs = HouseholdMember.objects.using(alias).bulk_create(members(hh, count, prefix))
    for obj in objs:
        obj.first_name = "Changed"
    with CaptureQueriesContext(connections[alias]) as update:
        HouseholdMember.objects.using(alias).bulk_update(objs, ["first_name"])
    with CaptureQueriesContext(connections[alias]) as qs_update:
        HouseholdMember.objects.using(alias).filter(household=hh).update(gender="M")
    return len(create), len(update), len(qs_update)


@pytest.mark.parametrize("alias", ["client", "pgclient"])
def test_bulk_writes_cost_a_constant_number_of_queries(alias):
    """10 rows and 150 rows (one Django batch on SQLite) take the same number of queries."""
    if alias not in connections.settings:
        pytest.skip("PostgreSQL not configured")
    assert bulk_costs(alias, 10, "A") == bulk_costs(alias, 150, "B")
    assert OutgoingTransaction.objects.using(alias).filter(action="U").count() == 2 * 160


def delete_cost(alias: str, count: int, prefix: str) -> int:
    """Queries taken by a queryset delete of ``count`` CRFs (natural keys three FKs deep)."""
    factories.load_symptoms(alias)
    factories.study(alias, 1, count, 1, prefix=prefix)
    doomed = CrfOne.objects.using(alias).filter(
        subject_visit__household_member__household__household_identifier=f"{prefix}000")
    with CaptureQueriesContext(connections[alias]) as deleted:
        doomed.delete()
    return len(deleted)


@pytest.mark.parametrize("alias", ["client", "pgclient"])
def test_deletes_cost_a_constant_number_of_queries(alias):
    """The natural keys and before-state of deleted rows come from one load, not a query each."""
    if alias not in connections.settings:
        pytest.skip("PostgreSQL not configured")
    assert delete_cost(alias, 5, "A") == delete_cost(alias, 40, "B")
    deletes = [ser.loads(tx) for tx in OutgoingTransaction.objects.using(alias).filter(
        action="D").values_list("tx", flat=True)]
    assert len(deletes) == 45
    assert all(d["before"]["subject_visit"] == d["nk"] for d in deletes)


def test_bulk_create_ignore_conflicts_records_only_rows_written(nodes):
    Clinic.objects.using(nodes.client).create(code="C1", name="old")
    Clinic.objects.using(nodes.client).bulk_create(
        [Clinic(code="C1", name="clash"), Clinic(code="C2", name="new"),
         Clinic(code="C2", name="same batch")], ignore_conflicts=True)
    assert [(a, p["nk"], p["fields"]["name"]) for a, _, p in outgoing(nodes.client)] == [
        ("I", ["C1"], "old"), ("I", ["C2"], "new")]
    assert Clinic.objects.using(nodes.client).get(code="C1").name == "old"
    assert_replayed_equal(nodes)


def test_bulk_create_update_conflicts_records_updates_with_before_state(nodes):
    Clinic.objects.using(nodes.client).create(code="C1", name="old")
    Clinic.objects.using(nodes.client).bulk_create(
        [Clinic(code="C1", name="upserted"), Clinic(code="C3", name="inserted")],
        update_conflicts=True, unique_fields=["code"], update_fields=["name"])
    rows = outgoing(nodes.client)[1:]
    assert [(a, p["nk"]) for a, _, p in rows] == [("U", ["C1"]), ("I", ["C3"])]
    assert rows[0][2]["fields"] == {"code": "C1", "name": "upserted"}
    assert rows[0][2]["before"] == {"name": "old"}
    assert rows[0][2]["pk"] is None  # integer auto pk stays local
    assert_replayed_equal(nodes)


def test_bulk_update_and_queryset_update_carry_before_and_old_natural_key(nodes):
    hh = factories.household(nodes.client)
    objs = HouseholdMember.objects.using(nodes.client).bulk_create(members(hh, 2))
    objs[0].subject_identifier, objs[1].first_name = "RENAMED", "Mpho"
    HouseholdMember.objects.using(nodes.client).bulk_update(
        objs, ["subject_identifier", "first_name"])
    Clinic.objects.using(nodes.client).create(code="OLD", name="x")
    Clinic.objects.using(nodes.client).filter(code="OLD").update(code="NEW", name=F("code"))
    updates = [p for a, _, p in outgoing(nodes.client) if a == "U"]
    renamed = next(p for p in updates if p["nk"] == ["RENAMED"])
    assert renamed["old_nk"] == ["S0000"]
    assert renamed["before"] == {"subject_identifier": "S0000"}
    clinic = updates[-1]
    assert (clinic["nk"], clinic["old_nk"], clinic["fields"]) == (
        ["NEW"], ["OLD"], {"code": "NEW", "name": "OLD"})
    assert_replayed_equal(nodes)


def test_save_changing_the_natural_key_carries_old_nk(nodes):
    hh = factories.household(nodes.client, "H001")
    factories.member(nodes.client, hh)
    assert_replayed_equal(nodes)
    hh = Household.objects.using(nodes.client).get(pk=hh.pk)
    hh.household_identifier = "H999"
    hh.save()
    [(action, _, payload)] = outgoing(nodes.client, is_consumed_server=False)
    assert (action, payload["nk"], payload["old_nk"]) == ("U", ["H999"], ["H001"])
    assert payload["before"].keys() == {"household_identifier", "modified"}  # auto_now
    assert payload["before"]["household_identifier"] == "H001"
    assert_replayed_equal(nodes)
    assert HouseholdMember.objects.using(nodes.server).get().household.household_identifier == (
        "H999")


def test_related_manager_update_and_delete_and_get_or_create(nodes):
    hh = factories.household(nodes.client)
    HouseholdMember.objects.using(nodes.client).bulk_create(members(hh, 4))
    hh.householdmember_set.filter(subject_identifier__in=["S0000", "S0001"]).update(
        first_name="Kabo")
    hh.householdmember_set.filter(subject_identifier="S0002").delete()
    HouseholdMember.objects.using(nodes.client).get_or_create(
        subject_identifier="S0003", defaults={"household": hh})
    HouseholdMember.objects.using(nodes.client).update_or_create(
        subject_identifier="S0009", defaults={"household": hh, "first_name": "Onalenna",
                                              "gender": "M", "dob": datetime.date(2001, 1, 1)})
    actions = [(a, p["nk"]) for a, _, p in outgoing(nodes.client,
                                                     tx_name="testapp.householdmember")]
    assert sorted(actions[4:6]) == [("U", ["S0000"]), ("U", ["S0001"])]
    assert actions[6:] == [("D", ["S0002"]), ("I", ["S0009"])]
    assert_replayed_equal(nodes)


def test_cascade_from_registered_parent_is_captured_child_first(nodes):
    clinic = Clinic.objects.using(nodes.client).create(code="C1", name="x")
    referral = Referral.objects.using(nodes.client).create(code="R1")
    referral.clinics.add(clinic, through_defaults={"priority": 1})
    assert_replayed_equal(nodes)
    Clinic.objects.using(nodes.client).filter(code="C1").delete()
    rows = outgoing(nodes.client, is_consumed_server=False)
    assert [(a, label) for a, label, _ in rows] == [
        ("D", "testapp.referralclinic"), ("D", "testapp.clinic")]
    assert rows[0][2]["nk"] == ["R1", "C1"]
    assert_replayed_equal(nodes)


def test_explicit_through_model_captured_as_rows_from_both_sides(nodes):
    c1, c2 = (Clinic.objects.using(nodes.client).create(code=c, name=c) for c in ("C1", "C2"))
    referral = Referral.objects.using(nodes.client).create(code="R1")
    referral.clinics.add(c1, through_defaults={"priority": 5})
    c2.referrals.add(referral, through_defaults={"priority": 6})
    referral.clinics.remove(c1)
    referral.clinics.set([c1], through_defaults={"priority": 7})
    c1.referrals.clear()
    rows = outgoing(nodes.client, tx_name="testapp.referralclinic")
    assert [(a, p["nk"]) for a, _, p in rows] == [
        ("I", ["R1", "C1"]), ("I", ["R1", "C2"]), ("D", ["R1", "C1"]), ("D", ["R1", "C2"]),
        ("I", ["R1", "C1"]), ("D", ["R1", "C1"])]
    assert not [p for _, _, p in outgoing(nodes.client) if "m2m" in p]
    assert_replayed_equal(nodes)


def test_proxy_captures_as_concrete_and_mti_replays_parent_and_child(nodes):
    HouseholdProxy.objects.using(nodes.client).bulk_create(
        [HouseholdProxy(household_identifier="P1", village="v")])
    HouseholdProxy.objects.using(nodes.client).filter(household_identifier="P1").update(
        village="w")
    Patient.objects.using(nodes.client).create(national_id="N1", name="A", clinic_number="1")
    Patient.objects.using(nodes.client).filter(national_id="N1").update(name="B")
    labels = [label for _, label, _ in outgoing(nodes.client)]
    assert labels == ["testapp.household", "testapp.household", "testapp.patient",
                      "testapp.patient"]
    assert_replayed_equal(nodes)
    patient = Patient.objects.using(nodes.server).get(national_id="N1")
    assert (patient.name, Person.objects.using(nodes.server).get(national_id="N1").name) == (
        "B", "B")


def test_users_and_groups_registered_through_site_sync_models(nodes):
    users = User.objects.using(nodes.client).bulk_create(
        [User(username=f"u{i}") for i in range(3)])
    group = Group.objects.using(nodes.client).create(name="lab")
    group.user_set.add(*users)
    for user in users:
        user.is_staff = True
    User.objects.using(nodes.client).bulk_update(users, ["is_staff"])
    User.objects.using(nodes.client).filter(username="u0").delete()
    assert [a for a, label, _ in outgoing(nodes.client) if label == "auth.user"] == [
        "I", "I", "I", "U", "U", "U", "U", "U", "U", "D"]
    assert_replayed_equal(nodes)


def test_crf_m2m_and_delete(nodes):
    hh = factories.household(nodes.client)
    crf = factories.crf(nodes.client, factories.visit(nodes.client, factories.member(
        nodes.client, hh)))
    crf.symptoms.clear()
    assert_replayed_equal(nodes)
    CrfOne.objects.using(nodes.client).all().delete()
    assert_replayed_equal(nodes)
    assert not CrfOne.objects.using(nodes.server).exists()


@pytest.mark.django_db(transaction=True, databases=["client"])
def test_bulk_create_failing_on_row_k_leaves_no_rows_and_no_transactions():
    hh = factories.household("client")
    before = OutgoingTransaction.objects.using("client").count()
    objs = members(hh, 6)
    objs[4].subject_identifier = objs[1].subject_identifier  # IntegrityError on row 5
    with pytest.raises(IntegrityError):
        HouseholdMember.objects.using("client").bulk_create(objs, batch_size=2)
    assert not HouseholdMember.objects.using("client").exists()
    assert OutgoingTransaction.objects.using("client").count() == before


@pytest.mark.django_db(transaction=True, databases=["client"])
def test_capture_failure_rolls_back_the_bulk_write(monkeypatch):
    hh = factories.household("client")
    before = OutgoingTransaction.objects.using("client").count()

    def broken(using, entries):
        raise IntegrityError("outbox is full")

    monkeypatch.setattr(outbox, "record_many", broken)
    with pytest.raises(IntegrityError, match="outbox is full"):
        HouseholdMember.objects.using("client").bulk_create(members(hh, 3))
    with pytest.raises(IntegrityError):
        Household.objects.using("client").update(village="x")
    monkeypatch.undo()
    assert not HouseholdMember.objects.using("client").exists()
    assert Household.objects.using("client").get().village == "Ramotswa"
    assert OutgoingTransaction.objects.using("client").count() == before


def test_rolled_back_outer_transaction_leaves_neither():
    with pytest.raises(RuntimeError), transaction.atomic(using="client"):
        Clinic.objects.using("client").bulk_create([Clinic(code="X", name="x")])
        raise RuntimeError
    assert not Clinic.objects.using("client").exists()
    assert not OutgoingTransaction.objects.using("client").exists()


def test_registering_a_model_twice_is_a_clear_error():
    with pytest.raises(SyncError, match="auth.user is already registered"):
        site_sync_models.register(["auth.user"])
