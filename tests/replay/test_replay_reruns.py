"""Re-runs: the same incoming rows replayed again, in any order or overlap, change nothing."""
import random

from syncrouter.models import Conflict, IncomingTransaction
from syncrouter.state import replaying
from tests.support import factories
from tests.support.checksum import node_checksums
from tests.support.replay import TRANSACTIONAL, outcomes, producer, push, replay
from tests.testapp.models import CrfOne, Household, HouseholdMember, SubjectVisit, Symptom

pytestmark = TRANSACTIONAL


def _history(alias, rename: bool = True) -> None:
    """Two producers: inserts, updates, M2M adds and removes, deletes, a renamed key."""
    with producer(alias, "laptop-a"):
        factories.study(alias, households=2, members=2, visits=2, prefix="A")
        hh = Household.objects.using(alias).get(household_identifier="A000")
        hh.village = "Mochudi"
        hh.save()
        crf = CrfOne.objects.using(alias).order_by("subject_visit__visit_code", "id").first()
        crf.weight_kg = 70
        crf.save()
        crf.symptoms.remove(Symptom.objects.using(alias).get(name="cough"))
        crf.symptoms.add(Symptom.objects.using(alias).get(name="rash"))
        CrfOne.objects.using(alias).exclude(pk=crf.pk).first().delete()
        if rename:
            member = HouseholdMember.objects.using(alias).get(subject_identifier="A001-01")
            member.subject_identifier = "A001-09"
            member.save()
    with producer(alias, "laptop-b"):
        member = factories.member(alias, hh, "B-in-A000")
        factories.crf(alias, factories.visit(alias, member))
        member.first_name = "Later"
        member.save()


def _fresh_copy(alias, rows) -> None:
    IncomingTransaction.objects.using(alias).bulk_create([
        IncomingTransaction(**{f.attname: getattr(row, f.attname)
                               for f in IncomingTransaction._meta.concrete_fields},
                            ) for row in rows])
    IncomingTransaction.objects.using(alias).filter(id__in=[r.id for r in rows]).update(
        is_consumed=False, is_deferred=False, is_error=False, error="", consumer="",
        consumed_datetime=None)


def _wipe(alias) -> None:
    with replaying(alias):
        for model in (CrfOne, SubjectVisit, HouseholdMember, Household):
            model.objects.using(alias).all().delete()
    Conflict.objects.using(alias).all().delete()
    IncomingTransaction.objects.using(alias).all().delete()


def test_server_matches_client_and_full_replay_again_changes_nothing(nodes):
    """With every mark reset nothing says which changes are old: a parent renamed later
    leaves earlier rows naming its old key waiting (see the overlap test for renames)."""
    _history(nodes.client, rename=False)
    push(nodes)
    first = replay(nodes.server)
    # Every change applies in its producer's order, the CRF deleted later included: it is
    # inserted, then deleted (a later delete no longer makes its insert "superseded").
    assert set(outcomes(first).values()) == {"inserted", "updated", "deleted"}, first
    expected = node_checksums(nodes.client)
    assert node_checksums(nodes.server) == expected

    IncomingTransaction.objects.using(nodes.server).update(is_consumed=False)
    again = replay(nodes.server, batch_size=7)
    changed = [str(m) for m in again.values() if m.outcome != "skipped"]
    # With every mark reset nothing says which changes are old: the CRF deleted later is
    # inserted and deleted again, an M2M add runs again before the remove that follows it.
    deleted_crf = {str(m.key) for m in again.values() if m.action == "D"}
    assert all(("symptoms." in m.text and m.outcome == "updated") or str(m.key) in deleted_crf
               for m in again.values() if m.outcome != "skipped"), changed
    assert node_checksums(nodes.server) == expected
    assert not Conflict.objects.using(nodes.server).exists()


def test_overlapping_partial_replays_change_nothing(nodes):
    _history(nodes.client)
    push(nodes)
    replay(nodes.server)
    expected = node_checksums(nodes.server)
    rows = list(IncomingTransaction.objects.using(nodes.server).order_by(
        "producer", "sequence").values_list("id", flat=True))
    for subset in (rows[0::3], rows[1::2], rows[:len(rows) // 2], rows[-3:]):
        IncomingTransaction.objects.using(nodes.server).filter(id__in=subset).update(
            is_consumed=False)
        messages = replay(nodes.server, batch_size=5)
        assert set(outcomes(messages).values()) == {"skipped"}, [
            str(m) for m in messages.values() if m.outcome != "skipped"]
        assert node_checksums(nodes.server) == expected
    assert not Conflict.objects.using(nodes.server).exists()


def test_rows_arriving_in_any_order_end_the_same(nodes):
    """A second server receives the rows in shuffled chunks and replays after each one."""
    _history(nodes.client)
    push(nodes)
    replay(nodes.server)
    expected = node_checksums(nodes.client)
    rows = list(IncomingTransaction.objects.using(nodes.server).order_by("producer", "sequence"))
    for seed in (1, 2):
        _wipe(nodes.server)
        chunks = [rows[i:i + 6] for i in range(0, len(rows), 6)]
        random.Random(seed).shuffle(chunks)
        for chunk in chunks:
            _fresh_copy(nodes.server, chunk)
            replay(nodes.server, batch_size=4)
        waiting = IncomingTransaction.objects.using(nodes.server).filter(is_consumed=False)
        assert not waiting.exists(), [f"{r}: {r.error}" for r in waiting]
        assert node_checksums(nodes.server) == expected, seed
        assert not Conflict.objects.using(nodes.server).exists()
