"""The older tools' replay API: device objects, message fields, payload repairs, dry runs."""
import datetime
import re
import uuid
from types import SimpleNamespace

import pytest
from django.core import checks
from django.test import override_settings
from hypothesis import HealthCheck, event, given, settings, strategies as st

from syncrouter import conf, serialization as ser
from syncrouter.exceptions import ReplayRefused, SyncError
from syncrouter.models import Conflict, IncomingTransaction, ProducerClock
from syncrouter.replay import dryrun, repairs
from syncrouter.replay.devices import consumer_node
from syncrouter.signals import pre_replay
from tests.support import factories
from tests.support.checksum import node_checksums
from tests.support.replay import outcomes, push, replay
from tests.testapp.models import CrfOne, Household


def edc_device(**attributes):
    """An object of edc-device's shape: device_id, is_server, device_role, no name."""
    return SimpleNamespace(**attributes)


SERVER = edc_device(device_id="99", is_server=True, device_role="CentralServer")


def inbox(alias) -> list:
    """Every column of every incoming row (marks included)."""
    return list(IncomingTransaction.objects.using(alias).order_by("producer", "sequence")
                .values_list())


# --- device objects -------------------------------------------------------------

def test_an_edc_server_device_replays_as_the_aliases_node(nodes):
    factories.household(nodes.client)
    push(nodes)
    messages = replay(nodes.server, custom_device=SERVER)
    assert list(outcomes(messages).values()) == ["inserted"]
    row = IncomingTransaction.objects.using(nodes.server).get()
    assert row.consumer == conf.node_for_alias(nodes.server).name


@pytest.mark.parametrize("device", [
    edc_device(device_id="05", is_server=False, device_role="Client"),
    edc_device(device_id="95", is_server=False, device_role="Middleman"),
    edc_device(device_id="05", is_server=False),
    edc_device(device_id="05", device_role="Client"),
    edc_device(device_id="05", is_server=lambda: False, device_role=lambda device_id: "Client"),
], ids=["client", "middleman", "is_server-only", "role-only", "callables"])
def test_an_edc_device_that_is_not_a_server_refuses_and_marks_nothing(nodes, device):
    factories.household(nodes.client)
    push(nodes)
    before = inbox(nodes.server)
    with pytest.raises(ReplayRefused, match="is not a server"):
        replay(nodes.server, custom_device=device)
    assert inbox(nodes.server) == before
    assert not Household.objects.using(nodes.server).exists()


@pytest.mark.parametrize("device, message", [
    (edc_device(device_id="99", is_server=True, device_role="Client"), "they disagree"),
    (edc_device(device_id="05", is_server=False, device_role="NodeServer"), "they disagree"),
    (edc_device(device_id="99", is_server=True, device_role="Laptop"), "'Laptop'"),
    (edc_device(device_id="99", is_server="yes"), "is_server='yes'"),
    (edc_device(device_id="99"), "neither is_server nor device_role"),
    (SimpleNamespace(name="laptop-7", role="Server"), "role 'Server'"),
    (object(), "none of them"),
    (SimpleNamespace(role="community"), "none of them"),
    (42, "none of them"),
    ("", "names no node"),
])
def test_a_device_that_cannot_be_read_is_an_error(device, message):
    with pytest.raises(SyncError, match=message) as raised:
        consumer_node(device, "server")
    assert not isinstance(raised.value, ReplayRefused)


def test_edc_device_app_config_shape_is_read_as_a_device():
    """edc-device's AppConfig: name is the app's, role one of edc-device's names."""
    config = SimpleNamespace(name="edc_device", device_id="98", is_server=True, role="NodeServer")
    assert consumer_node(config, "server") == conf.Node("server", "community-lite", "community")
    assert consumer_node(SERVER, "server").role == "central"


