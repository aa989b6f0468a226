"""The benchmark rows. Each suite returns ``Row`` objects; every repeat starts from empty tables.

Aliases: rows are written on ``client`` and copied/replayed on ``server``; the
end-to-end suite also writes on ``client2`` and ``client3``.
"""
from __future__ import annotations

from collections import Counter

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from syncrouter import serialization as ser
from syncrouter.models import IncomingTransaction, OutgoingTransaction

from . import databases, oldtools, workload as wl
from .benchapp.models import Crf, OldTransaction, PlainCrf, PlainVisit, Visit
from .measure import PeakRSS, Row, attempt, timed

CLIENT, SERVER = "client", "server"


class BenchmarkError(RuntimeError):
    """A run produced wrong data (missing rows, replay errors): its timings mean nothing."""


def expect(what: str, got, wanted) -> None:
    if got != wanted:
        raise BenchmarkError(f"{what}: got {got!r}, expected {wanted!r}")


def fresh(aliases, visits: int) -> None:
    """Empty tables on ``aliases``, then ``visits`` visits (and twins) on each."""
    databases.reset(*aliases)
    for alias in aliases:
        wl.seed_visits(alias, wl.visit_rows(visits))


def outgoing(alias: str = CLIENT) -> int:
    return OutgoingTransaction.objects.using(alias).count()


def db_transactions(alias: str = CLIENT) -> int:
    return OutgoingTransaction.objects.using(alias).values("db_transaction_id").distinct().count()


def copy_to_server(alias: str = CLIENT):
    """Copy the transactions ``alias`` has not yet sent to the server."""
    return OutgoingTransaction.objects.using(alias).filter(
        is_consumed_server=False).copy_to_incoming_transaction(SERVER)


# ---------------------------------------------------------------- 1, 2: capture


def _bulk_capture(row: Row, function, registered: tuple, plain: tuple) -> None:
    """Time a bulk path on Crf and on PlainCrf; note how many transactions it produced."""
    before = outgoing()
    if attempt(row, function, *registered) is not None:
        produced = outgoing() - before
        row.notes.update(transactions=produced, captured=produced > 0)
    row.baseline_seconds.append(timed(function, *plain)[0])


def capture(n: int, repeat: int) -> list[Row]:
    rows = list(wl.crf_rows(n))
    saves = {
        atomic: Row(f"capture.save.{'atomic' if atomic else 'autocommit'}", "capture",
                    f"Crf.save() x N {'in one atomic()' if atomic else 'in autocommit'}",
                    "PlainCrf.save() x N, same mode (unregistered twin)", n)
        for atomic in (True, False)}
    bulk = Row("capture.bulk_create", "capture", "Crf.objects.bulk_create(N)",
               "PlainCrf.objects.bulk_create(N)", n)
    update = Row("capture.update", "capture", "Crf.objects.update() of N rows",
                 "PlainCrf.objects.update() of N rows", n)
    old = Row("oldtools.capture", "old tools (reproduction)", "Crf.save() x N in autocommit",
              "PlainCrf.save() x N in autocommit + post_save serializers.serialize(json, "
              "natural FKs) + ORM create of a transaction row", n)
    for _ in range(repeat):
        for atomic, row in saves.items():
            fresh([CLIENT], n)
            seconds, _ = timed(wl.save_each, Crf, CLIENT, wl.loaded_visits(Visit, CLIENT), rows,
                               atomic)
            row.syncrouter_seconds.append(seconds)
            row.notes.update(transactions=outgoing(), db_transactions=db_transactions())
            seconds, _ = timed(wl.save_each, PlainCrf, CLIENT,
                               wl.loaded_visits(PlainVisit, CLIENT), rows, atomic)
            row.baseline_seconds.append(seconds)
            if not atomic:
                old.syncrouter_seconds.append(row.syncrouter_seconds[-1])
        fresh([CLIENT], n)
        _bulk_capture(bulk, wl.bulk_create, (Crf, CLIENT, wl.loaded_visits(Visit, CLIENT), rows),
                      (PlainCrf, CLIENT, wl.loaded_visits(PlainVisit, CLIENT), rows))
        if Crf.objects.using(CLIENT).count() == n:
            _bulk_capture(update, wl.update_all, (Crf, CLIENT), (PlainCrf, CLIENT))
        else:
            update.error = update.error or "not measured: the Crf rows to update are missing"
        fresh([CLIENT], n)
        with oldtools.capturing(PlainCrf):
            seconds, _ = timed(wl.save_each, PlainCrf, CLIENT,
                               wl.loaded_visits(PlainVisit, CLIENT), rows, False)
        old.baseline_seconds.append(seconds)
        old.notes.update(old_transactions=OldTransaction.objects.using(CLIENT).count())
    return [saves[True], saves[False], bulk, update, old]


