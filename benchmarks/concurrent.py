"""Concurrent writers on one producer: captured ``save()`` throughput against plain Django.

Eight processes (forked, like a web server's workers), each its own connection, run
transactions that lock two CRFs of a shared pool of 64 in ascending order (writers cross each other's rows, in a lock
order plain Django never deadlocks on), change them and ``save()`` them. The
registered ``Crf`` is captured, its unregistered twin ``PlainCrf`` is the baseline.
Before capture stopped taking the producer's clock row in the writer's
transaction (issue 15), the captured side serialized every writer on that row and
deadlocked; now only the seal (timed apart, in the notes) takes it.

PostgreSQL only: SQLite runs one writer at a time whatever capture does.
"""
from __future__ import annotations

import multiprocessing
import random
import time

from django.db import connections, transaction

from syncrouter.capture.seal import seal
from syncrouter.state import replaying

from . import workload as wl
from .benchapp.models import Crf, PlainCrf, PlainVisit, Visit
from .measure import Row, timed
from .suites import CLIENT, BenchmarkError, expect, fresh, outgoing

WRITERS = 8
POOL = 64


def _pool(model, visits_model) -> list:
    """``POOL`` rows of ``model``, written uncaptured (setup); their ids in ascending order."""
    visits = wl.loaded_visits(visits_model, CLIENT)[:POOL]
    with replaying(CLIENT):
        wl.bulk_create(model, CLIENT, visits, list(wl.crf_rows(POOL, seed="pool")))
    return sorted(model.objects.using(CLIENT).values_list("id", flat=True))


def _writer(model, ids: list, transactions: int, seed: int, start, failures) -> None:
    """One writer process: ``transactions`` transactions once every writer is ready."""
    rng = random.Random(seed)
    try:
        start.wait()
        for _ in range(transactions):
            with transaction.atomic(using=CLIENT):
                for pk in sorted(rng.sample(ids, 2)):
                    obj = model.objects.using(CLIENT).select_for_update().get(pk=pk)
                    obj.systolic += 1
                    obj.save(using=CLIENT)
    except Exception as exc:  # a deadlock, say: the row reports it
        failures.put(f"{type(exc).__name__}: {exc}")
    finally:
        connections[CLIENT].close()


def _run(model, ids: list, transactions: int) -> float:
    """Seconds from the start of all ``WRITERS`` until the last one is done."""
    context = multiprocessing.get_context("fork")
    start, failures = context.Barrier(WRITERS + 1), context.Queue()
    connections.close_all()  # a forked child must open its own connection
    writers = [context.Process(target=_writer, args=(model, ids, transactions, seed, start,
                                                     failures))
               for seed in range(WRITERS)]
    for writer in writers:
        writer.start()
    start.wait()
    began = time.perf_counter()
    for writer in writers:
        writer.join()
    seconds = time.perf_counter() - began
    if not failures.empty() or any(writer.exitcode for writer in writers):
        first = "a writer died" if failures.empty() else failures.get()
        raise BenchmarkError(f"{model.__name__} writers failed: {first}")
    return seconds


def concurrent_writers(n: int, repeat: int) -> list[Row]:
    """N captured saves by ``WRITERS`` concurrent writers (N / 16 transactions each)."""
    transactions = max(1, n // (2 * WRITERS))
    saves = transactions * 2 * WRITERS
    row = Row("capture.concurrent", "capture",
              f"Crf save() by {WRITERS} concurrent writers, 2 locked rows per transaction",
              "PlainCrf, the same writers and rows (unregistered twin)", saves)
    for _ in range(repeat):
        fresh([CLIENT], POOL)
        ids = _pool(Crf, Visit)
        plain_ids = _pool(PlainCrf, PlainVisit)
        seconds = _run(Crf, ids, transactions)
        row.syncrouter_seconds.append(seconds)
        row.baseline_seconds.append(_run(PlainCrf, plain_ids, transactions))
        sealing, sealed = timed(seal, CLIENT)
        expect("captured saves", outgoing(), saves)
        expect("rows sealed", sealed, saves)
        row.notes.update(writers=WRITERS, transactions=transactions * WRITERS,
                         seal_seconds=round(sealing, 3),
                         seal_rows_per_s=round(saves / sealing) if sealing else None)
    return [row]
