"""Capture (guarantees 1 and 2): every write of a registered model, atomically, gapless."""
import pytest
from django.contrib.auth.models import Group, User
from django.core.checks import Error
from django.db import DatabaseError, connections, transaction
from django.test import override_settings

from syncrouter import serialization as ser
from syncrouter.capture.outbox import WRITE_ORDER, seals_at_capture
from syncrouter.checks import check_registered_models
from syncrouter.exceptions import SyncError
from syncrouter.models import OutgoingTransaction, ProducerClock
from syncrouter.registry import site_sync_models
from tests.support import factories
from tests.support.nodes import DATABASES
from tests.testapp.models import Clinic, Household, HouseholdProxy, LocalNote, Patient


def outgoing(alias):
    return list(OutgoingTransaction.objects.using(alias).order_by("sequence"))


def test_insert_update_delete_each_produce_one_transaction(nodes):
    hh = factories.household(nodes.client)
    hh.village = "Molepolole"
    hh.save()
    pk = str(hh.pk)
    hh.delete()
    rows = outgoing(nodes.client)
    assert [(r.action, r.tx_name, r.sequence) for r in rows] == [
        ("I", "testapp.household", 1), ("U", "testapp.household", 2),
        ("D", "testapp.household", 3)]
    update = ser.loads(rows[1].tx)
    assert update["before"]["village"] == "Ramotswa"
    assert set(update["before"]) == {"village", "modified"}  # auto_now changes on every save
    assert update["fields"]["village"] == "Molepolole"
    assert update["pk"] == pk and update["nk"] == ["H001"]
    assert len({r.id for r in rows}) == 3


def test_rolled_back_outer_transaction_leaves_neither_and_no_gap(nodes):
    factories.household(nodes.client, "H001")
    with pytest.raises(RuntimeError):
        with transaction.atomic(using=nodes.client):
            factories.household(nodes.client, "H002")
            raise RuntimeError("user code fails after the write")
    factories.household(nodes.client, "H003")
    assert sorted(Household.objects.using(nodes.client).values_list(
        "household_identifier", flat=True)) == ["H001", "H003"]
    assert [r.sequence for r in outgoing(nodes.client)] == [1, 2]


def test_outbox_failure_rolls_back_the_data_write(nodes):
    """A real database error on the outbox INSERT undoes the save: a taken sequence where
    capture numbers rows (SQLite), the write-order sequence gone where the seal does."""
    factories.household(nodes.client, "H001")
    first = outgoing(nodes.client)[0]
    connection = connections[nodes.client]
    if seals_at_capture(connection):
        OutgoingTransaction.objects.using(nodes.client).bulk_create([OutgoingTransaction(
            tx="{}", tx_name="x.y", tx_pk="1", producer=first.producer, hostname="h",
            sequence=2, db_transaction_id=first.db_transaction_id, hlc=0, action="I",
            timestamp=first.timestamp)])
    else:  # DDL is transactional on PostgreSQL: the test's rollback restores it
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER SEQUENCE {WRITE_ORDER} RENAME TO gone_for_this_test")
    with pytest.raises(DatabaseError):
        with transaction.atomic(using=nodes.client):
            factories.household(nodes.client, "H002")
    assert not Household.objects.using(nodes.client).filter(household_identifier="H002").exists()
    clock = ProducerClock.objects.using(nodes.client).get(producer=first.producer)
    assert clock.last_sequence == 1  # the number went back with the rollback (or was not taken)


@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_one_database_transaction_shares_one_id(nodes):
    with transaction.atomic(using=nodes.client):
        hh = factories.household(nodes.client, "H001")
        factories.member(nodes.client, hh)
    factories.household(nodes.client, "H002")
    ids = [r.db_transaction_id for r in outgoing(nodes.client)]
    assert ids[0] == ids[1] != ids[2]


def test_capture_switched_off(nodes):
    with override_settings(ALLOW_MODEL_SERIALIZATION=False):
        factories.household(nodes.client)
    assert outgoing(nodes.client) == []


