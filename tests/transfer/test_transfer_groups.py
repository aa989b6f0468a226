"""Copy batches end on client database transaction boundaries (guarantee 2).

A group is the rows one client database transaction wrote: one producer, one
``db_transaction_id``, consecutive sequences. The target commits a batch at a
time, so a batch that ended inside a group would leave the target holding half
of it after a failure, for replay there to wait on. Crashes and network cuts
at any point are in test_copy_crash.py and test_copy_network.py.
"""
import uuid

import pytest
from django.db import connections, transaction
from django.utils import timezone

from syncrouter import conf, params
from syncrouter.exceptions import SyncError
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from syncrouter.transfer.copy import keyset_pages
from tests.support import factories
from tests.support.replay import producer

#: Rows per client database transaction; batches of 3 must take them as
#: [2 + 3], [7] (larger than a batch, alone and whole), [1 + 2].
SIZES = (2, 3, 7, 1, 2)
BATCH = 3


def write_groups(alias, sizes=SIZES, prefix="G"):
    """One household per row, each group of rows in one client database transaction."""
    for number, size in enumerate(sizes):
        with transaction.atomic(using=alias):
            for row in range(size):
                factories.household(alias, f"{prefix}{number}-{row}")


def pending(alias):
    return OutgoingTransaction.objects.using(alias).filter(is_consumed_server=False)


def groups(queryset) -> dict:
    """(producer, db_transaction_id) -> set of transaction ids."""
    found = {}
    for producer_name, db_txid, id_ in queryset.values_list(
            "producer", "db_transaction_id", "id"):
        found.setdefault((producer_name, db_txid), set()).add(id_)
    return found


def assert_whole_groups(source: dict, target):
    """Each group of ``source`` (from ``groups()``) is on ``target`` whole or not at all."""
    there = set(target.values_list("id", flat=True))
    split = {key: len(ids & there) for key, ids in source.items()
             if ids & there and not ids <= there}
    assert not split, f"groups only partly on the target: {split}"


def copy_in_batches(source, alias):
    """Copy ``source`` to ``alias`` in batches of ``BATCH``; the size of each batch.

    After each batch, the target must hold whole groups of what ``source`` holds.
    """
    sent, totals = groups(source), []

    def check(result):
        totals.append(result.copied)
        assert_whole_groups(sent, IncomingTransaction.objects.using(alias))

    source.copy_to_incoming_transaction(alias, batch_size=BATCH, progress=check)
    return [b - a for a, b in zip([0] + totals, totals)]


def test_written_groups_are_the_groups_under_test(nodes):
    write_groups(nodes.client)
    assert sorted(map(len, groups(pending(nodes.client)).values())) == sorted(SIZES)


def test_batches_end_on_group_boundaries(nodes):
    write_groups(nodes.client)
    assert copy_in_batches(pending(nodes.client), nodes.server) == [5, 7, 3]
    assert IncomingTransaction.objects.using(nodes.server).count() == sum(SIZES)
    assert not pending(nodes.client).exists()


def test_forward_from_an_inbox_keeps_groups_whole(nodes):
    """A middle node's forward copies from its inbox: the same batches."""
    write_groups(nodes.client)
    pending(nodes.client).copy_to_incoming_transaction(nodes.server)
    unforwarded = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed_server=False)
    assert copy_in_batches(unforwarded, nodes.client) == [5, 7, 3]
    assert IncomingTransaction.objects.using(nodes.client).count() == sum(SIZES)


def test_rows_left_out_by_the_queryset_do_not_cut_a_group(nodes):
    write_groups(nodes.client)
    second_row_of_group_2 = pending(nodes.client).order_by("sequence")[3]
    pending(nodes.client).filter(id=second_row_of_group_2.id).update(is_consumed_server=True)
    assert copy_in_batches(pending(nodes.client), nodes.server) == [4, 7, 3]


def test_failed_batch_leaves_no_part_of_a_group(nodes):
    """The middle group's batch meets a reused sequence: the groups before it are copied
    whole, and nothing of the refused group is there."""
    write_groups(nodes.client)
    rows = list(OutgoingTransaction.objects.using(nodes.client).order_by("sequence"))
    clash = rows[7]  # third row of the group of 7
    inbox = IncomingTransaction.objects.using(nodes.server)
    inbox.create(tx="{}", tx_name=clash.tx_name, tx_pk="0", producer=clash.producer,
                 hostname="elsewhere", sequence=clash.sequence,
                 db_transaction_id=clash.db_transaction_id, hlc=0, action="I",
                 timestamp=clash.timestamp)
    with pytest.raises(SyncError, match="reused its sequence"):
        pending(nodes.client).copy_to_incoming_transaction(nodes.server, batch_size=BATCH)
    copied = set(inbox.exclude(hostname="elsewhere").values_list("sequence", flat=True))
    assert copied == {1, 2, 3, 4, 5}
    assert set(pending(nodes.client).values_list("sequence", flat=True)) == set(range(6, 16))


def test_group_too_large_for_one_statement_copies_whole(nodes, monkeypatch):
    """1,200 rows of one client database transaction make one batch, more ids than
    the oldest SQLite builds let one statement take (999, Django's figure, made the
    limit here): no statement names more."""
    monkeypatch.setattr(params, "max_params",
                        lambda connection: connection.features.max_query_params or 60000)
    name, db_txid, now = conf.node_for_alias(nodes.client).name, uuid.uuid4(), timezone.now()
    OutgoingTransaction.objects.using(nodes.client).bulk_create([
        OutgoingTransaction(tx="{}", tx_name="testapp.household", tx_pk=str(sequence),
                            producer=name, hostname="test", sequence=sequence,
                            db_transaction_id=db_txid, hlc=sequence, action="I", timestamp=now)
        for sequence in range(1, 1201)])
    most_params = {nodes.client: 0, nodes.server: 0}

    def count(execute, sql, params, many, context):
        alias = context["connection"].alias
        most_params[alias] = max(most_params[alias], 0 if many else len(params or ()))
        return execute(sql, params, many, context)

    with connections[nodes.client].execute_wrapper(count), \
            connections[nodes.server].execute_wrapper(count):
        assert copy_in_batches(pending(nodes.client), nodes.server) == [1200]
    for alias, most in most_params.items():
        assert most <= (connections[alias].features.max_query_params or most), alias


def test_keyset_pages_cut_at_size_unless_asked_for_whole_groups(nodes):
    write_groups(nodes.client)
    rows = OutgoingTransaction.objects.using(nodes.client)
    assert [len(page) for page in keyset_pages(rows, BATCH)] == [3, 3, 3, 3, 3]
    assert [len(page) for page in keyset_pages(rows, BATCH, whole_groups=True)] == [5, 7, 3]


def test_keyset_pages_cross_producers_in_order_while_rows_are_marked(nodes):
    """Pages run over the end of one producer into the next, and marking each page
    as it is read (what a copy does) neither skips nor repeats a row."""
    for name in ("laptop-c", "laptop-a", "laptop-b"):
        with producer(nodes.client, name):
            write_groups(nodes.client, sizes=(1, 1, 2), prefix=name)
    seen = []
    for page in keyset_pages(pending(nodes.client), 5):
        seen += [(row.producer, row.sequence) for row in page]
        pending(nodes.client).filter(id__in=[row.id for row in page]).update(
            is_consumed_server=True)
    assert seen == [(name, sequence) for name in ("laptop-a", "laptop-b", "laptop-c")
                    for sequence in (1, 2, 3, 4)]
