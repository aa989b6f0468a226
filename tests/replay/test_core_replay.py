"""Replay (guarantees 3, 4, 5, 7, 8): by natural key, exactly once, no echo, bad rows isolated."""
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from syncrouter import conf, serialization as ser
from syncrouter.exceptions import ReplayRefused
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from tests.support import factories
from tests.support.checksum import node_checksums
from tests.testapp.models import (
    Clinic,
    CrfOne,
    Household,
    HouseholdMember,
    Patient,
    Person,
    SubjectVisit,
)


def push(nodes, **filters):
    return OutgoingTransaction.objects.using(nodes.client).filter(
        is_consumed_server=False, **filters).copy_to_incoming_transaction(nodes.server)


def replay(nodes, **kwargs):
    kwargs.setdefault("check_hostname", False)
    return IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(**kwargs)


def outcomes(messages):
    return [m.outcome for m in messages]


def inject(nodes, payload, tx_name, action="I", sequence=10_000, raw=None):
    """An incoming row as a misbehaving or foreign producer might send it."""
    return IncomingTransaction.objects.using(nodes.server).create(
        tx=raw if raw is not None else ser.dumps(payload), tx_name=tx_name, tx_pk="1",
        producer="intruder", hostname="elsewhere", sequence=sequence,
        db_transaction_id=uuid.uuid4(), hlc=1, action=action, timestamp=timezone.now())


def test_server_equals_client_after_push_and_replay(nodes):
    factories.study(nodes.client, 2, 2, 2)
    push(nodes)
    messages = replay(nodes)
    assert set(outcomes(messages)) == {"inserted", "updated"}
    assert node_checksums(nodes.server) == node_checksums(nodes.client)
    crf = CrfOne.objects.using(nodes.server).select_related("main_symptom").first()
    assert crf.main_symptom.name == "fever" and crf.extra == {"bp": [120, 80], "note": "ok"}


def test_updates_deletes_and_m2m_changes_replay(nodes):
    factories.study(nodes.client, 1, 1, 2)
    hh = Household.objects.using(nodes.client).get()
    hh.village = "Mochudi"
    hh.save()
    crf = CrfOne.objects.using(nodes.client).first()
    crf.symptoms.clear()
    crf.delete()
    push(nodes)
    replay(nodes)
    assert Household.objects.using(nodes.server).get().village == "Mochudi"
    assert CrfOne.objects.using(nodes.server).count() == 1
    assert node_checksums(nodes.server) == node_checksums(nodes.client)


def test_replay_is_exactly_once_and_not_echoed(nodes):
    factories.study(nodes.client, 1, 1, 1)
    push(nodes)
    first = replay(nodes)
    assert replay(nodes) == []
    everything = IncomingTransaction.objects.using(nodes.server).deserialize(
        check_hostname=False)
    assert everything == []  # consumed rows are never applied twice
    assert Household.objects.using(nodes.server).count() == 1
    assert not OutgoingTransaction.objects.using(nodes.server).exists()  # no echo
    consumed = IncomingTransaction.objects.using(nodes.server)
    assert consumed.filter(is_consumed=True).count() == len(first)
    assert set(consumed.values_list("consumer", flat=True)) == {
        conf.node_for_alias(nodes.server).name}


def test_child_before_parent_is_deferred_then_applied(nodes):
    factories.study(nodes.client, 1, 1, 1)
    push(nodes, tx_name__in=["testapp.crfone", "testapp.subjectvisit"])
    early = replay(nodes)
    assert set(outcomes(early)) == {"deferred"}
    assert "waits for testapp.householdmember ['H000-00']" in early[0].text
    assert IncomingTransaction.objects.using(nodes.server).filter(is_deferred=True).count() == 3
    push(nodes)
    later = replay(nodes)
    assert sorted(outcomes(later)) == ["inserted"] * 4 + ["updated"]
    assert node_checksums(nodes.server) == node_checksums(nodes.client)
    assert not IncomingTransaction.objects.using(nodes.server).filter(is_deferred=True).exists()


