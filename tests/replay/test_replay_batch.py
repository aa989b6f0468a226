"""The batched fast path: same results as row by row, a few queries per batch, signals."""
import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from syncrouter import serialization as ser
from syncrouter.models import Conflict, IncomingTransaction
from syncrouter.replay import natural
from syncrouter.replay.messages import ReplayLog
from syncrouter.signals import post_replay, pre_replay
from syncrouter.state import replaying
from tests.support import factories
from tests.support.checksum import node_checksums
from tests.support.replay import TRANSACTIONAL, outcomes, producer, push, replay
from tests.testapp.models import CrfOne, Household, HouseholdMember, SubjectVisit

pytestmark = TRANSACTIONAL


def _visits_on_both(nodes, count: int) -> list:
    """Visits present on client and server (replayed), and their CRFs captured on the client."""
    hh = factories.household(nodes.client, "H001")
    visits = [factories.visit(nodes.client, factories.member(nodes.client, hh, f"S{n:03d}"))
              for n in range(count)]
    push(nodes)
    replay(nodes.server)
    for visit in visits:
        CrfOne.objects.using(nodes.client).create(
            subject_visit=visit, report_datetime=visit.report_datetime, weight_kg=60 + len(
                visit.household_member.subject_identifier), comments="batched",
            main_symptom=factories.Symptom.objects.using(nodes.client).get(name="fever"))
    push(nodes)
    return visits


def test_natural_key_lookups_come_from_the_key_itself():
    assert natural.lookups(CrfOne) == ("subject_visit__household_member__subject_identifier",
                                       "subject_visit__visit_code")
    from django.contrib.auth.models import User

    assert natural.lookups(User) is None  # get_username(): found one at a time


def test_new_rows_replay_in_a_few_queries_and_match_the_client(nodes):
    _visits_on_both(nodes, 40)
    with CaptureQueriesContext(connections[nodes.server]) as queries:
        messages = replay(nodes.server, batch_size=20)
    assert set(outcomes(messages).values()) == {"inserted"} and len(messages) == 40
    # per batch of 20: page, pks, keys, parents (2 FKs), superseded, insert, consume (+savepoints)
    assert len(queries) < 40, [q["sql"][:80] for q in queries]
    assert node_checksums(nodes.server) == node_checksums(nodes.client)
    assert not IncomingTransaction.objects.using(nodes.server).filter(is_consumed=False).exists()


def test_rows_that_are_not_plain_leave_the_batch_and_replay_one_by_one(nodes):
    """An existing key (conflict), a missing parent (deferred): the rest are batched."""
    visits = _visits_on_both(nodes, 6)
    CrfOne.objects.using(nodes.server).create(  # another row under visit 0's key
        subject_visit=SubjectVisit.objects.using(nodes.server).get(pk=visits[0].pk),
        report_datetime=visits[0].report_datetime)
    with replaying(nodes.server):  # a parent gone here, out of band
        SubjectVisit.objects.using(nodes.server).filter(pk=visits[5].pk).delete()
    messages = replay(nodes.server)
    by_key = {m.key[0]: m.outcome for m in messages.values()}
    assert by_key == {"S000": "conflict", "S001": "inserted", "S002": "inserted",
                      "S003": "inserted", "S004": "inserted", "S005": "deferred"}
    assert Conflict.objects.using(nodes.server).get().model == "testapp.crfone"
    assert CrfOne.objects.using(nodes.server).filter(comments="batched").count() == 4


def test_replay_signals_carry_the_model_and_rows(nodes, monkeypatch):
    seen = []

    def receiver(signal, sender, alias, instances, transactions, **kwargs):
        assert len(instances) == len(transactions)
        in_atomic = connections[alias].in_atomic_block
        seen.append((signal is pre_replay, sender, len(instances), in_atomic))

    pre_replay.connect(receiver)
    post_replay.connect(receiver)
    try:
        _visits_on_both(nodes, 3)  # 1 household, 3 members, 3 visits: batches of one model
        seen.clear()
        replay(nodes.server)
        assert seen == [(True, CrfOne, 3, True), (False, CrfOne, 3, True)]

        seen.clear()
        monkeypatch.setattr(Household, "sync_replay_save", True, raising=False)
        with producer(nodes.client, "laptop-b"):
            factories.household(nodes.client, "H900")
            factories.household(nodes.client, "H901")
        push(nodes)
        replay(nodes.server)
        assert seen == [(True, Household, 1, True), (False, Household, 1, True)] * 2
    finally:
        pre_replay.disconnect(receiver)
        post_replay.disconnect(receiver)


