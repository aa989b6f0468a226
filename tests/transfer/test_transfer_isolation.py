"""A refused row stops only itself (issue 15, items 4 and 5).

What the target cannot take (a value too long for a column, a NUL in PostgreSQL
text, an index entry over PostgreSQL's limit, a (producer, sequence) it holds
under another id) is left pending with the rest of its producer database
transaction, and after a sequence clash with that producer's later rows;
everything else is copied and marked. The refusal is recorded on the source
(``Refusal``), raised as ``CopyRefused`` naming producer and sequence, shown by
``status``, and tried again by every later copy.
"""
import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings, strategies as st

from syncrouter import conf
from syncrouter.models import IncomingTransaction, OutgoingTransaction, Refusal
from syncrouter.status import node_status
from syncrouter.transfer.copy import CopyRefused
from tests.edgeapp.models import LongKeyItem
from tests.support import factories, pg
from tests.support.factories import incompressible
from tests.support.replay import producer, replay


def outbox(alias):
    return OutgoingTransaction.objects.using(alias)


def inbox(alias):
    return IncomingTransaction.objects.using(alias)


def push(alias, target, **kwargs):
    return outbox(alias).filter(is_consumed_server=False).copy_to_incoming_transaction(
        target, **kwargs)


@pytest.fixture(params=["server", "pgserver"])
def laptop_to(request):
    """A SQLite field laptop (which enforces no column length) and a server of each kind."""
    if request.param == "pgserver" and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    factories.load_symptoms("client")
    factories.load_symptoms(request.param)
    return request.param


def test_primary_keys_longer_than_64_characters_copy_and_replay(nodes):
    """tx_pk held 64 characters: a longer key made the copy to PostgreSQL fail with a
    raw DataError (and capture on a PostgreSQL laptop), and none of the laptop's rows
    were ever copied."""
    codes = ["K" * 65, "L" * 255, "M" * 2000]
    for code in codes:
        LongKeyItem.objects.using(nodes.client).create(code=code, label="ok")
    factories.household(nodes.client)
    assert push(nodes.client, nodes.server) == (4, 0)
    assert sorted(map(len, inbox(nodes.server).values_list("tx_pk", flat=True))) == [
        36, 65, 255, 2000]
    messages = replay(nodes.server)
    assert {m.outcome for m in messages.values()} == {"inserted"}
    assert sorted(LongKeyItem.objects.using(nodes.server).values_list("code", flat=True)) == codes


def test_a_value_the_target_cannot_hold_refuses_only_its_transaction(laptop_to):
    """A key beyond PostgreSQL's index entry limit (the database refuses it: found by
    writing each producer database transaction alone) and a NUL character (PostgreSQL
    text cannot hold one: found before writing). A SQLite server takes both."""
    server = laptop_to
    factories.household("client", "H1")
    LongKeyItem.objects.using("client").create(code=incompressible(6000), label="huge")
    factories.household("client", "H2")
    LongKeyItem.objects.using("client").create(code="nul\x00key", label="nul")
    factories.household("client", "H3")
    name = conf.node_for_alias("client").name
    if server == "server":
        assert push("client", server) == (5, 0)
        return
    with pytest.raises(CopyRefused) as refused:
        push("client", server, batch_size=2)
    assert refused.value.result == (3, 0)
    assert [(c.producer, c.sequence) for c in refused.value.refused] == [(name, 2), (name, 4)]
    assert "index row" in refused.value.refused[0].reason  # PostgreSQL's own words
    assert "NUL character" in refused.value.refused[1].reason
    assert f"{name}#2: community-pg refused it" in str(refused.value)
    assert sorted(inbox(server).values_list("sequence", flat=True)) == [1, 3, 5]
    assert sorted(outbox("client").filter(is_consumed_server=False)
                  .values_list("sequence", flat=True)) == [2, 4]
    assert [(r.producer, r.sequence, r.target) for r in node_status("client").refused] == [
        (name, 2, "community-pg"), (name, 4, "community-pg")]


def test_tx_name_too_long_is_refused_with_its_database_transaction_everywhere(laptop_to):
    """A model label longer than the inbox's column: a SQLite server would store it and
    the next hop refuse it, so every target refuses it, with the rest of its transaction."""
    name = conf.node_for_alias("client").name
    now, group = timezone.now(), uuid.uuid4()
    outbox("client").bulk_create([
        OutgoingTransaction(tx="{}", tx_name=label, tx_pk="1", producer=name, hostname="h",
                            sequence=sequence, db_transaction_id=txid, hlc=sequence,
                            action="I", timestamp=now, hops=f'["{name}"]')
        for sequence, label, txid in [(1, "a.b", uuid.uuid4()), (2, "a.b", group),
                                      (3, "a." + "x" * 300, group), (4, "a.b", uuid.uuid4())]])
    with pytest.raises(CopyRefused, match=rf"{name}#3: tx_name is 302 characters long; the "
                                          r"inbox column holds 255 \(1 more held back"):
        push("client", laptop_to)
    assert sorted(inbox(laptop_to).values_list("sequence", flat=True)) == [1, 4]


