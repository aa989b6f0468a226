"""Replay order (guarantee 5): per-producer sequence order, gaps, parents that come later."""
from syncrouter.models import Conflict, IncomingTransaction
from syncrouter.replay.gaps import ProducerStream, missing_ranges, producer_streams
from tests.support import factories
from tests.support.replay import TRANSACTIONAL, incoming, outcomes, producer, push, replay
from tests.testapp.models import Household, HouseholdMember, SubjectVisit

pytestmark = TRANSACTIONAL


def _village(alias, identifier="H001"):
    return Household.objects.using(alias).get(household_identifier=identifier).village


def _rename(alias, identifier, *villages):
    hh = Household.objects.using(alias).get(household_identifier=identifier)
    for village in villages:
        hh.village = village
        hh.save()


def test_producers_interleave_each_in_sequence_order(nodes):
    with producer(nodes.client, "laptop-a"):
        factories.household(nodes.client, "H001")
        _rename(nodes.client, "H001", "A1", "A2", "A3")
    with producer(nodes.client, "laptop-b"):
        factories.household(nodes.client, "H002")
        _rename(nodes.client, "H002", "B1", "B2")
    push(nodes)
    messages = replay(nodes.server, batch_size=2)
    assert outcomes(messages) == {
        ("laptop-a", 1): "inserted", ("laptop-a", 2): "updated", ("laptop-a", 3): "updated",
        ("laptop-a", 4): "updated", ("laptop-b", 1): "inserted", ("laptop-b", 2): "updated",
        ("laptop-b", 3): "updated"}
    assert (_village(nodes.server, "H001"), _village(nodes.server, "H002")) == ("A3", "B2")
    assert not Conflict.objects.using(nodes.server).exists()


def test_gap_defers_dependent_rows_instead_of_a_conflict(nodes):
    """#2 is missing: #3 (whose before-state is #2's result) waits; #4 (another row) goes on."""
    with producer(nodes.client, "laptop-a"):
        factories.household(nodes.client, "H001")
        _rename(nodes.client, "H001", "Two", "Three")
        factories.household(nodes.client, "H002")
    push(nodes, sequence__in=[1, 3, 4])
    first = replay(nodes.server)
    assert outcomes(first) == {("laptop-a", 1): "inserted", ("laptop-a", 3): "deferred",
                               ("laptop-a", 4): "inserted"}
    assert "#2-2 have not arrived" in first[("laptop-a", 3)].text
    assert incoming(nodes.server, "laptop-a", 3).is_deferred
    assert _village(nodes.server) == "Ramotswa"
    assert not Conflict.objects.using(nodes.server).exists()

    push(nodes)
    second = replay(nodes.server)
    assert outcomes(second) == {("laptop-a", 2): "updated", ("laptop-a", 3): "updated"}
    assert _village(nodes.server) == "Three"
    assert not Conflict.objects.using(nodes.server).exists()


def test_gap_report_per_producer(nodes):
    with producer(nodes.client, "laptop-a"):
        for n in range(1, 8):
            factories.household(nodes.client, f"H{n:03d}")
    with producer(nodes.client, "laptop-b"):
        factories.member(nodes.client, Household.objects.using(nodes.client).get(
            household_identifier="H006"), "S001")
        factories.household(nodes.client, "H100")
    push(nodes, producer="laptop-a", sequence__in=[1, 2, 4, 7])
    push(nodes, producer="laptop-b", sequence=1)
    IncomingTransaction.objects.using(nodes.server).filter(
        producer="laptop-a", sequence=4).update(tx="{not json")
    replay(nodes.server)
    assert missing_ranges(nodes.server) == {"laptop-a": [(3, 3), (5, 6)]}
    assert producer_streams(nodes.server) == [
        ProducerStream(producer="laptop-a", contiguous=2, highest=7, gaps=[(3, 3), (5, 6)],
                       pending=0, deferred=0, errors=1, consumed=3),
        ProducerStream(producer="laptop-b", contiguous=1, highest=1, gaps=[],
                       pending=0, deferred=1, errors=0, consumed=0),
    ]
    push(nodes, producer="laptop-b")
    IncomingTransaction.objects.using(nodes.server).filter(producer="laptop-a", sequence=1).delete()
    assert missing_ranges(nodes.server, ["laptop-a"]) == {"laptop-a": [(1, 1), (3, 3), (5, 6)]}
    streams = {s.producer: s for s in producer_streams(nodes.server)}
    assert (streams["laptop-a"].contiguous, streams["laptop-b"].pending) == (0, 1)


def test_child_waits_for_parent_from_a_later_run(nodes):
    with producer(nodes.client, "laptop-a"):
        hh = factories.household(nodes.client, "H001")
        hm = factories.member(nodes.client, hh, "S001")
        factories.visit(nodes.client, hm, "1000")
    push(nodes, sequence__in=[2, 3])
    first = replay(nodes.server)
    assert outcomes(first) == {("laptop-a", 2): "deferred", ("laptop-a", 3): "deferred"}
    assert "waits for testapp.household ['H001']" in first[("laptop-a", 2)].text
    assert not HouseholdMember.objects.using(nodes.server).exists()
    push(nodes)
    second = replay(nodes.server)
    assert set(outcomes(second).values()) == {"inserted"}
    visit = SubjectVisit.objects.using(nodes.server).get()
    assert visit.household_member.household.household_identifier == "H001"


def test_child_before_parent_from_another_producer_same_run(nodes):
    """laptop-a sorts first, but its member's household comes from laptop-b."""
    with producer(nodes.client, "laptop-b"):
        hh = factories.household(nodes.client, "H001")
    with producer(nodes.client, "laptop-a"):
        hm = factories.member(nodes.client, hh, "S001")
        factories.visit(nodes.client, hm)
        hm.first_name = "Kagiso"
        hm.save()
    push(nodes)
    messages = replay(nodes.server)
    assert outcomes(messages) == {("laptop-a", 1): "inserted", ("laptop-a", 2): "inserted",
                                  ("laptop-a", 3): "updated", ("laptop-b", 1): "inserted"}
    assert HouseholdMember.objects.using(nodes.server).get().first_name == "Kagiso"
    assert not IncomingTransaction.objects.using(nodes.server).filter(is_consumed=False).exists()


def test_child_waits_for_parent_from_another_producer_in_a_later_run(nodes):
    with producer(nodes.client, "laptop-b"):
        hh = factories.household(nodes.client, "H001")
    with producer(nodes.client, "laptop-a"):
        hm = factories.member(nodes.client, hh, "S001")
        hm.first_name = "Kagiso"
        hm.save()
        factories.household(nodes.client, "H002")
    push(nodes, producer="laptop-a")
    first = replay(nodes.server)
    assert outcomes(first) == {("laptop-a", 1): "deferred", ("laptop-a", 2): "deferred",
                               ("laptop-a", 3): "inserted"}
    assert first[("laptop-a", 2)].text == "waits for laptop-a#1 (same key, earlier)"
    again = replay(nodes.server)  # nothing new: still waiting, nothing else touched
    assert outcomes(again) == {("laptop-a", 1): "deferred", ("laptop-a", 2): "deferred"}
    push(nodes)
    last = replay(nodes.server)
    assert outcomes(last) == {("laptop-a", 1): "inserted", ("laptop-a", 2): "updated",
                              ("laptop-b", 1): "inserted"}
    assert HouseholdMember.objects.using(nodes.server).get().first_name == "Kagiso"