def test_m2m_add_remove_clear_from_both_sides(nodes):
    sv = factories.visit(nodes.client, factories.member(nodes.client,
                                                         factories.household(nodes.client)))
    crf = factories.crf(nodes.client, sv)  # adds cough, fever
    from tests.testapp.models import Symptom

    rash = Symptom.objects.using(nodes.client).get(name="rash")
    crf.symptoms.remove(rash)  # nothing to remove, still recorded as asked
    rash.crfone_set.add(crf)  # reverse side
    crf.symptoms.clear()
    changes = [ser.loads(r.tx)["m2m"] for r in outgoing(nodes.client) if r.action == "U"]
    assert [(c["op"], c["keys"]) for c in changes] == [
        ("add", [["cough"], ["fever"]]), ("remove", [["rash"]]), ("add", [["rash"]]),
        ("remove", [["cough"], ["fever"], ["rash"]])]  # clear(): the links it knew of


def test_proxy_captures_as_concrete_and_mti_child_carries_parent_fields(nodes):
    HouseholdProxy.objects.using(nodes.client).create(household_identifier="P1", village="v")
    Patient.objects.using(nodes.client).create(national_id="N1", name="Ann", clinic_number="C1")
    Clinic.objects.using(nodes.client).create(code="K1", name="Kgale")
    rows = outgoing(nodes.client)
    assert [r.tx_name for r in rows] == ["testapp.household", "testapp.patient",
                                         "testapp.clinic"]
    patient = ser.loads(rows[1].tx)
    assert {"national_id", "name", "clinic_number", "id"} <= set(patient["fields"])
    clinic = ser.loads(rows[2].tx)
    assert clinic["pk"] is None and "id" not in clinic["fields"]  # auto pk stays local


def test_natural_key_change_carries_old_key(nodes):
    hh = factories.household(nodes.client, "H001")
    hh = Household.objects.using(nodes.client).get(pk=hh.pk)
    hh.household_identifier = "H001-A"
    hh.save()
    payload = ser.loads(outgoing(nodes.client)[-1].tx)
    assert payload["old_nk"] == ["H001"] and payload["nk"] == ["H001-A"]


def test_registered_auth_models_capture_atomically(nodes):
    group = Group.objects.using(nodes.client).create(name="field-staff")
    user = User.objects.db_manager(nodes.client).create_user("neo", password="pw")
    user.groups.add(group)
    assert [r.tx_name for r in outgoing(nodes.client)] == ["auth.group", "auth.user",
                                                          "auth.user"]
    with pytest.raises(RuntimeError):
        with transaction.atomic(using=nodes.client):
            User.objects.db_manager(nodes.client).create_user("kago")
            raise RuntimeError
    assert len(outgoing(nodes.client)) == 3


def test_unregistered_model_is_not_captured(nodes):
    LocalNote.objects.using(nodes.client).create(text="a note")
    assert outgoing(nodes.client) == []


def test_register_model_without_natural_key_raises_naming_it():
    with pytest.raises(SyncError, match=r"syncrouter\.producerclock .*ProducerClock\.natural_key"):
        site_sync_models.register(["syncrouter.producerclock"])
    assert "syncrouter.producerclock" not in site_sync_models


def test_register_twice_and_unknown_label_raise():
    with pytest.raises(SyncError, match="auth.user is already registered"):
        site_sync_models.register(["auth.user"])
    with pytest.raises(SyncError, match="nosuchapp.thing"):
        site_sync_models.register(["nosuchapp.thing"])


def test_system_check_reports_model_without_natural_key():
    site_sync_models.register_mixin_model(ProducerClock)
    try:
        errors = check_registered_models()
        with pytest.raises(SyncError, match="producerclock cannot be synchronised"):
            ProducerClock.objects.using("client").create(producer="p")
    finally:
        site_sync_models.unregister(ProducerClock)
    assert [e.id for e in errors] == ["syncrouter.E001"]
    assert isinstance(errors[0], Error) and "get_by_natural_key" in errors[0].msg
