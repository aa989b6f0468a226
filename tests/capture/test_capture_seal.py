"""Capture without a hot row (issue 15, item 1): unsealed rows on PostgreSQL, the seal.

On PostgreSQL a captured write no longer takes its producer's clock row; the seal
(``syncrouter.capture.seal``) numbers committed rows later. These tests hold it to
what the numbering promised before: per producer gapless, never reused, each
database transaction's rows together, in an order replay can trust; and writers
that plain Django runs side by side are not made to wait on each other or deadlock.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import defaultdict

import pytest
from django.db import connections, transaction
from django.db.models import QuerySet
from django.test import override_settings
from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from syncrouter import serialization as ser
from syncrouter.capture.outbox import seals_at_capture
from syncrouter.capture.seal import seal
from syncrouter.exceptions import SyncError
from syncrouter.models import IncomingTransaction, OutgoingTransaction, ProducerClock
from syncrouter.trust import keys, signing
from tests.support import factories, pg
from tests.support.copyharness import ROOT, Worker
from tests.support.nodes import DATABASES, PAIRS
from tests.support.trust import node_named, trusted  # noqa: F401
from tests.testapp.models import Household

needs_pg = pytest.mark.skipif(not pg.AVAILABLE, reason=pg.REASON or "")
WRITERS = 8


def outbox(alias: str) -> list[OutgoingTransaction]:
    return list(OutgoingTransaction.objects.using(alias).order_by("sequence"))


def assert_stream(alias: str) -> list[OutgoingTransaction]:
    """The sealed outbox of ``alias``: 1..N with no gap, each database transaction's rows
    consecutive, the clock at N and never behind a row's clock; returns the rows."""
    rows = [row for row in outbox(alias) if row.sequence is not None]
    assert [row.sequence for row in rows] == list(range(1, len(rows) + 1))
    seen, previous = set(), None
    for row in rows:
        if row.db_transaction_id != previous:
            assert row.db_transaction_id not in seen, f"transaction split around #{row.sequence}"
            seen.add(row.db_transaction_id)
            previous = row.db_transaction_id
    assert [row.hlc for row in rows] == sorted({row.hlc for row in rows})  # rises strictly
    if rows:
        clock = ProducerClock.objects.using(alias).get(producer=rows[0].producer)
        assert (clock.last_sequence, clock.last_hlc >= rows[-1].hlc) == (len(rows), True)
    return rows


def copy(alias: str, target: str) -> None:
    OutgoingTransaction.objects.using(alias).filter(
        is_consumed_server=False).copy_to_incoming_transaction(target)


