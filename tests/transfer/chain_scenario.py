"""The field chain end to end: laptops -> middleman -> community -> FILE -> central.

Needs the extra aliases of ``tests/settings_chain.py``, so it is not collected by
a plain ``pytest``: ``tests/transfer/test_chain.py`` runs it in a pytest subprocess under
those settings.
"""

import pytest

from syncrouter import serialization as ser
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from syncrouter.registry import site_sync_models
from syncrouter.transfer.files import export_transactions, import_transactions, pending
from tests.support import factories, pg
from tests.support.checksum import rows

LAPTOPS = ("client", "pgclient") if pg.AVAILABLE else ("client",)
ALIASES = [*LAPTOPS, "middleman", "community", "central"]




def inbox(alias):
    return IncomingTransaction.objects.using(alias)


def outbox(alias):
    return OutgoingTransaction.objects.using(alias)


@pytest.fixture
def field(tmp_path):
    """Two laptops' study data carried laptop -> middleman -> community -> file -> central."""
    for alias in ALIASES:
        factories.load_symptoms(alias)
    for number, laptop in enumerate(LAPTOPS):
        factories.study(laptop, 2, 2, 1, prefix="AB"[number])

    # The middleman visits laptop 1: store, replay for its own use, forward later.
    pulled = outbox("client").filter(is_consumed_middleman=False) \
        .copy_to_incoming_transaction("middleman")
    assert pulled.copied == outbox("client").count()
    inbox("middleman").filter(is_consumed=False).deserialize(check_hostname=False)
    forwarded = inbox("middleman").filter(is_consumed_server=False) \
        .copy_to_incoming_transaction("community")
    assert forwarded == (pulled.copied, 0)

    # Laptop 2 reaches the community server directly; laptop 1 does too, later.
    for laptop in LAPTOPS:
        outbox(laptop).filter(is_consumed_server=False).copy_to_incoming_transaction("community")
    inbox("community").filter(is_consumed=False).deserialize(check_hostname=False)

    path = tmp_path / "community-to-central.zip"
    export_transactions(path, pending("community"), batch_size=7)
    import_transactions(path, "central", batch_size=5)
    import_transactions(path, "central")  # the same file carried twice
    inbox("central").filter(is_consumed=False).deserialize(check_hostname=False)
    return path


@pytest.mark.usefixtures("field")
class TestChain:
    pytestmark = pytest.mark.django_db(databases=ALIASES)

    def test_middleman_store_marks_the_middleman_flag_only(self):
        assert not outbox("client").filter(is_consumed_middleman=False).exists()
        assert set(outbox("client").values_list("consumer", flat=True)) == {"community-server"}
        assert not inbox("middleman").filter(is_consumed_server=False).exists()

    def test_each_transaction_once_with_its_identity(self):
        sent = {row.id: row for laptop in LAPTOPS for row in outbox(laptop)}
        arrived = {row.id: row for row in inbox("central")}
        assert arrived.keys() == sent.keys()
        for tx_id, row in arrived.items():
            original = sent[tx_id]
            assert (row.producer, row.sequence, row.hlc, row.tx) == (
                original.producer, original.sequence, original.hlc, original.tx)
        assert inbox("community").count() == len(sent)  # laptop 1 came by two routes
        assert not inbox("central").filter(is_consumed=False).exists()

    def test_provenance_grows_hop_by_hop(self):
        hops = {ser.dumps(ser.loads(h)) for h in inbox("central").values_list("hops", flat=True)}
        expected = {ser.dumps(["field-laptop-1", "middleman-laptop", "community-server",
                               "central-server"])}
        if pg.AVAILABLE:
            expected.add(ser.dumps(["field-laptop-pg", "community-server", "central-server"]))
        assert hops == expected

    def test_central_holds_the_union_of_the_laptops(self):
        for model in site_sync_models:
            union = sorted(row for laptop in LAPTOPS for row in rows(model, laptop))
            assert rows(model, "central") == union, model._meta.label_lower
        assert sum(len(rows(m, "central")) for m in site_sync_models) > 0
