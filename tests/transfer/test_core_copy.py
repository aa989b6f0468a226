"""Direct copy (guarantee 2): identity kept, idempotent, retry-safe, source marked."""
import pytest

from syncrouter import serialization as ser
from syncrouter.exceptions import SyncError
from syncrouter.models import IncomingTransaction, OutgoingTransaction, Refusal
from syncrouter.transfer.copy import CopyRefused
from tests.support import factories


def pending(alias):
    return OutgoingTransaction.objects.using(alias).filter(is_consumed_server=False)


def incoming(alias):
    return IncomingTransaction.objects.using(alias)


def test_copy_keeps_identity_and_marks_source(nodes):
    factories.study(nodes.client, 1, 2, 1)
    source = {r.id: r for r in OutgoingTransaction.objects.using(nodes.client)}
    result = pending(nodes.client).copy_to_incoming_transaction(nodes.server)
    assert result == (len(source), 0)
    for row in incoming(nodes.server):
        original = source[row.id]
        assert (row.producer, row.sequence, row.tx, row.hlc, row.db_transaction_id) == (
            original.producer, original.sequence, original.tx, original.hlc,
            original.db_transaction_id)
        assert ser.loads(row.hops) == [original.producer, "community-" + (
            "lite" if nodes.server == "server" else "pg")]
    marked = OutgoingTransaction.objects.using(nodes.client)
    assert not pending(nodes.client).exists()
    assert set(marked.values_list("consumer", flat=True)) == {
        "community-lite" if nodes.server == "server" else "community-pg"}
    assert not marked.filter(consumed_datetime=None).exists()
    assert not marked.filter(is_consumed_middleman=True).exists()


def test_second_copy_creates_no_duplicate(nodes):
    factories.study(nodes.client, 1, 1, 1)
    total = OutgoingTransaction.objects.using(nodes.client).count()
    pending(nodes.client).copy_to_incoming_transaction(nodes.server)
    # The source forgot it had copied (a crash between target commit and source mark).
    OutgoingTransaction.objects.using(nodes.client).update(is_consumed_server=False)
    again = pending(nodes.client).copy_to_incoming_transaction(nodes.server)
    assert again == (0, total)
    assert incoming(nodes.server).count() == total
    assert not pending(nodes.client).exists()


def test_copy_copies_and_marks_exactly_the_queryset(nodes):
    factories.study(nodes.client, 2, 1, 1)
    subset = pending(nodes.client).filter(tx_name="testapp.household")
    assert subset.copy_to_incoming_transaction(nodes.server) == (2, 0)
    assert set(incoming(nodes.server).values_list("tx_name", flat=True)) == {"testapp.household"}
    assert set(pending(nodes.client).values_list("tx_name", flat=True)) == {
        "testapp.householdmember", "testapp.subjectvisit", "testapp.crfone"}


def test_reused_sequence_refuses_the_producer_from_there_on_and_a_retry_finishes(nodes):
    """Sequence 6 meets a reused (producer, sequence) on the target: 1-5 are copied and
    marked, 6 and the producer's later rows stay pending, refused and recorded; once the
    clash is settled, the next copy copies exactly the rest and clears the record."""
    factories.study(nodes.client, 2, 2, 1)  # 2 + 4 + 4 + 4 + 4 = 18 transactions
    rows = list(OutgoingTransaction.objects.using(nodes.client).order_by("sequence"))
    clash = rows[5]
    incoming(nodes.server).create(
        tx="{}", tx_name=clash.tx_name, tx_pk="0", producer=clash.producer,
        hostname="elsewhere", sequence=clash.sequence, db_transaction_id=clash.db_transaction_id,
        hlc=0, action="I", timestamp=clash.timestamp)
    with pytest.raises(CopyRefused,
                       match=rf"{clash.producer}#{clash.sequence}: .*reused its sequence") as refused:
        pending(nodes.client).copy_to_incoming_transaction(nodes.server, batch_size=2)
    assert refused.value.result == (5, 0)
    [cause] = refused.value.refused
    assert (cause.producer, cause.sequence, cause.held_back) == (clash.producer, 6, 12)
    assert pending(nodes.client).count() == len(rows) - 5
    assert incoming(nodes.server).count() == 6
    assert list(Refusal.objects.using(nodes.client).values_list("sequence", "held_back")) == [
        (6, 12)]
    incoming(nodes.server).filter(hostname="elsewhere").delete()
    result = pending(nodes.client).copy_to_incoming_transaction(nodes.server, batch_size=2)
    assert result == (len(rows) - 5, 0)
    assert sorted(incoming(nodes.server).values_list("id", flat=True)) == sorted(
        r.id for r in rows)
    assert not Refusal.objects.using(nodes.client).exists()


def test_copy_to_same_alias_is_refused(nodes):
    with pytest.raises(SyncError, match=rf"from alias '{nodes.client}' to itself"):
        pending(nodes.client).copy_to_incoming_transaction(nodes.client)


def test_copy_reports_progress_per_batch(nodes):
    factories.study(nodes.client, 1, 1, 1)  # 5 transactions
    seen = []
    pending(nodes.client).copy_to_incoming_transaction(nodes.server, batch_size=2,
                                                       progress=seen.append)
    assert [r.copied for r in seen] == [2, 4, 5]


def test_a_large_copy_into_postgresql_refreshes_the_inbox_statistics(nodes, monkeypatch):
    """PostgreSQL's planner sees the inbox's new size at once (reltuples, set by ANALYZE),
    not whenever autovacuum gets to it; a small copy leaves the statistics alone. Other
    targets have nothing to refresh and copy as usual."""
    from django.db import connections

    from syncrouter.transfer import copy

    def planner_rows() -> float | None:
        if connections[nodes.server].vendor != "postgresql":
            return None
        with connections[nodes.server].cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s",
                           [IncomingTransaction._meta.db_table])
            return cursor.fetchone()[0]

    factories.study(nodes.client, 1, 2, 1)
    total = OutgoingTransaction.objects.using(nodes.client).count()
    monkeypatch.setattr(copy, "ANALYZE_AFTER", total + 1)
    before = planner_rows()
    pending(nodes.client).filter(sequence__lte=3).copy_to_incoming_transaction(nodes.server)
    assert planner_rows() == before
    monkeypatch.setattr(copy, "ANALYZE_AFTER", 1)
    assert pending(nodes.client).copy_to_incoming_transaction(nodes.server) == (total - 3, 0)
    if connections[nodes.server].vendor == "postgresql":
        assert planner_rows() == total