@pytest.mark.usefixtures("lite")
def test_a_refusal_is_retried_visibly_until_it_goes_through():
    """Refused rows stay pending; each copy tries them again, exits 4 and updates the
    record (never a second one); once the cause is gone they go and the record with them."""
    factories.study("client", 1, 1, 1)  # sequences 1-5
    clash = outbox("client").get(sequence=3)
    inbox("server").create(tx="{}", tx_name=clash.tx_name, tx_pk="0", producer=clash.producer,
                           hostname="elsewhere", sequence=3, db_transaction_id=uuid.uuid4(),
                           hlc=0, action="I", timestamp=clash.timestamp)
    code, out = run("push")
    assert code == 4 and "client -> server: 2 copied, 0 already there." in out
    assert f"{clash.producer}#3: 'server' already holds {clash.producer}#3" in out
    assert "reused its sequence" in out and "(2 more held back behind it)" in out
    first = Refusal.objects.using("client").get()
    code, out = run("status")
    assert code == 4 and "refused by the next hop" in out
    assert f"{clash.producer}#3: 'server' already holds" in out
    code, out = run("push")
    assert code == 4 and "0 copied, 0 already there" in out
    again = Refusal.objects.using("client").get()
    assert (again.pk, again.first_refused, again.held_back) == (first.pk, first.first_refused, 2)
    assert again.last_refused > first.last_refused
    inbox("server").filter(hostname="elsewhere").delete()  # the clash settled on the server
    assert run("push")[0] == 0
    assert run("status")[0] == 0
    assert not Refusal.objects.using("client").exists()
    assert inbox("server").count() == 5


@pytest.fixture
def lite():
    factories.load_symptoms("client")
    factories.load_symptoms("server")