ATTRIBUTES = {
    "name": st.one_of(st.none(), st.text(max_size=5)),
    "role": st.one_of(st.none(), st.sampled_from([*conf.ROLES, "Server", "NodeServer", "x"])),
    "is_server": st.one_of(st.none(), st.booleans(), st.integers(0, 1)),
    "device_role": st.one_of(st.none(), st.sampled_from(
        ["Client", "Middleman", "NodeServer", "CentralServer", "Server", "community", "?"])),
    "device_id": st.one_of(st.none(), st.sampled_from(["00", "95", "99"])),
}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(ATTRIBUTES)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: ATTRIBUTES[k] for k in keys})))
def test_no_device_replays_with_its_role_unread(attributes):
    """Whatever the attributes: an error, or a node of a known role; an edc-shaped
    device that is not a server never gets to replay."""
    device = SimpleNamespace(**attributes)
    try:
        node = consumer_node(device, "server")
    except ReplayRefused:
        assert any(a in attributes for a in ("is_server", "device_role", "device_id"))
        return
    except SyncError:
        return
    assert node.role in conf.ROLES
    if any(a in attributes for a in ("is_server", "device_role", "device_id")):
        assert attributes.get("is_server") in (True, None) and node.role in ("community",
                                                                            "central")
    else:
        assert node.name == attributes["name"] and node.role == attributes.get("role", "community")


# --- message fields -------------------------------------------------------------

def test_messages_answer_the_older_tools_fields(nodes):
    factories.study(nodes.client, 1, 1, 1)
    push(nodes)
    replay(nodes.server)
    hh = Household.objects.using(nodes.client).get()
    hh.village = "Mochudi"
    hh.save()
    CrfOne.objects.using(nodes.client).get().delete()
    push(nodes)
    messages = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False)
    inserted = updated = deleted = 0
    for message in messages:  # as edc-sync's callers summed them
        inserted += message.inserted
        updated += message.updated
        deleted += message.deleted
        assert message.tx_name == message.model and message.tx_pk == message.key
        assert message.success is (message.outcome in ("inserted", "updated", "deleted",
                                                       "skipped"))
    assert (inserted, updated, deleted) == (
        messages.counts.get("inserted", 0), messages.counts.get("updated", 0),
        messages.counts.get("deleted", 0))
    assert (inserted, updated, deleted) == (0, 1, 1)
    crf = next(m for m in messages if m.model == "testapp.crfone")
    assert crf.tx_pk == crf.key == ["H000-00", "1000"]


def test_message_fields_add_nothing_to_a_stored_message():
    from syncrouter.replay.messages import ReplayMessage

    assert [f for f in ReplayMessage.__dataclass_fields__] == [
        "tx_id", "producer", "sequence", "model", "key", "action", "outcome", "text"]
    message = ReplayMessage("id", "p", 1, "app.m", ["k"], "I", "deferred", "waits")
    assert (message.inserted, message.updated, message.deleted, message.success) == (
        0, 0, 0, False)
    with pytest.raises(AttributeError):
        message.inserted = 1


# --- payload repairs ------------------------------------------------------------

def bad_visit_date(nodes) -> IncomingTransaction:
    """A CRF whose visit_date arrives as a datetime, as an older client sent it."""
    factories.study(nodes.client, 1, 1, 1)
    push(nodes)
    row = IncomingTransaction.objects.using(nodes.server).get(tx_name="testapp.crfone",
                                                              action="I")
    payload = ser.loads(row.tx)
    payload["fields"]["visit_date"] = "2026-11-02T09:30:00+02:00"
    row.tx = ser.dumps(payload)
    row.save(using=nodes.server)
    return row


def retry_errors(alias) -> None:
    IncomingTransaction.objects.using(alias).filter(is_error=True).update(is_error=False)


def test_a_datetime_for_a_date_stays_in_error_without_a_repair(nodes):
    bad_visit_date(nodes)
    messages = replay(nodes.server)
    crf = next(m for m in messages.values() if m.model == "testapp.crfone")
    assert crf.outcome == "error" and "visit_date: bad value" in crf.text


