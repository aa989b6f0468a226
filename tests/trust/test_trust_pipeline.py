"""Signed transactions through copy and replay, and the attacks of issue 13.

Every test runs on SQLite -> SQLite, SQLite -> PostgreSQL and PostgreSQL -> PostgreSQL
(the ``nodes`` fixture) with trust switched on (``trusted``).
"""
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings

from syncrouter import conf
from syncrouter.exceptions import SyncError
from syncrouter.models import RefusedTransaction
from syncrouter.status import node_status
from syncrouter.trust import devices, keys, signing
from syncrouter.trust.rules import WriteRule
from tests.support import factories, pg
from tests.support.replay import TRANSACTIONAL, replay
from tests.support.trust import (  # noqa: F401
    ON,
    enrol,
    flip,
    inbox,
    node_named,
    outbox,
    trusted,
)
from tests.testapp.models import Household

pytestmark = TRANSACTIONAL


def push(nodes):
    return outbox(nodes.client).filter(is_consumed_server=False).copy_to_incoming_transaction(
        nodes.server)


def households(alias, *identifiers):
    for identifier in identifiers:
        factories.household(alias, identifier)


def test_signed_rows_travel_unchanged_and_apply(trusted):
    households(trusted.client, "H1", "H2")
    Household.objects.using(trusted.client).filter(household_identifier="H1").delete()
    assert push(trusted).copied == 3
    sent = dict(outbox(trusted.client).values_list("id", "signature"))
    assert all(s.startswith("v1.") for s in sent.values())
    assert dict(inbox(trusted.server).values_list("id", "signature")) == sent
    outcomes = {m.outcome for m in replay(trusted.server).values()}
    assert outcomes <= {"inserted", "deleted", "skipped"}
    assert list(Household.objects.using(trusted.server).values_list(
        "household_identifier", flat=True)) == ["H2"]


SIGNED = ("tx", "signature", "producer", "sequence", "tx_name", "action", "hlc",
          "db_transaction_id", "id", "tx_pk", "hostname")


@pytest.mark.parametrize("field", SIGNED)
def test_one_changed_field_is_refused_at_copy_and_the_rest_applies(trusted, field):
    households(trusted.client, "H1", "H2", "H3")
    rows = outbox(trusted.client)
    victim = rows.get(sequence=2)
    value = getattr(victim, field)
    changed = flip(value, 40) if field != "action" else ("D" if value != "D" else "U")
    rows.filter(pk=victim.pk).update(**{field: changed})

    result = push(trusted)

    assert result.copied == 2
    refused = RefusedTransaction.objects.using(trusted.server).get()
    assert refused.reason.startswith("refused: ")
    if field == "producer":
        assert "unknown producer" in refused.reason
    else:
        assert "signature" in refused.reason, refused.reason
    messages = replay(trusted.server)
    assert sorted(m.outcome for m in messages.values()) == ["inserted", "inserted"]
    assert set(Household.objects.using(trusted.server).values_list(
        "household_identifier", flat=True)) == {"H1", "H3"}
    status = node_status(trusted.server)
    assert [(p.at_entry, p.at_replay) for p in status.refused_here] == [(1, 0)]
    assert status.needs_attention


@pytest.mark.parametrize("field", ["tx", "signature", "hlc", "tx_pk"])
def test_a_row_changed_in_the_inbox_is_refused_at_replay(trusted, field):
    """A middleman (or anyone who can write the inbox) edits a row after the copy."""
    households(trusted.client, "H1", "H2")
    push(trusted)
    row = inbox(trusted.server).get(sequence=1)
    changed = flip(getattr(row, field), 40)
    if field == "tx":
        changed = row.tx.replace('"H1"', '"HX"')
    inbox(trusted.server).filter(pk=row.pk).update(**{field: changed})

    messages = replay(trusted.server)

    name = conf.node_for_alias(trusted.client).name
    assert messages[(name, 1)].outcome == "refused"
    assert "signature" in messages[(name, 1)].text
    assert messages[(name, 2)].outcome == "inserted"
    assert not Household.objects.using(trusted.server).filter(
        household_identifier__in=["H1", "HX"]).exists()
    refused = inbox(trusted.server).get(sequence=1)
    assert refused.is_refused and refused.is_error and not refused.is_consumed
    assert [(p.producer, p.at_replay) for p in node_status(trusted.server).refused_here] == [(name, 1)]