# ---------------------------------------------------------------- 3, 4: copy and replay


def _incoming_rows(target_name: str) -> tuple[list[str], list[tuple]]:
    """The source's outgoing rows as complete IncomingTransaction rows (columns, tuples)."""
    fields = IncomingTransaction._meta.concrete_fields
    source = {row["id"]: row for row in OutgoingTransaction.objects.using(CLIENT).values()}
    now = timezone.now()
    rows = []
    for row in source.values():
        values = dict(row, hops=ser.dumps(ser.loads(row["hops"]) + [target_name]),
                      received_datetime=now, is_consumed=False, is_deferred=False,
                      consumed_datetime=None, consumer="", is_consumed_server=False,
                      is_refused=False)
        rows.append(tuple(values[f.attname] for f in fields))
    return [f.column for f in fields], rows


def copy_baseline_bulk_create(target_name: str) -> int:
    columns, rows = _incoming_rows(target_name)
    attnames = [f.attname for f in IncomingTransaction._meta.concrete_fields]
    objects = [IncomingTransaction(**dict(zip(attnames, row))) for row in rows]
    with transaction.atomic(using=SERVER):
        IncomingTransaction.objects.using(SERVER).bulk_create(objects, batch_size=1000)
    return len(objects)


def copy_baseline_copy(target_name: str) -> int:
    """SELECT on the client, then one psycopg COPY into the server's incoming table."""
    columns, rows = _incoming_rows(target_name)
    connection = connections[SERVER]
    table = connection.ops.quote_name(IncomingTransaction._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    with transaction.atomic(using=SERVER), connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    return len(rows)


def _empty_incoming() -> None:
    connection = connections[SERVER]
    table = connection.ops.quote_name(IncomingTransaction._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")


def replay(alias: str = SERVER) -> Counter:
    messages = IncomingTransaction.objects.using(alias).filter(is_consumed=False).deserialize(
        check_hostname=False)
    return Counter(messages.counts)


def _oldtools_replay(write, *args) -> tuple[float, int]:
    """``write(PlainCrf, client, *args)`` under the old tools' capture, their transactions
    moved to the server; returns the seconds and the row count of their timed replay."""
    with oldtools.capturing(PlainCrf):
        write(PlainCrf, CLIENT, *args)
    oldtools.copy(CLIENT, SERVER)
    return timed(oldtools.replay, SERVER)


def copy_and_replay(n: int, repeat: int) -> list[Row]:
    """Copy and replay N inserts, then replay N edits of the same rows.

    The edits are one field correction per CRF, ``save()`` of a loaded instance: the
    update clients make most.
    """
    rows = list(wl.crf_rows(n))
    target_name = settings.SYNCROUTER_NODES[SERVER]["name"]
    copy_sr = "OutgoingTransaction...copy_to_incoming_transaction(server)"
    baselines = {"bulk_create": ("copy.vs_bulk_create", copy_baseline_bulk_create,
                                 "SELECT from client + IncomingTransaction bulk_create on server")}
    if connections[SERVER].vendor == "postgresql":
        baselines["copy"] = ("copy.vs_copy", copy_baseline_copy,
                             "SELECT from client + raw psycopg COPY into the same table")
    copies = {name: Row(key, "copy", copy_sr, label, n)
              for name, (key, _, label) in baselines.items()}
    replay_sr = "IncomingTransaction...deserialize(check_hostname=False)"
    vs_bulk = Row("replay.vs_bulk_create", "replay", replay_sr,
                  "PlainCrf.objects.bulk_create(N) of the same rows", n)
    vs_old = Row("replay.vs_oldtools", "replay", replay_sr,
                 "old tools (reproduction): serializers.deserialize(json) + .save() per row", n)
    fields = ", ".join(wl.EDITED_FIELDS)
    updates_sr = (f"{replay_sr} of N updates (client: load, change {fields}, save() x N "
                  "in one atomic())")
    updates = Row("replay.updates", "replay", updates_sr,
                  f"PlainCrf.objects.bulk_update(N, [{fields}]) of the same rows and values", n)
    updates_old = Row("replay.updates.vs_oldtools", "replay", updates_sr,
                      "old tools (reproduction) of the same edits: serializers.deserialize(json)"
                      " + .save() per row", n)
    for _ in range(repeat):
        fresh([CLIENT, SERVER], n)
        wl.save_each(Crf, CLIENT, wl.loaded_visits(Visit, CLIENT), rows, atomic=True)
        for name, (_, function, _) in baselines.items():
            seconds, copied = timed(function, target_name)
            expect(f"{name} baseline rows", copied, n)
            copies[name].baseline_seconds.append(seconds)
            _empty_incoming()
        seconds, result = timed(copy_to_server)
        expect("copied transactions", tuple(result), (n, 0))
        for row in copies.values():
            row.syncrouter_seconds.append(seconds)

        seconds, outcomes = timed(replay)
        expect("replay outcomes", dict(outcomes), {"inserted": n})
        expect("Crf rows on server", Crf.objects.using(SERVER).count(), n)
        vs_bulk.syncrouter_seconds.append(seconds)
        vs_old.syncrouter_seconds.append(seconds)
        seconds, _ = timed(wl.bulk_create, PlainCrf, SERVER,
                           wl.loaded_visits(PlainVisit, SERVER), rows)
        vs_bulk.baseline_seconds.append(seconds)

        wl.edit_each(Crf, CLIENT)
        expect("copied updates", tuple(copy_to_server()), (n, 0))
        seconds, outcomes = timed(replay)
        expect("update replay outcomes", dict(outcomes), {"updated": n})
        edits = wl.edited_values(Crf, CLIENT)
        expect("edited Crf rows on server", wl.edited_values(Crf, SERVER), edits)
        updates.syncrouter_seconds.append(seconds)
        updates_old.syncrouter_seconds.append(seconds)
        seconds, _ = timed(wl.bulk_update, PlainCrf, SERVER, rows)
        expect("PlainCrf rows after bulk_update", wl.edited_values(PlainCrf, SERVER), edits)
        updates.baseline_seconds.append(seconds)

        PlainCrf.objects.using(SERVER).all().delete()
        seconds, replayed = _oldtools_replay(wl.save_each, wl.loaded_visits(PlainVisit, CLIENT),
                                             rows, False)
        expect("old tools replayed rows", (replayed, PlainCrf.objects.using(SERVER).count()),
               (n, n))
        vs_old.baseline_seconds.append(seconds)
        seconds, replayed = _oldtools_replay(wl.edit_each)
        expect("old tools replayed updates", (replayed, wl.edited_values(PlainCrf, SERVER)),
               (n, edits))
        updates_old.baseline_seconds.append(seconds)
    return [*copies.values(), vs_bulk, vs_old, updates, updates_old]


# ---------------------------------------------------------------- 5: scale

#: Rows per client transaction in the scale setup, hence per replay unit: the 1,000 of
#: the earlier per-row ``save()`` setup, so figures stay comparable with RESULTS.md.
SCALE_CHUNK = 1000


def _scale_setup(size: int) -> None:
    """Fresh aliases, then a captured ``Crf.objects.bulk_create`` of ``linked_crf_rows(size)``
    on the client, one client transaction per ``SCALE_CHUNK`` rows, generated chunk by chunk.

    A million rows saved one by one took half an hour to set up; ``bulk_create`` goes
    through the same capture (one outgoing transaction per row) several times faster,
    and the benchmark holds no list of rows afterwards, when replay's memory is measured.
    The client gets no ``PlainVisit`` rows: no baseline runs there.
    """
    databases.reset(CLIENT, SERVER)
    wl.seed_visits(CLIENT, wl.visit_rows(size), models=[Visit])
    wl.seed_visits(SERVER, wl.visit_rows(size))
    for chunk in wl.chunked(wl.linked_crf_rows(size), SCALE_CHUNK):
        with transaction.atomic(using=CLIENT):
            Crf.objects.using(CLIENT).bulk_create([Crf(**row) for row in chunk])
    expect(f"captured transactions at N={size}", outgoing(), size)


def _memory(side: str, memory: PeakRSS) -> dict:
    return {f"{side}_rss_start_mb": _mb(memory.start), f"{side}_rss_peak_mb": _mb(memory.peak),
            f"{side}_rss_added_mb": _mb(memory.delta)}


def _mb(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


def _oldtools_scale_setup(size: int) -> None:
    """The scale rows captured the older tools' way on ``PlainCrf``, moved to the server.

    Setup, not timed: saved in 1,000-row client transactions (each save still
    writes its own transaction row), with the visits loaded once.
    """
    wl.seed_visits(CLIENT, wl.visit_rows(size), models=[PlainVisit])
    visits = wl.chunked(wl.loaded_visits(PlainVisit, CLIENT), SCALE_CHUNK)
    with oldtools.capturing(PlainCrf):
        for chunk in wl.chunked(wl.crf_rows(size), SCALE_CHUNK):
            with transaction.atomic(using=CLIENT):
                wl.save_each(PlainCrf, CLIENT, next(visits), chunk, atomic=False)
    expect(f"old tools transactions at N={size}", oldtools.copy(CLIENT, SERVER), size)


def scale(sizes: list[int], repeat: int, oldtools_up_to: int = 0) -> list[Row]:
    """Replay at growing N, with the process's resident memory while each side runs.

    Reported for both: RSS at the start of the call, its peak during it (what a
    250 MB budget for a million rows is about) and the difference. Sizes up to
    ``oldtools_up_to`` also get a row against the older tools' replay of the same
    rows (about 130 rows/s on PostgreSQL: 13 minutes at 100,000).
    """
    rows = []
    for size in sizes:
        old = Row(f"scale.replay.{size}.vs_oldtools", "scale",
                  "the same replay as scale.replay.N",
                  "old tools (reproduction): serializers.deserialize(json) + .save() per row "
                  "of the same rows", size) if size <= oldtools_up_to else None
        row = Row(f"scale.replay.{size}", "scale",
                  "deserialize(check_hostname=False) of N transactions (client: captured "
                  f"bulk_create, {SCALE_CHUNK:,} rows per transaction)",
                  "PlainCrf.objects.bulk_create(N, batch_size=1000) of the same rows", size,
                  notes={"memory": "process RSS at the start of the call, its peak during "
                                   "it and the increase; sampled every 5 ms (not tracemalloc)"})
        for _ in range(repeat):
            row.notes["setup_seconds"] = round(timed(_scale_setup, size)[0], 3)
            seconds, copied = timed(copy_to_server)
            expect(f"copied transactions at N={size}", tuple(copied), (size, 0))
            row.notes["copy_seconds"] = round(seconds, 3)
            with PeakRSS() as memory:
                seconds, outcomes = timed(replay)
            expect(f"replay outcomes at N={size}", dict(outcomes), {"inserted": size})
            row.syncrouter_seconds.append(seconds)
            row.notes.update(_memory("syncrouter", memory))
            with PeakRSS() as memory:
                seconds = wl.bulk_create_linked(PlainCrf, SERVER, size)
            expect(f"baseline rows at N={size}", PlainCrf.objects.using(SERVER).count(), size)
            row.baseline_seconds.append(seconds)
            row.notes.update(_memory("baseline", memory))
            if old is not None:
                PlainCrf.objects.using(SERVER).all().delete()
                _oldtools_scale_setup(size)
                seconds, replayed = timed(oldtools.replay, SERVER)
                expect(f"old tools replayed rows at N={size}",
                       (replayed, PlainCrf.objects.using(SERVER).count()), (size, size))
                old.syncrouter_seconds.append(row.syncrouter_seconds[-1])
                old.baseline_seconds.append(seconds)
        rows += [row] if old is None else [row, old]
    return rows


# ---------------------------------------------------------------- 6: end to end


def _field_work(clients, per_client: int, visit_model, crf_model) -> None:
    """Each client records its visits and CRFs, one visit + form per atomic block."""
    for index, alias in enumerate(clients):
        visits = wl.visit_rows(per_client, prefix=f"C{index}-")
        for visit, row in zip(visits, wl.crf_rows(per_client, seed=f"crf-{alias}")):
            with transaction.atomic(using=alias):
                saved = visit_model(**visit)
                saved.save(using=alias, force_insert=True)
                crf_model(visit=saved, **row).save(using=alias, force_insert=True)


def end_to_end_syncrouter(clients, per_client: int) -> Counter:
    _field_work(clients, per_client, Visit, Crf)
    for alias in clients:
        copy_to_server(alias)
    return replay()


def end_to_end_baseline(clients, per_client: int) -> None:
    """The same field work on the unregistered twins, then a plain dump-and-load to the server."""
    _field_work(clients, per_client, PlainVisit, PlainCrf)
    for alias in clients:
        for model in (PlainVisit, PlainCrf):
            objects = list(model.objects.using(alias).all())
            with transaction.atomic(using=SERVER):
                model.objects.using(SERVER).bulk_create(objects, batch_size=1000)


def end_to_end(n: int, repeat: int) -> list[Row]:
    clients = settings.CLIENTS
    per_client = max(1, n // len(clients))
    total = per_client * len(clients)
    row = Row("e2e.clients_to_server", "end-to-end",
              f"{len(clients)} clients save Visit+Crf, copy to server, replay",
              "same saves on unregistered twins, then SELECT + bulk_create on server", 2 * total,
              notes={"clients": len(clients), "rows_per_client": per_client * 2,
                     "sequential": "clients run one after another in one process"})
    for _ in range(repeat):
        databases.reset(*clients, SERVER)
        seconds, outcomes = timed(end_to_end_syncrouter, clients, per_client)
        expect("end-to-end replay outcomes", dict(outcomes), {"inserted": 2 * total})
        expect("end-to-end server counts", (Visit.objects.using(SERVER).count(),
                                            Crf.objects.using(SERVER).count()), (total, total))
        row.syncrouter_seconds.append(seconds)
        seconds, _ = timed(end_to_end_baseline, clients, per_client)
        expect("end-to-end baseline server counts", (
            PlainVisit.objects.using(SERVER).count(), PlainCrf.objects.using(SERVER).count()),
            (total, total))
        row.baseline_seconds.append(seconds)
    row.notes["counts_match"] = True
    return [row]