@pytest.mark.parametrize("declared", ["settings", "model"])
def test_a_repair_hook_mends_the_payload_before_decoding(nodes, monkeypatch, declared):
    row = bad_visit_date(nodes)
    stored = row.tx
    replay(nodes.server)
    hook = repairs.datetime_to_date("visit_date")
    if declared == "model":
        monkeypatch.setattr(CrfOne, "sync_payload_repairs", [hook], raising=False)
        repairs.hooks_for.cache_clear()
    retry_errors(nodes.server)
    with override_settings(SYNCROUTER_PAYLOAD_REPAIRS={"testapp.crfone": [hook]}
                           if declared == "settings" else {}):
        messages = replay(nodes.server)
    repairs.hooks_for.cache_clear()
    assert {m.outcome for m in messages.values()} == {"inserted", "updated"}  # CRF and its M2M
    crf = CrfOne.objects.using(nodes.server).get()
    assert crf.visit_date == datetime.date(2026, 11, 2)
    assert IncomingTransaction.objects.using(nodes.server).get(pk=row.pk).tx == stored


def relabel_outcome(payload, *, model, transaction):
    """A repair named by dotted path: an outcome code retired on the server."""
    if payload.get("fields", {}).get("outcome") == "ill":
        payload["fields"]["outcome"] = "referred"
    return payload


def test_hooks_run_in_order_on_the_fast_path_too(nodes):
    """Model hooks first, then the setting's; batches of CRFs go the fast path."""
    factories.study(nodes.client, 2, 2, 2)
    push(nodes)
    seen = []

    def count(payload, *, model, transaction):
        seen.append(transaction.sequence)
        return payload

    with override_settings(SYNCROUTER_PAYLOAD_REPAIRS={
            "testapp.crfone": [count, "tests.compat.test_compat_replay.relabel_outcome"]}):
        replay(nodes.server)
    assert sorted(seen) == sorted(IncomingTransaction.objects.using(nodes.server).filter(
        tx_name="testapp.crfone").values_list("sequence", flat=True))
    assert set(CrfOne.objects.using(nodes.server).values_list("outcome", flat=True)) == {
        "referred"}
    assert set(CrfOne.objects.using(nodes.client).values_list("outcome", flat=True)) == {"ill"}


def raises(payload, **context):
    raise KeyError("fields")


@pytest.mark.parametrize("hook, message", [
    (raises, "payload repair tests.compat.test_compat_replay.raises failed: KeyError"),
    (lambda payload, **context: None, "returned NoneType, not a payload of testapp.crfone"),
    (lambda payload, **context: {**payload, "model": "testapp.crftwo"}, "not a payload of"),
    ("tests.nowhere.fix", "SYNCROUTER_PAYLOAD_REPAIRS\\['testapp.crfone'\\]: cannot import"),
    (42, "42 is not callable"),
])
def test_a_failing_repair_puts_only_its_rows_in_error_by_name(nodes, hook, message):
    factories.study(nodes.client, 1, 1, 1)
    push(nodes)
    with override_settings(SYNCROUTER_PAYLOAD_REPAIRS={"testapp.crfone": [hook]}):
        messages = replay(nodes.server)
    crfs = [m for m in messages.values() if m.model == "testapp.crfone"]
    assert {m.outcome for m in crfs} == {"error"}
    assert all(re.search(message, m.text) for m in crfs), crfs
    assert all(IncomingTransaction.objects.using(nodes.server).filter(
        tx_name="testapp.crfone").values_list("is_error", flat=True))
    others = {m.outcome for m in messages.values() if m.model != "testapp.crfone"}
    assert others <= {"inserted", "updated"} and not CrfOne.objects.using(nodes.server).exists()


def test_the_system_check_names_bad_repair_declarations():
    with override_settings(SYNCROUTER_PAYLOAD_REPAIRS={"testapp.crfone": ["tests.nowhere.fix"],
                                                       "testapp.localnote": []}):
        errors = [e.msg for e in checks.run_checks(databases=[]) if e.id == "syncrouter.E006"]
    assert any("'testapp.localnote', which is not a model registered" in e for e in errors)
    assert any("cannot import 'tests.nowhere.fix'" in e for e in errors)


# --- dry run --------------------------------------------------------------------