def test_unknown_producer_and_the_server_itself_are_refused(trusted):
    """The issue's hand-written outbox rows: producer field-laptop-9 (never enrolled)
    rewriting the server admin, and a row naming the server as its producer."""
    admin = User.objects.db_manager(trusted.server).create_superuser("admin", password="old")
    old_password = admin.password
    households(trusted.client, "H1")
    template = outbox(trusted.client).get()
    server_name = conf.node_for_alias(trusted.server).name
    payload = ('{"v": 1, "model": "auth.user", "pk": null, "nk": ["admin"], "fields": '
               '{"password": "pbkdf2_sha256$1$x$y"}, "before": {}}')
    for producer, sequence in (("field-laptop-9", 1), (server_name, 7)):
        values = {f.attname: getattr(template, f.attname) for f in template._meta.concrete_fields}
        values.update(id=uuid.uuid4(), producer=producer, sequence=sequence, tx=payload,
                      tx_name="auth.user", action="U")
        outbox(trusted.client).create(**values)

    assert push(trusted).copied == 1

    reasons = dict(RefusedTransaction.objects.using(trusted.server).values_list(
        "producer", "reason"))
    assert "unknown producer 'field-laptop-9'" in reasons["field-laptop-9"]
    assert "names this node" in reasons[server_name]
    assert [m.outcome for m in replay(trusted.server).values()] == ["inserted"]
    assert User.objects.using(trusted.server).get(username="admin").password == old_password


def test_an_enrolled_laptop_may_not_touch_the_admin(trusted):
    """Signed by an enrolled laptop, still refused: the default auth write rule."""
    User.objects.db_manager(trusted.server).create_superuser("admin", password="old")
    User.objects.db_manager(trusted.client).create_user("admin", password="laptop")
    user = User.objects.db_manager(trusted.client).create_user("nurse", password="x")
    user.first_name = "Naledi"
    user.save()
    push(trusted)
    messages = list(replay(trusted.server).values())
    refused = [m for m in messages if m.outcome == "refused"]
    assert [m.key for m in refused] == [["admin"]]
    assert "write rule 'auth-users-from-field'" in refused[0].text
    assert "is_superuser" in refused[0].text
    assert User.objects.using(trusted.server).get(username="admin").check_password("old")
    assert User.objects.using(trusted.server).get(username="nurse").first_name == "Naledi"


def test_privilege_fields_from_a_laptop_are_refused(trusted):
    User.objects.db_manager(trusted.client).create_user("nurse", password="x", is_staff=True)
    push(trusted)
    (message,) = replay(trusted.server).values()
    assert message.outcome == "refused" and "may not set is_staff" in message.text
    assert not User.objects.using(trusted.server).exists()


def test_a_forged_row_claiming_another_devices_name(trusted):
    """laptop-2 (enrolled) writes rows under laptop-1's name, signed with its own key."""
    victim = conf.node_for_alias(trusted.client).name
    households(trusted.client, "H1")
    with node_named(trusted.client, "laptop-2"):
        enrol(trusted.server, trusted.client)
        households(trusted.client, "H2")
    outbox(trusted.client).filter(producer="laptop-2").update(producer=victim, sequence=2)

    assert push(trusted).copied == 1
    reason = RefusedTransaction.objects.using(trusted.server).get().reason
    assert "does not match its key: signed with the key of 'laptop-2'" in reason


def test_an_old_signed_transaction_replayed_under_a_new_id(trusted):
    households(trusted.client, "H1")
    push(trusted)
    replay(trusted.server)
    Household.objects.using(trusted.server).all().delete()
    old = inbox(trusted.server).get()
    values = {f.attname: getattr(old, f.attname) for f in old._meta.concrete_fields}
    values.update(id=uuid.uuid4(), sequence=old.sequence + 1, is_consumed=False)
    inbox(trusted.server).create(**values)

    (message,) = replay(trusted.server).values()

    assert message.outcome == "refused" and "signature" in message.text
    assert not Household.objects.using(trusted.server).exists()


def test_revoked_device_earlier_rows_stay_valid(trusted):
    name = conf.node_for_alias(trusted.client).name
    households(trusted.client, "H1", "H2")
    push(trusted)
    devices.revoke(trusted.server, name)  # cut-off: what arrived so far (#2)
    households(trusted.client, "H3")
    push(trusted)
    assert RefusedTransaction.objects.using(trusted.server).get().reason == (
        f"refused: device {name!r} was revoked after #2; this is #3")
    assert sorted(m.outcome for m in replay(trusted.server).values()) == ["inserted"] * 2

    devices.revoke(trusted.server, name, after=1)  # rows already in the inbox: at replay
    Household.objects.using(trusted.server).all().delete()
    inbox(trusted.server).update(is_consumed=False)
    messages = replay(trusted.server)
    assert messages[(name, 1)].outcome == "inserted"
    assert messages[(name, 2)].outcome == "refused"