def run(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("syncrouter", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


LAPTOPS = [f"laptop-{n}" for n in range(7)]


def test_one_producers_clash_stops_no_other_producer(nodes):
    """Seven laptops' rows travel in one copy; the server already holds laptop-3#2 under
    another id. Laptop-3 is refused from #2 on; the six others all go (before: 0 of 6)."""
    for name in LAPTOPS:
        with producer(nodes.client, name):
            factories.household(nodes.client, f"{name}-a")
            factories.household(nodes.client, f"{name}-b")
            factories.household(nodes.client, f"{name}-c")
    clash = outbox(nodes.client).get(producer="laptop-3", sequence=2)
    inbox(nodes.server).create(
        tx="{}", tx_name=clash.tx_name, tx_pk="0", producer="laptop-3", hostname="elsewhere",
        sequence=2, db_transaction_id=uuid.uuid4(), hlc=0, action="I",
        timestamp=clash.timestamp)
    with pytest.raises(CopyRefused) as refused:
        push(nodes.client, nodes.server, batch_size=4)
    assert refused.value.result == (19, 0)
    [cause] = refused.value.refused
    assert (cause.producer, cause.sequence, cause.held_back) == ("laptop-3", 2, 1)
    copied = set(inbox(nodes.server).exclude(hostname="elsewhere")
                 .values_list("producer", "sequence"))
    assert copied == {(name, s) for name in LAPTOPS for s in (1, 2, 3)} - {
        ("laptop-3", 2), ("laptop-3", 3)}
    assert set(outbox(nodes.client).filter(is_consumed_server=False)
               .values_list("producer", "sequence")) == {("laptop-3", 2), ("laptop-3", 3)}


@pytest.mark.skipif(not pg.AVAILABLE, reason=pg.REASON or "")
def test_a_community_node_forwards_every_other_producer(lite):
    """The finding itself: a community node forwarding its inbox (six laptops and one
    that was restored from a backup) to the next server."""
    for name in LAPTOPS:
        with producer("client", name):
            factories.household("client", f"{name}-a")
    assert push("client", "server") == (7, 0)
    inbox("pgserver").create(tx="{}", tx_name="testapp.household", tx_pk="0",
                             producer="laptop-5", hostname="elsewhere", sequence=1,
                             db_transaction_id=uuid.uuid4(), hlc=0, action="I",
                             timestamp=timezone.now())
    code, out = run("push", "--source", "server", "--target", "pgserver")
    assert code == 4 and "6 copied" in out and "laptop-5#1: 'pgserver' already holds" in out
    assert set(inbox("pgserver").exclude(hostname="elsewhere").values_list(
        "producer", flat=True)) == set(LAPTOPS) - {"laptop-5"}
    assert list(inbox("server").filter(is_consumed_server=False).values_list(
        "producer", flat=True)) == ["laptop-5"]
    code, out = run("status", "--alias", "server")
    assert code == 4 and "laptop-5#1: 'pgserver' already holds laptop-5#1" in out


# ---------------------------------------------------------------- generated cases

ROW_KINDS = ["ok"] * 6 + ["long_name", "nul", "huge_key"]


def refused_by(kind: str, vendor: str) -> bool:
    return kind == "long_name" or (kind in ("nul", "huge_key") and vendor == "postgresql")


def _row(name: str, sequence: int, txid, kind: str) -> OutgoingTransaction:
    tx_pk = {"nul": "a\x00b", "huge_key": incompressible(6000)}.get(kind, str(sequence))
    return OutgoingTransaction(
        tx="{}", tx_name="a." + "x" * 300 if kind == "long_name" else "testapp.household",
        tx_pk=tx_pk, producer=name, hostname="h", sequence=sequence, db_transaction_id=txid,
        hlc=sequence, action="I", timestamp=timezone.now(), hops=f'["{name}"]')


@st.composite
def histories(draw):
    """Producers' outboxes as groups of rows of each kind, clashes the target holds, and
    a batch size."""
    names = draw(st.lists(st.sampled_from(["lap-a", "lap-b", "lap-c"]), min_size=1,
                          max_size=3, unique=True))
    groups = {name: draw(st.lists(st.lists(st.sampled_from(ROW_KINDS), min_size=1,
                                           max_size=3), min_size=1, max_size=4))
              for name in names}
    clashes = draw(st.dictionaries(st.sampled_from(names), st.integers(1, 8), max_size=2))
    return groups, clashes, draw(st.integers(1, 5))


@given(histories())
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_refusals_stop_exactly_what_they_must(nodes, history):
    """Whatever the mix: the target ends with exactly the rows that are neither refused,
    nor in a refused row's database transaction, nor after their producer's clash; the
    source marks exactly those; every refused row is a recorded cause or held back by
    one; and a second copy refuses the same again, and copies nothing twice."""
    groups, clashes, batch_size = history
    for alias in (nodes.client, nodes.server):
        for model in (OutgoingTransaction, IncomingTransaction, Refusal):
            model.objects.using(alias).all().delete()
    vendor = connections[nodes.server].vendor
    # A PostgreSQL laptop cannot hold these in the first place.
    storable = ({"nul": "ok", "long_name": "ok"}
                if connections[nodes.client].vendor == "postgresql" else {})
    rows, expected = [], set()
    for name, history_groups in groups.items():
        sequence, clashed = 0, False
        for kinds in history_groups:
            kinds = [storable.get(kind, kind) for kind in kinds]
            txid = uuid.uuid4()
            group = []
            for kind in kinds:
                sequence += 1
                group.append(_row(name, sequence, txid, kind))
            clashed = clashed or any(row.sequence == clashes.get(name) for row in group)
            if not clashed and not any(refused_by(k, vendor) for k in kinds):
                expected.update((name, row.sequence) for row in group)
            rows += group
    outbox(nodes.client).bulk_create(rows)
    held = {(name, s) for name, s in clashes.items()
            if s <= sum(map(len, groups[name]))}
    inbox(nodes.server).bulk_create([
        IncomingTransaction(tx="{}", tx_name="x.y", tx_pk="0", producer=name, hostname="held",
                            sequence=s, db_transaction_id=uuid.uuid4(), hlc=0, action="I",
                            timestamp=timezone.now()) for name, s in held])

    for attempt in (1, 2):
        try:
            result = push(nodes.client, nodes.server, batch_size=batch_size)
            causes = []
        except CopyRefused as refused:
            result, causes = refused.result, refused.refused
        copied = set(inbox(nodes.server).exclude(hostname="held")
                     .values_list("producer", "sequence"))
        assert copied == expected
        assert result.copied == (len(expected) if attempt == 1 else 0)
        sent = set(outbox(nodes.client).filter(is_consumed_server=True)
                   .values_list("producer", "sequence"))
        assert sent == expected
        refused_rows = len(rows) - len(expected)
        assert bool(causes) == bool(refused_rows)
        assert len(causes) + sum(cause.held_back for cause in causes) == refused_rows
        assert {(c.producer, c.sequence) for c in causes} == set(
            Refusal.objects.using(nodes.client).values_list("producer", "sequence"))
        assert not {(c.producer, c.sequence) for c in causes} & expected