def in_thread(function, alias: str):
    """Start ``function`` in a thread of its own (its own connection); (thread, outcome),
    where ``outcome`` gets its ``value`` or its ``error`` when it ends."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
        finally:
            connections[alias].close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# ------------------------------------------------------------ 8 writers, crossing rows


def _increment(alias: str, pk) -> None:
    """Read the row locked, save it with its counter (``village``) one up: captured."""
    household = Household.objects.using(alias).select_for_update().get(pk=pk)
    household.village = str(int(household.village) + 1)
    household.save()


def _writer(alias: str, number: int, rows: list, barrier: threading.Barrier, rounds: int,
            seed: int) -> int:
    """Writer ``number``: first, in one transaction, lock its own row, wait until every
    writer holds its own, then update it and the next writer's row (the last writer only
    its own). Plain Django runs that as a chain, never a circle: no deadlock. Then
    ``rounds`` transactions that update random rows in ascending order (a lock order
    plain Django never deadlocks on) and insert one household. Returns the writes made."""
    rng = random.Random(f"{seed}-{number}")
    with transaction.atomic(using=alias):
        Household.objects.using(alias).select_for_update().get(pk=rows[number])
        barrier.wait()
        _increment(alias, rows[number])
        if number + 1 < len(rows):
            _increment(alias, rows[number + 1])
    writes = 2 if number + 1 < len(rows) else 1
    for round_ in range(rounds):
        chosen = sorted(rng.sample(range(len(rows)), rng.randint(1, 3)))
        with transaction.atomic(using=alias):
            for index in chosen:
                _increment(alias, rows[index])
            factories.household(alias, f"W{number}-{round_}", village="0")
        writes += len(chosen) + 1
    return writes


@needs_pg
@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_eight_writers_crossing_rows_no_deadlock_each_write_once_in_order():
    """Eight writer threads on a PostgreSQL producer whose row orders cross (writer i holds
    row i and then wants row i+1). Capture must not add a deadlock plain Django does not
    have (the clock row did: 'deadlock detected ... syncrouter_producerclock'); every
    committed write is captured exactly once, sealed gapless, each transaction together,
    in an order that replays to the producer's state on the server."""
    alias, server, seed = "pgclient", "pgserver", random.randrange(1 << 32)
    rows = [factories.household(alias, f"R{i}", village="0").pk for i in range(WRITERS)]
    before = OutgoingTransaction.objects.using(alias).count()
    barrier = threading.Barrier(WRITERS)
    threads = [in_thread(lambda n=n: _writer(alias, n, rows, barrier, 6, seed), alias)
               for n in range(WRITERS)]
    for thread, _ in threads:
        thread.join()
    errors = [outcome["error"] for _, outcome in threads if "error" in outcome]
    assert not errors, f"seed {seed}: {errors[0]!r}"
    writes = sum(outcome["value"] for _, outcome in threads)

    captured = assert_stream(alias)
    assert len(captured) == before + writes
    assert len({row.id for row in captured}) == len(captured)
    counters = defaultdict(list)  # each row's updates, in sequence order
    for row in captured:
        payload = ser.loads(row.tx)
        if row.action == "U":
            counters[row.tx_pk].append((int(payload["before"]["village"]),
                                        int(payload["fields"]["village"])))
    for pk in rows:
        final = int(Household.objects.using(alias).get(pk=pk).village)
        assert counters[str(pk)] == [(n, n + 1) for n in range(final)], f"seed {seed}: {pk}"

    copy(alias, server)
    IncomingTransaction.objects.using(server).filter(is_consumed=False).deserialize()
    assert IncomingTransaction.objects.using(server).filter(is_consumed=False).count() == 0
    state = {(h.household_identifier, h.village) for h in Household.objects.using(alias)}
    assert {(h.household_identifier, h.village)
            for h in Household.objects.using(server)} == state


# ------------------------------------------------------------ second processes, kills