def test_a_failing_receiver_rolls_back_and_reports_errors(nodes):
    def refuse(sender, instances, **kwargs):
        raise RuntimeError(f"refused {len(instances)}")

    _visits_on_both(nodes, 2)
    post_replay.connect(refuse, sender=CrfOne)
    try:
        messages = replay(nodes.server)
    finally:
        post_replay.disconnect(refuse, sender=CrfOne)
    assert {m.outcome for m in messages.values()} == {"error"}
    assert all("RuntimeError: refused 1" in m.text for m in messages.values())
    assert not CrfOne.objects.using(nodes.server).exists()


def test_a_group_of_new_rows_is_batched_whole(nodes):
    with producer(nodes.client, "laptop-a"):
        with transaction.atomic(using=nodes.client):
            hh = factories.household(nodes.client, "H001")
            for n in range(3):
                factories.member(nodes.client, hh, f"S{n:03d}")
    push(nodes)
    messages = replay(nodes.server)
    assert set(outcomes(messages).values()) == {"inserted"}
    assert HouseholdMember.objects.using(nodes.server).count() == 3


def _edit_crfs(nodes, **changes) -> list:
    """Save every CRF on the client with ``changes`` (one client transaction each)."""
    crfs = list(CrfOne.objects.using(nodes.client).order_by("pk"))
    for crf in crfs:
        for name, value in changes.items():
            setattr(crf, name, value)
        crf.save(using=nodes.client)
    push(nodes)
    return crfs


def test_updates_replay_in_a_few_queries_and_match_the_client(nodes):
    _visits_on_both(nodes, 40)
    replay(nodes.server)
    _edit_crfs(nodes, comments="edited in the field", weight_kg=70)
    with CaptureQueriesContext(connections[nodes.server]) as queries:
        messages = replay(nodes.server, batch_size=20)
    assert set(outcomes(messages).values()) == {"updated"} and len(messages) == 40
    # per batch of 20: page, rows, keys, parents (2 FKs, after and before), superseded,
    # update, consume (+savepoints); row by row took 10 or more per row
    assert len(queries) < 40, [q["sql"][:80] for q in queries]
    assert node_checksums(nodes.server) == node_checksums(nodes.client)


def test_an_update_that_meets_a_change_made_here_leaves_the_batch_as_a_conflict(nodes):
    _visits_on_both(nodes, 5)
    replay(nodes.server)
    corrected = CrfOne.objects.using(nodes.server).order_by("pk")[2]
    corrected.comments = "corrected on the server"
    corrected.save(using=nodes.server)
    crfs = _edit_crfs(nodes, comments="edited in the field")
    messages = replay(nodes.server)
    by_pk = {m.key[0]: m.outcome for m in messages.values()}
    assert sorted(by_pk.values()) == ["conflict", "updated", "updated", "updated", "updated"]
    conflict = Conflict.objects.using(nodes.server).get()
    assert (conflict.model, conflict.resolution) == ("testapp.crfone", "pending")
    assert ser.loads(conflict.current)["comments"] == "corrected on the server"
    assert CrfOne.objects.using(nodes.server).get(pk=corrected.pk).comments == (
        "corrected on the server")  # manual policy: held, nothing overwritten
    assert CrfOne.objects.using(nodes.server).filter(
        comments="edited in the field").count() == len(crfs) - 1


def test_a_held_row_keeps_later_rows_of_its_producer_that_depend_on_it_waiting(nodes):
    """Guarantee 5 across batches: the household update is held (a conflict), so the
    member the same laptop added to that household afterwards waits behind it, although
    the member on its own could have been inserted in a batch."""
    hh = factories.household(nodes.client, "H001")
    push(nodes)
    replay(nodes.server)
    server_hh = Household.objects.using(nodes.server).get()
    server_hh.village = "Changed here"
    server_hh.save(using=nodes.server)
    hh.village = "Changed in the field"
    hh.save(using=nodes.client)
    factories.member(nodes.client, hh, "S001")
    push(nodes)
    messages = replay(nodes.server)
    assert [m.outcome for m in sorted(messages.values(), key=lambda m: m.sequence)] == [
        "conflict", "deferred"]
    member = max(messages.values(), key=lambda m: m.sequence)
    assert member.text == f"waits for {member.producer}#{member.sequence - 1} (same key, earlier)"
    assert not HouseholdMember.objects.using(nodes.server).exists()