def conflicting_edits(nodes) -> None:
    """A study replayed, then the same household edited on both nodes, and more work."""
    factories.study(nodes.client, 2, 1, 1)
    push(nodes)
    replay(nodes.server)
    for alias, village in ((nodes.server, "Server-side"), (nodes.client, "Laptop-side")):
        hh = Household.objects.using(alias).get(household_identifier="H000")
        hh.village = village
        hh.save()
    CrfOne.objects.using(nodes.client).filter(
        subject_visit__household_member__subject_identifier="H001-00").delete()
    factories.study(nodes.client, 1, 1, 2, prefix="N")
    push(nodes)


def state(alias) -> tuple:
    return (node_checksums(alias), inbox(alias),
            list(ProducerClock.objects.using(alias).values_list()),
            Conflict.objects.using(alias).count())


@pytest.mark.parametrize("keyword", ["dry_run", "deserialize_only"])
def test_a_dry_run_reports_what_replay_will_do_and_changes_nothing(nodes, keyword):
    conflicting_edits(nodes)
    before = state(nodes.server)
    rehearsal = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False, **{keyword: True})
    assert state(nodes.server) == before
    real = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False)
    assert [(m.tx_id, m.outcome) for m in rehearsal] == [(m.tx_id, m.outcome) for m in real]
    assert {"conflict", "inserted", "deleted"} <= set(rehearsal.counts)
    conflict = next(m for m in rehearsal if m.outcome == "conflict")
    assert "conflict (dry run, not recorded)" in conflict.text
    assert "conflict #" in next(m for m in real if m.outcome == "conflict").text


def test_receivers_can_tell_a_dry_run(nodes):
    factories.household(nodes.client)
    push(nodes)
    seen = []

    def receiver(sender, alias, **kwargs):
        seen.append(dryrun.is_dry_run(alias))

    pre_replay.connect(receiver, sender=Household)
    try:
        replay(nodes.server, dry_run=True)
        replay(nodes.server)
    finally:
        pre_replay.disconnect(receiver, sender=Household)
    assert seen == [True, False]
    assert not dryrun.is_dry_run(nodes.server)


def test_a_dry_run_on_a_client_is_refused_like_a_replay(nodes):
    with pytest.raises(ReplayRefused):
        IncomingTransaction.objects.using(nodes.client).deserialize(dry_run=True)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_inbox_dry_runs_as_it_replays(nodes, data):
    """Random edits on both nodes, copied in random order: the dry run's report equals the
    real run's, and it leaves the node exactly as it was."""
    serial = uuid.uuid4().hex[:8]  # examples share the database: each its own household
    hh = factories.household(nodes.client, f"R{serial}")
    member = factories.member(nodes.client, hh, f"R{serial}-0")
    steps = data.draw(st.lists(st.sampled_from(
        ["visit", "edit", "village", "server-village", "gone", "push", "replay"]), max_size=8))
    for number, step in enumerate(steps):
        if step == "visit":
            factories.crf(nodes.client, factories.visit(nodes.client, member, f"{2000 + number}"))
        elif step == "edit":
            member.first_name = data.draw(st.sampled_from(["Ann", "Bo"]))
            member.save()
        elif step == "village":
            hh.village = data.draw(st.sampled_from(["Lobatse", "Kanye"]))
            hh.save()
        elif step == "server-village":
            Household.objects.using(nodes.server).filter(
                household_identifier=hh.household_identifier).update(village="Edited here")
        elif step == "gone":
            CrfOne.objects.using(nodes.client).filter(
                subject_visit__household_member=member).delete()
        elif step == "push":
            push(nodes)
        else:
            push(nodes)
            replay(nodes.server)
    push(nodes)
    pending = IncomingTransaction.objects.using(nodes.server).filter(is_consumed=False)
    before = state(nodes.server)
    rehearsal = pending.deserialize(check_hostname=False, dry_run=True)
    assert state(nodes.server) == before
    real = pending.deserialize(check_hostname=False)
    event(f"outcomes: {sorted(real.counts)}")
    unrecorded = "conflict (dry run, not recorded) "
    assert [(m.tx_id, m.outcome, m.text) for m in rehearsal] == [
        (m.tx_id, m.outcome, re.sub(r"\bconflict #\d+ ", unrecorded, m.text)) for m in real]