def _worker(alias: str) -> Worker:
    name = connections[alias].settings_dict["NAME"]
    return Worker(subprocess.Popen(
        [sys.executable, "-m", "tests.support.writeworker", "--alias", alias, "--db", f"{alias}={name}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))


def _write_without_waiting(alias: str, identifier: str) -> None:
    """Create a household in a thread of its own; fail if its connection ever waits on a
    lock (the only lock in reach is one held by another process's open transaction)."""
    started = threading.Event()
    pid = {}

    def write():
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid["pid"] = cursor.fetchone()[0]
        started.set()
        factories.household(alias, identifier)

    thread, outcome = in_thread(write, alias)
    started.wait()
    with connections[alias].cursor() as cursor:
        while thread.is_alive():
            cursor.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                           [pid["pid"]])
            waiting = cursor.fetchone()
            assert not (waiting and waiting[0]), (
                f"writing {identifier} waits on a lock another transaction holds")
            thread.join(0.005)
    assert "error" not in outcome, outcome.get("error")


def _do(worker: Worker, *commands: str) -> None:
    for command in commands:
        worker.send(command)
        assert worker.wait_for("ok") == f"ok {command.split()[0]}", worker.seen[-3:]


@needs_pg
@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_a_transaction_committing_after_a_later_one_was_sealed_and_copied_comes_after():
    """Another process opens a transaction and writes first; this one writes later, seals
    and copies. When the first commits, its rows get the next numbers: after what was
    copied, with no hole and nothing reused, and both its writes together."""
    alias, server = "pgclient", "pgserver"
    late = _worker(alias)
    try:
        _do(late, "begin", "household L1")
        _write_without_waiting(alias, "E1")
        copy(alias, server)  # L1 is not committed: this process cannot even see it
        assert [(r.sequence, ser.loads(r.tx)["nk"]) for r in outbox(alias)] == [(1, ["E1"])]
        assert IncomingTransaction.objects.using(server).get().sequence == 1
        _do(late, "household L2", "commit")
    finally:
        late.kill()
    copy(alias, server)
    rows = assert_stream(alias)
    assert [(row.sequence, ser.loads(row.tx)["nk"]) for row in rows] == [
        (1, ["E1"]), (2, ["L1"]), (3, ["L2"])]
    assert rows[1].write_order < rows[0].write_order  # written first, committed last
    assert list(IncomingTransaction.objects.using(server).order_by("sequence").values_list(
        "sequence", "id")) == [(row.sequence, row.id) for row in rows]


@needs_pg
@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_writer_killed_mid_transaction_loses_and_duplicates_nothing():
    """SIGKILL a writer with three captured writes uncommitted (another writer went on
    meanwhile, without waiting): they never existed; what committed before and after is
    sealed 1..N with no hole."""
    alias = "pgclient"
    writer = _worker(alias)
    try:
        _do(writer, "household K0", "begin", "household K1", "household K2", "household K3")
        _write_without_waiting(alias, "A1")
    finally:
        killed = writer.kill()
    assert killed
    factories.household(alias, "A2")
    rows = assert_stream(alias)
    assert [ser.loads(row.tx)["nk"] for row in rows] == [["K0"], ["A1"], ["A2"]]
    assert not Household.objects.using(alias).filter(household_identifier__in=["K1", "K2"])


@needs_pg
@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_sealer_killed_before_storing_numbers_seals_nothing_and_the_next_seal_does():
    """SIGKILL a process in the middle of a seal (clock row held, numbers not stored): the
    rows stay unsealed, the clock unchanged; the next seal numbers them 1..N."""
    alias = "pgclient"
    for identifier in ("S1", "S2", "S3"):
        factories.household(alias, identifier)
    sealer = _worker(alias)
    sealer.send("seal")
    assert sealer.wait_for("sealing") == "sealing"
    assert sealer.kill()
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM syncrouter_outgoingtransaction "
                       "WHERE sequence IS NULL")
        assert cursor.fetchone()[0] == 3
    assert not ProducerClock.objects.using(alias).filter(last_sequence__gt=0).exists()
    assert [ser.loads(row.tx)["nk"] for row in assert_stream(alias)] == [["S1"], ["S2"], ["S3"]]


# ------------------------------------------------------------ plain scenarios, both backends


def test_rows_of_a_transaction_still_open_here_wait_for_its_commit(nodes):
    """A read of the outbox inside the writing transaction seals everything committed but
    not that transaction's own rows (it might still write more, or roll back)."""
    factories.household(nodes.client, "H1")
    with transaction.atomic(using=nodes.client):
        factories.household(nodes.client, "H2")
        inside = [row.sequence for row in outbox(nodes.client)]
        factories.household(nodes.client, "H3")
    numbered = [1, 2] if seals_at_capture(connections[nodes.client]) else [None, 1]
    assert sorted(inside, key=lambda s: s or 0) == numbered
    assert [ser.loads(row.tx)["nk"] for row in assert_stream(nodes.client)] == [
        ["H1"], ["H2"], ["H3"]]


def test_seal_finds_nothing_where_capture_numbers(nodes):
    """SQLite producers are numbered at capture; on PostgreSQL only the seal numbers."""
    factories.household(nodes.client, "H1")
    hh = Household.objects.using(nodes.client).get()
    hh.village = "elsewhere"
    hh.save()
    expected = 0 if seals_at_capture(connections[nodes.client]) else 2
    assert seal(nodes.client) == expected
    assert seal(nodes.client) == 0
    assert [row.action for row in assert_stream(nodes.client)] == ["I", "U"]


@needs_pg
def test_seal_refuses_a_sequence_the_clock_never_gave():
    """A row numbered by hand past the clock: the seal says so and numbers nothing."""
    alias = "pgclient"
    factories.household(alias, "H1")
    first = outbox(alias)[0]
    OutgoingTransaction.objects.using(alias).bulk_create([OutgoingTransaction(
        tx="{}", tx_name="x.y", tx_pk="1", producer=first.producer, hostname="h", sequence=5,
        db_transaction_id=first.db_transaction_id, hlc=0, action="I",
        timestamp=first.timestamp)])
    factories.household(alias, "H2")
    with pytest.raises(SyncError, match=r"clock .*up to 1, but OutgoingTransaction already "
                                        r"holds #5.* 1 captured rows stay unsealed"):
        seal(alias)
    with pytest.raises(SyncError, match="stay unsealed"):  # so does every read of the outbox
        OutgoingTransaction.objects.using(alias).count()
    assert QuerySet(OutgoingTransaction, using=alias).filter(sequence__isnull=True).count() == 1


def test_signing_is_decided_at_capture_and_done_over_the_final_numbers(trusted):
    """Rows are signed over their final sequence and clock (on PostgreSQL, at the seal) if
    the node signed when it captured them: a row captured while signing was off stays
    unsigned; one captured signing is signed even if signing is off when it is sealed;
    one captured under a name the alias no longer has is signed with that name's key."""
    alias = trusted.client
    factories.household(alias, "H1")
    with override_settings(SYNCROUTER_SIGN=False):
        factories.household(alias, "H2")
    with node_named(alias, "renamed-since"):
        factories.household(alias, "H3")
        renamed = keys.require(alias).public
    with override_settings(SYNCROUTER_SIGN=False):
        rows = {ser.loads(row.tx)["nk"][0]: row for row in outbox(alias)}  # sealed here
    signing.verify(signing.values_of(rows["H1"]), keys.require(alias).public)
    assert rows["H2"].signature == ""
    assert rows["H3"].producer == "renamed-since"
    signing.verify(signing.values_of(rows["H3"]), renamed)


# ------------------------------------------------------------ generated interleavings


class _Session:
    """A thread with its own database connection, running what it is given, in turn."""

    def __init__(self, alias: str):
        self.alias, self.block = alias, None
        self.calls: list = []
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            with self.ready:
                self.ready.wait_for(lambda: self.calls and self.calls[0][1] is None)
                function = self.calls[0][0]
            if function is None:
                connections[self.alias].close()
                with self.ready:
                    self.calls[0][1] = ("done", None)
                    self.ready.notify_all()
                return
            try:
                result = ("done", function())
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller
                result = ("error", exc)
            with self.ready:
                self.calls[0][1] = result
                self.ready.notify_all()

    def run(self, function=None):
        with self.ready:
            self.calls[:] = [[function, None]]
            self.ready.notify_all()
            self.ready.wait_for(lambda: self.calls[0][1] is not None)
            kind, value = self.calls[0][1]
        if kind == "error":
            raise value
        return value

    def begin(self) -> None:
        def enter():
            self.block = transaction.atomic(using=self.alias)
            self.block.__enter__()
        self.run(enter)

    def end(self, commit: bool) -> None:
        def leave():
            error = None if commit else RuntimeError("rollback")
            block, self.block = self.block, None
            block.__exit__(type(error) if error else None, error, None)
        self.run(leave)


class Interleavings(RuleBasedStateMachine):
    """Three sessions begin, write, commit and roll back in any interleaving; seals (by a
    copy) come in between. After each step, read without sealing: what is sealed is
    gapless, each transaction together, and only committed writes. At each seal: every
    committed write is there once; what committed since the last seal comes after all
    that seal numbered, ordered by each transaction's last write; the server holds the
    sealed rows, gapless."""

    alias = server = ""
    counter = 0

    def __init__(self):
        super().__init__()
        self.pool = [_Session(self.alias) for _ in range(3)]
        self.open: dict[int, list[str]] = {}  # session -> identifiers written, uncommitted
        self.last_write: dict[int, int] = {}  # session -> step of its transaction's last write
        self.committed: list[list[str]] = []
        self.since_seal: list[tuple[int, list[str]]] = []  # (last write, names) committed
        self.sealed_up_to = 0  # highest sequence after the last seal
        self.steps = 0

    def _serial(self) -> bool:
        """SQLite takes one writer at a time: a write or copy waits for open transactions."""
        return seals_at_capture(connections[self.alias])

    @rule(session=st.integers(0, 2))
    def begin(self, session):
        if session in self.open or (self._serial() and self.open):
            return
        self.pool[session].begin()
        self.open[session] = []

    @rule(session=st.integers(0, 2), count=st.integers(1, 3))
    def write(self, session, count):
        if self._serial() and self.open and session not in self.open:
            return
        names = []
        for _ in range(count):
            Interleavings.counter += 1
            names.append(f"I{Interleavings.counter}")
        self.pool[session].run(lambda: [factories.household(self.alias, n) for n in names])
        self.steps += 1
        if session in self.open:
            self.open[session] += names
            self.last_write[session] = self.steps
        else:
            self._committed(self.steps, names)

    @precondition(lambda self: self.open)
    @rule(data=st.data(), commit=st.booleans())
    def end(self, data, commit):
        session = data.draw(st.sampled_from(sorted(self.open)))
        self.pool[session].end(commit)
        names = self.open.pop(session)
        if commit and names:
            self._committed(self.last_write[session], names)

    def _committed(self, last_write: int, names: list[str]) -> None:
        self.committed.append(names)
        self.since_seal.append((last_write, names))

    @rule()
    def seal_and_copy(self):
        if self._serial() and self.open:
            return
        copy(self.alias, self.server)
        rows = assert_stream(self.alias)
        number = {ser.loads(row.tx)["nk"][0]: row.sequence for row in rows}
        ours = [name for names in self.committed for name in names]
        assert sorted(name for name in number if name in set(ours)) == sorted(ours)
        firsts = [number[names[0]] for _, names in sorted(self.since_seal)]
        assert firsts == sorted(firsts)  # by last write, whatever the order of commits
        assert all(first > self.sealed_up_to for first in firsts)
        self.sealed_up_to, self.since_seal = len(rows), []
        sent = list(IncomingTransaction.objects.using(self.server).filter(
            producer=rows[0].producer if rows else "").order_by("sequence").values_list(
            "sequence", flat=True))
        assert sent == list(range(1, len(rows) + 1))

    @invariant()
    def sealed_part_is_gapless_and_committed_only(self):
        rows = [row for row in QuerySet(OutgoingTransaction, using=self.alias).order_by(
            "sequence") if row.sequence is not None]  # a plain queryset: no seal
        assert [row.sequence for row in rows] == list(range(1, len(rows) + 1))
        number = {ser.loads(row.tx)["nk"][0]: row.sequence for row in rows}
        uncommitted = {name for names in self.open.values() for name in names}
        assert not uncommitted & set(number)
        for names in self.committed:  # sealed whole or not at all, consecutive, in write order
            numbers = [number.get(name) for name in names]
            assert numbers == [None] * len(names) or numbers == list(
                range(numbers[0], numbers[0] + len(names)))

    def teardown(self):
        for session in list(self.open):
            self.pool[session].end(False)
        for session in self.pool:
            session.run(None)


@pytest.mark.django_db(transaction=True, databases=DATABASES)
@pytest.mark.parametrize("pair", ["sqlite-sqlite", "postgres-postgres"])
def test_generated_interleavings_of_writers_seals_and_copies(pair):
    if "postgres" in pair and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    Interleavings.alias, Interleavings.server = PAIRS[pair]
    run_state_machine_as_test(Interleavings, settings=settings(
        max_examples=12, stateful_step_count=14, deadline=None))