def test_a_receiver_may_change_what_the_batch_writes(nodes):
    def stamp(sender, instances, **kwargs):
        for obj in instances:
            obj.comments = f"{obj.comments} (seen by receiver)"

    _visits_on_both(nodes, 3)
    replay(nodes.server)
    _edit_crfs(nodes, comments="edited")
    pre_replay.connect(stamp, sender=CrfOne)
    try:
        messages = replay(nodes.server)
    finally:
        pre_replay.disconnect(stamp, sender=CrfOne)
    assert set(outcomes(messages).values()) == {"updated"}
    assert set(CrfOne.objects.using(nodes.server).values_list("comments", flat=True)) == {
        "edited (seen by receiver)"}


def _corrupt(alias: str, sequence_index: int, change) -> IncomingTransaction:
    """Change the payload of the ``sequence_index``-th pending CRF transaction on ``alias``."""
    row = IncomingTransaction.objects.using(alias).filter(
        is_consumed=False, tx_name="testapp.crfone").order_by("sequence")[sequence_index]
    payload = ser.loads(row.tx)
    change(payload)
    row.tx = ser.dumps(payload)
    row.save(using=alias, update_fields=["tx"])
    return row


def _bad_pk(payload):
    payload["pk"] = payload["fields"]["id"] = "not-a-uuid"


def _short_key(payload):
    payload["nk"] = payload["nk"][:1]


@pytest.mark.parametrize("change", [_bad_pk, _short_key], ids=["bad-pk", "short-natural-key"])
def test_a_key_that_cannot_be_looked_up_fails_only_its_own_row(nodes, change):
    """The batch lookups cannot read "not found" into a key they could not look up: the
    batch goes row by row, the bad row is an error, the others are inserted."""
    _visits_on_both(nodes, 4)
    bad = _corrupt(nodes.server, 1, change)
    messages = replay(nodes.server)
    crfs = {key: m for key, m in messages.items() if m.model == "testapp.crfone"}
    assert crfs[(bad.producer, bad.sequence)].outcome == "error"
    assert sorted(m.outcome for m in crfs.values()) == ["error", "inserted", "inserted",
                                                       "inserted"]
    assert CrfOne.objects.using(nodes.server).count() == 3


def test_deserialize_returns_a_replay_log_with_counts(nodes):
    _visits_on_both(nodes, 3)
    messages = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False)
    assert isinstance(messages, ReplayLog)
    assert messages.counts == {"inserted": 3}
    assert [m.outcome for m in messages] == ["inserted"] * 3 and messages[-1].model == (
        "testapp.crfone")


def test_deletes_replay_in_a_few_queries_and_match_the_client(nodes):
    _visits_on_both(nodes, 40)
    replay(nodes.server)
    for crf in CrfOne.objects.using(nodes.client).all():
        crf.delete()  # one client transaction each
    push(nodes)
    with CaptureQueriesContext(connections[nodes.server]) as queries:
        messages = replay(nodes.server, batch_size=20)
    crfs = [m for m in messages.values() if m.model == "testapp.crfone"]
    assert {m.outcome for m in crfs} == {"deleted"} and len(crfs) == 40
    assert len(queries) < 60, [q["sql"][:80] for q in queries]  # row by row: 10 per row
    assert not CrfOne.objects.using(nodes.server).exists()
    assert node_checksums(nodes.server) == node_checksums(nodes.client)


def test_a_delete_refused_here_waits_alone_and_the_others_apply(nodes):
    """The server added a member to H002, which protects it: that delete waits (nothing
    deleted), and H001 and H003, batched with it, still go."""
    households = [factories.household(nodes.client, f"H00{n}") for n in (1, 2, 3)]
    push(nodes)
    replay(nodes.server)
    factories.member(nodes.server, Household.objects.using(nodes.server).get(
        household_identifier="H002"), "S900")
    for hh in households:
        hh.delete()
    push(nodes)
    messages = replay(nodes.server)
    assert {m.key[0]: m.outcome for m in messages.values()} == {
        "H001": "deleted", "H002": "deferred", "H003": "deleted"}
    assert "testapp.householdmember" in next(
        m.text for m in messages.values() if m.key[0] == "H002")
    assert list(Household.objects.using(nodes.server).values_list(
        "household_identifier", flat=True)) == ["H002"]
    assert HouseholdMember.objects.using(nodes.server).count() == 1