def test_unsigned_rows_refused_unless_the_upgrade_path_is_on(trusted):
    with override_settings(SYNCROUTER_SIGN=False):
        households(trusted.client, "H1")
    with node_named(trusted.client, "never-enrolled"), override_settings(SYNCROUTER_SIGN=False):
        households(trusted.client, "H2")
    push(trusted)
    assert set(RefusedTransaction.objects.using(trusted.server).values_list(
        "reason", flat=True)) == {"refused: unsigned (SYNCROUTER_ACCEPT_UNSIGNED is off)",
                                  "refused: unknown producer 'never-enrolled' (not enrolled: "
                                  "'keys trust')"}
    RefusedTransaction.objects.using(trusted.server).all().delete()
    outbox(trusted.client).update(is_consumed_server=False)
    with override_settings(SYNCROUTER_ACCEPT_UNSIGNED=True):
        assert push(trusted).copied == 1
        assert [m.outcome for m in replay(trusted.server).values()] == ["inserted"]
    assert RefusedTransaction.objects.using(trusted.server).get().producer == "never-enrolled"


def test_capture_without_a_key_writes_nothing(trusted):
    with override_settings(SYNCROUTER_KEY_DIR=trusted and "/nonexistent/keys"):
        with pytest.raises(SyncError, match="has no key"):
            households(trusted.client, "H1")
    assert not Household.objects.using(trusted.client).exists()
    assert not outbox(trusted.client).exists()


def same_village(row, payload, model, alias, device):
    """A row-level rule: a laptop writes households of its own village only."""
    village = {"laptop-a": "Ramotswa", "laptop-b": "Otse"}.get(row.producer)
    if (payload.get("fields") or {}).get("village", village) != village:
        return f"may write households of {village} only"
    return None


def test_write_rules_by_role_and_row(trusted):
    rules = [WriteRule("households-by-village", models=["testapp.household"], roles=["client"],
                       actions="IU", check=same_village)]
    with override_settings(SYNCROUTER_WRITE_RULES=rules):
        for name in ("laptop-a", "laptop-b"):
            with node_named(trusted.client, name):
                enrol(trusted.server, trusted.client)
                factories.household(trusted.client, f"{name}-1", village="Ramotswa")
        with node_named(trusted.client, "laptop-a"):
            factories.household(trusted.client, "laptop-a-2", village="Ramotswa")
            Household.objects.using(trusted.client).get(
                household_identifier="laptop-a-2").delete()
        push(trusted)
        messages = replay(trusted.server)
    assert messages[("laptop-a", 1)].outcome == "inserted"
    assert messages[("laptop-b", 1)].outcome == "refused"
    assert messages[("laptop-b", 1)].text == (
        "refused by write rule 'households-by-village': laptop-b (role client) may write "
        "households of Otse only")
    assert messages[("laptop-a", 3)].outcome == "refused"
    assert "may not delete testapp.household" in messages[("laptop-a", 3)].text
    refused = {p.producer: p for p in node_status(trusted.server).refused_here}
    assert refused["laptop-b"].at_replay == 1
    assert "households-by-village" in refused["laptop-b"].last_reason


def test_signature_values_match_canonical_bytes_on_every_backend(trusted):
    """What capture signed verifies from the values read back from each database."""
    households(trusted.client, "H1")
    row = outbox(trusted.client).get()
    public = keys.require(trusted.client).public
    signing.verify(signing.values_of(row), public)


def test_a_middleman_that_edits_a_row_before_forwarding(tmp_path):
    """laptop (SQLite) -> middleman (SQLite) -> community (PostgreSQL): the middleman's
    edit is refused where it arrives; the untouched row arrives with its signature."""
    if not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    names = {**settings.SYNCROUTER_NODES, "server": {"name": "middleman-1", "role": "middleman"}}
    with override_settings(**ON, SYNCROUTER_KEY_DIR=tmp_path / "keys", SYNCROUTER_NODES=names):
        for alias in ("client", "server", "pgserver"):
            keys.create(alias)
        enrol("server", "client")
        enrol("pgserver", "client")
        enrol("pgserver", "server", role="middleman")
        factories.load_symptoms("pgserver")
        households("client", "H1", "H2")
        outbox("client").filter(is_consumed_middleman=False).copy_to_incoming_transaction("server")
        edited = inbox("server").get(sequence=1)
        inbox("server").filter(pk=edited.pk).update(tx=edited.tx.replace('"H1"', '"HX"'))

        result = inbox("server").filter(is_consumed_server=False).copy_to_incoming_transaction(
            "pgserver")

        assert tuple(result) == (1, 0)
        refused = RefusedTransaction.objects.using("pgserver").get()
        assert (refused.sequence, refused.source) == (1, "copy from alias 'server'")
        assert "bad signature" in refused.reason
        arrived = inbox("pgserver").get()
        assert arrived.signature == outbox("client").get(sequence=2).signature
        assert arrived.hops == '["field-laptop-1","middleman-1","community-pg"]'
        assert [m.outcome for m in replay("pgserver").values()] == ["inserted"]
        assert list(Household.objects.using("pgserver").values_list(
            "household_identifier", flat=True)) == ["H2"]