def test_parent_that_never_arrives_leaves_child_deferred_with_message(nodes):
    factories.study(nodes.client, 1, 1, 1)
    push(nodes, tx_name="testapp.subjectvisit")
    messages = replay(nodes)
    assert outcomes(messages) == ["deferred"]
    row = IncomingTransaction.objects.using(nodes.server).get()
    assert row.is_deferred and not row.is_consumed and not row.is_error
    assert "waits for testapp.householdmember" in row.error
    assert not SubjectVisit.objects.using(nodes.server).exists()


def test_bad_rows_are_isolated_with_specific_messages(nodes):
    factories.study(nodes.client, 1, 1, 1)
    push(nodes)
    good = ser.loads(OutgoingTransaction.objects.using(nodes.client).get(sequence=1).tx)
    inject(nodes, None, "testapp.household", sequence=1, raw="{not json")
    inject(nodes, {**good, "model": "nosuch.model"}, "nosuch.model", sequence=2)
    inject(nodes, {"v": 1, "model": "testapp.localnote", "pk": str(uuid.uuid4()),
                   "nk": ["x"], "fields": {"text": "x"}}, "testapp.localnote", sequence=3)
    inject(nodes, {"v": 1, "model": "auth.permission", "pk": None, "nk": ["a", "b", "c"],
                   "fields": {}}, "auth.permission", sequence=4)
    inject(nodes, {**good, "nk": ["H9"], "pk": str(uuid.uuid4()),
                   "fields": {**good["fields"], "household_identifier": "H9", "colour": "red",
                              "id": str(uuid.uuid4())}}, "testapp.household", sequence=5)
    inject(nodes, {**good, "nk": ["H8"], "pk": str(uuid.uuid4()),
                   "fields": {**good["fields"], "household_identifier": "H8",
                              "gps_lat": "north", "id": str(uuid.uuid4())}},
           "testapp.household", sequence=6)
    messages = {m.sequence: m for m in replay(nodes) if m.producer == "intruder"}
    assert {s: m.outcome for s, m in messages.items()} == {s: "error" for s in range(1, 7)}
    assert "corrupt payload" in messages[1].text
    assert "unknown model 'nosuch.model'" in messages[2].text
    assert "'testapp.localnote' is not registered for sync" in messages[3].text
    assert "'auth.permission' is not registered for sync" in messages[4].text
    assert "testapp.household has no field 'colour'" in messages[5].text
    assert "testapp.household.gps_lat: bad value 'north'" in messages[6].text
    errors = IncomingTransaction.objects.using(nodes.server).filter(is_error=True)
    assert errors.count() == 6 and not errors.filter(error="").exists()
    assert node_checksums(nodes.server) == node_checksums(nodes.client)  # the rest went on
    assert not Household.objects.using(nodes.server).filter(
        household_identifier__in=["H8", "H9"]).exists()


def test_check_hostname_leaves_this_nodes_own_rows_untouched(nodes):
    """Own means produced under this node's name, whatever the machine: every row here
    was captured on this host, and only the one carrying the server's name is skipped."""
    factories.household(nodes.client)
    push(nodes)
    server = conf.node_for_alias(nodes.server).name
    inject(nodes, {"model": "testapp.household", "nk": ["H9"],
                   "fields": {"household_identifier": "H9", "village": "Kanye"}},
           "testapp.household")
    IncomingTransaction.objects.using(nodes.server).filter(producer="intruder").update(
        producer=server, hostname="elsewhere")
    messages = replay(nodes, check_hostname=True)
    assert [(m.producer, m.outcome) for m in messages] == [
        (server, "skipped"), (conf.node_for_alias(nodes.client).name, "inserted")]
    assert "this node's own transaction" in messages[0].text
    assert not IncomingTransaction.objects.using(nodes.server).filter(
        producer=server, is_consumed=True).exists()
    assert Household.objects.using(nodes.server).get().household_identifier == "H001"


def test_client_role_refuses_to_replay(nodes):
    with pytest.raises(ReplayRefused, match="role 'client'"):
        IncomingTransaction.objects.using(nodes.client).deserialize()

    class Device:
        name, role = "laptop-7", "client"

    with pytest.raises(ReplayRefused, match="'laptop-7'"):
        IncomingTransaction.objects.using(nodes.server).deserialize(custom_device=Device())


