"""Atomic groups: the changes of one client database transaction apply together or not at all."""
from django.db import transaction
from django.test import override_settings

from syncrouter.models import Conflict, IncomingTransaction
from syncrouter.replay.conflicts import resolve
from tests.support import factories
from tests.support.replay import TRANSACTIONAL, incoming, outcomes, producer, push, replay
from tests.testapp.models import Household, HouseholdMember

pytestmark = TRANSACTIONAL


def _group_with_foreign_parent(nodes):
    """laptop-a, in one transaction: household H002 and a member of laptop-b's H001."""
    with producer(nodes.client, "laptop-b"):
        hh = factories.household(nodes.client, "H001")
    with producer(nodes.client, "laptop-a"):
        with transaction.atomic(using=nodes.client):
            factories.household(nodes.client, "H002")
            factories.member(nodes.client, hh, "S001")
            factories.household(nodes.client, "H003")
        factories.household(nodes.client, "H004")


def test_group_waits_whole_for_one_member(nodes):
    _group_with_foreign_parent(nodes)
    push(nodes, producer="laptop-a")
    first = replay(nodes.server, batch_size=2)  # the group spans two pages
    assert outcomes(first) == {("laptop-a", 1): "deferred", ("laptop-a", 2): "deferred",
                               ("laptop-a", 3): "deferred", ("laptop-a", 4): "inserted"}
    assert first[("laptop-a", 2)].text.startswith("waits for testapp.household ['H001']")
    assert first[("laptop-a", 1)].text.startswith(
        "not applied: its database transaction also holds laptop-a#2 "
        "(testapp.householdmember ['S001']), which is deferred: waits for testapp.household")
    assert list(Household.objects.using(nodes.server).values_list(
        "household_identifier", flat=True)) == ["H004"]
    group = IncomingTransaction.objects.using(nodes.server).filter(sequence__lte=3)
    assert len({row.db_transaction_id for row in group}) == 1

    push(nodes)
    second = replay(nodes.server)
    assert set(outcomes(second).values()) == {"inserted"}
    assert HouseholdMember.objects.using(nodes.server).get().household.household_identifier \
        == "H001"
    assert Household.objects.using(nodes.server).count() == 4


def test_group_in_error_names_the_member_and_writes_nothing(nodes):
    _group_with_foreign_parent(nodes)
    push(nodes)
    IncomingTransaction.objects.using(nodes.server).filter(producer="laptop-a", sequence=3).update(
        tx_name="testapp.localnote")
    messages = replay(nodes.server)
    assert outcomes(messages) == {("laptop-a", 1): "error", ("laptop-a", 2): "error",
                                  ("laptop-a", 3): "error", ("laptop-a", 4): "inserted",
                                  ("laptop-b", 1): "inserted"}
    assert "not registered for sync" in messages[("laptop-a", 3)].text
    for sequence in (1, 2):
        row = incoming(nodes.server, "laptop-a", sequence)
        assert row.is_error and not row.is_consumed
        assert "also holds laptop-a#3 (testapp.localnote ['H003']), which is error" in row.error
    assert sorted(Household.objects.using(nodes.server).values_list(
        "household_identifier", flat=True)) == ["H001", "H004"]
    assert not HouseholdMember.objects.using(nodes.server).exists()


def test_group_held_by_a_manual_conflict_keeps_the_ledger_row(nodes):
    """One member conflicts (manual): the group waits, the conflict stays on record."""
    hh = factories.household(nodes.client, "H001")
    push(nodes)
    replay(nodes.server)
    Household.objects.using(nodes.server).filter(pk=hh.pk).update(village="Gabane")
    with producer(nodes.client, "laptop-a"):
        with transaction.atomic(using=nodes.client):
            factories.member(nodes.client, hh, "S001")
            hh.village = "Molepolole"
            hh.save()
    push(nodes)
    with override_settings(SYNCROUTER_CONFLICT_POLICY="manual"):
        first = replay(nodes.server)
        assert outcomes(first)[("laptop-a", 1)] == "deferred"
        assert outcomes(first)[("laptop-a", 2)] == "conflict"
        conflict = Conflict.objects.using(nodes.server).get()
        assert conflict.resolution == "pending"
        assert f"laptop-a#2 (testapp.household ['H001']), which is held: conflict #{conflict.pk}" \
            in first[("laptop-a", 1)].text
        assert not HouseholdMember.objects.using(nodes.server).exists()

        resolve(conflict, keep="incoming", by="lead")
        second = replay(nodes.server)
    assert outcomes(second) == {("laptop-a", 1): "inserted", ("laptop-a", 2): "conflict"}
    assert Household.objects.using(nodes.server).get().village == "Molepolole"
    assert HouseholdMember.objects.using(nodes.server).exists()