def test_custom_device_is_recorded_as_consumer(nodes):
    factories.household(nodes.client)
    push(nodes)
    replay(nodes, custom_device="community-server-2")
    assert IncomingTransaction.objects.using(nodes.server).get().consumer == "community-server-2"


def test_mti_int_pk_proxy_and_natural_key_change_replay(nodes):
    Patient.objects.using(nodes.client).create(national_id="N1", name="Ann", clinic_number="7")
    Clinic.objects.using(nodes.server).create(code="OTHER", name="takes pk 1 on the server")
    clinic = Clinic.objects.using(nodes.client).create(code="K1", name="Kgale")
    hh = factories.household(nodes.client, "H001")
    hh = Household.objects.using(nodes.client).get(pk=hh.pk)
    hh.household_identifier = "H001-A"
    hh.save()
    push(nodes)
    replay(nodes)
    patient = Patient.objects.using(nodes.server).get()
    assert Person.objects.using(nodes.server).get().pk == patient.pk
    assert patient.name == "Ann" and patient.clinic_number == "7"
    server_clinic = Clinic.objects.using(nodes.server).get(code="K1")
    assert server_clinic.name == "Kgale" and server_clinic.pk != clinic.pk
    assert Household.objects.using(nodes.server).get().household_identifier == "H001-A"


def test_auth_users_and_groups_replay(nodes):
    group = Group.objects.using(nodes.client).create(name="field-staff")
    user = User.objects.db_manager(nodes.client).create_user("neo", password="pw")
    user.groups.add(group)
    push(nodes)
    replay(nodes)
    server_user = User.objects.using(nodes.server).get(username="neo")
    assert server_user.check_password("pw")
    assert list(server_user.groups.values_list("name", flat=True)) == ["field-staff"]
    assert not OutgoingTransaction.objects.using(nodes.server).exists()


def test_delete_protected_here_waits_until_the_protecting_row_is_gone(nodes):
    """Issue 11, history 3: a PROTECT child this node added makes the delete wait, with
    the reason; once the child is gone the same transaction applies."""
    factories.household(nodes.client, "H001")
    push(nodes)
    replay(nodes)
    server_hh = Household.objects.using(nodes.server).get()
    member = factories.member(nodes.server, server_hh, "S-SERVER-ONLY")
    Household.objects.using(nodes.client).get().delete()
    push(nodes)
    for _ in range(2):  # it waits on every run, and is never an error
        messages = replay(nodes)
        assert outcomes(messages) == ["deferred"]
        assert "testapp.householdmember" in messages[0].text
        assert "waits until they are gone" in messages[0].text
        row = IncomingTransaction.objects.using(nodes.server).get(action="D")
        assert row.is_deferred and not row.is_error and not row.is_consumed
    assert HouseholdMember.objects.using(nodes.server).filter(
        subject_identifier="S-SERVER-ONLY").exists()
    member.delete()
    assert outcomes(replay(nodes)) == ["deleted"]
    assert not Household.objects.using(nodes.server).exists()


def test_apply_and_consumed_mark_commit_together(nodes):
    """A row whose apply fails leaves neither its change nor a consumed mark."""
    factories.study(nodes.client, 1, 1, 1)
    push(nodes)
    visit = IncomingTransaction.objects.using(nodes.server).get(tx_name="testapp.subjectvisit")
    payload = ser.loads(visit.tx)
    payload["fields"]["report_datetime"] = "not a date"
    IncomingTransaction.objects.using(nodes.server).filter(pk=visit.pk).update(
        tx=ser.dumps(payload))
    messages = {m.model: m for m in replay(nodes)}
    assert messages["testapp.subjectvisit"].outcome == "error"
    assert messages["testapp.crfone"].outcome == "deferred"
    visit.refresh_from_db()
    assert visit.is_error and not visit.is_consumed
    assert not SubjectVisit.objects.using(nodes.server).exists()
