"""Deterministic rows for the CRF workload, and the writes every benchmark repeats."""
from __future__ import annotations

import datetime
import decimal
import itertools
import random
import time
import uuid
from collections.abc import Iterable, Iterator

from django.db import connections, transaction

from syncrouter.state import replaying

from .benchapp.models import PlainVisit, Visit

START = datetime.datetime(2025, 1, 6, 8, 0, tzinfo=datetime.timezone.utc)
WORDS = ("fever", "cough", "headache", "referred", "stable", "follow-up", "reports", "no",
         "pain", "since", "visit", "clinic", "mild", "severe", "resolved", "today")


def visit_rows(count: int, prefix: str = "S") -> Iterator[dict]:
    """``count`` visits with unique natural keys ``(<prefix>nnnnnnn, "1000")``, in key order.

    Generated one at a time, like ``crf_rows()``: the scale rows go to a million and
    must not hold them all while memory is measured.
    """
    for i in range(count):
        yield {"id": uuid.UUID(int=random.Random(f"{prefix}{i}").getrandbits(128)),
               "subject_identifier": f"{prefix}{i:07d}", "visit_code": "1000",
               "report_datetime": START + datetime.timedelta(minutes=i)}


def crf_values(rng: random.Random, i: int) -> dict:
    """The ~15 field values of one CRF (no visit link)."""
    smoker = rng.random() < 0.3
    return {
        "id": uuid.UUID(int=rng.getrandbits(128)),
        "report_datetime": START + datetime.timedelta(minutes=i, seconds=30),
        "weight_kg": decimal.Decimal(rng.randint(300, 1200)) / 10,
        "height_cm": round(rng.uniform(140, 200), 1),
        "temperature": round(rng.uniform(35.5, 40.0), 1),
        "systolic": rng.randint(90, 180), "diastolic": rng.randint(50, 110),
        "is_smoker": smoker, "cigarettes_per_day": rng.randint(1, 40) if smoker else None,
        "visit_date": START.date() + datetime.timedelta(days=i % 365),
        "arrival_time": datetime.time(8 + i % 9, i % 60),
        "consult_duration": datetime.timedelta(minutes=rng.randint(5, 60)),
        "reference": uuid.UUID(int=rng.getrandbits(128)),
        "outcome": rng.choice(("well", "ill", "referred")),
        # choices(), not 60 choice() calls: a quarter of the time, and the scale rows
        # generate a million of these twice.
        "comments": " ".join(rng.choices(WORDS, k=60))[:200].ljust(200, "."),
        "extra": {"site": rng.randint(1, 9), "flags": [rng.random() < 0.5]},
    }


def crf_rows(count: int, seed: str = "crf") -> Iterator[dict]:
    rng = random.Random(seed)
    for i in range(count):
        yield crf_values(rng, i)


def linked_crf_rows(count: int) -> Iterator[dict]:
    """``crf_rows(count)`` with ``visit_id`` set to the visit of the same index.

    Instances built from them need no loaded visits, so a million rows can be
    written a chunk at a time; the visit of row i is the i-th of ``loaded_visits()``.
    """
    for visit, row in zip(visit_rows(count), crf_rows(count)):
        yield dict(row, visit_id=visit["id"])


def chunked(rows: Iterable, size: int) -> Iterator[list]:
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def seed_visits(alias: str, visits: Iterable[dict], models=(Visit, PlainVisit)) -> None:
    """Insert visits as rows of ``models`` without capturing them (setup, never timed).

    Then, on PostgreSQL, ANALYZE their tables, as autovacuum will have done on a
    server whose visits were there before the CRFs came: queries planned with
    no statistics for a table just filled read it all (RESULTS.md).
    """
    with replaying(alias), transaction.atomic(using=alias):
        for chunk in chunked(visits, 2000):
            for model in models:
                model.objects.using(alias).bulk_create([model(**v) for v in chunk])
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for model in models:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def loaded_visits(model, alias: str) -> list:
    return list(model.objects.using(alias).order_by("subject_identifier"))


def crfs(model, visits: list, rows: list[dict]) -> list:
    """Unsaved ``model`` instances, one per visit; ids reused so twins hold equal rows."""
    return [model(visit=visit, **row) for visit, row in zip(visits, rows)]


def save_each(model, alias: str, visits: list, rows: list[dict], atomic: bool) -> None:
    """One ``save()`` per row, all in one atomic block or each in autocommit."""
    objects = crfs(model, visits, rows)
    if atomic:
        with transaction.atomic(using=alias):
            for obj in objects:
                obj.save(using=alias, force_insert=True)
    else:
        for obj in objects:
            obj.save(using=alias, force_insert=True)


def bulk_create(model, alias: str, visits: list, rows: list[dict]) -> None:
    with transaction.atomic(using=alias):
        model.objects.using(alias).bulk_create(crfs(model, visits, rows), batch_size=1000)


def bulk_create_linked(model, alias: str, count: int) -> float:
    """``bulk_create`` of ``linked_crf_rows(count)`` in one transaction, 1,000 rows per INSERT;
    returns its seconds less those spent generating the rows.

    What ``bulk_create(objs, batch_size=1000)`` of them all does, without holding a
    million instances: the scale rows compare its memory with replay's.
    """
    chunks = chunked(linked_crf_rows(count), 1000)
    generating, start = 0.0, time.perf_counter()
    with transaction.atomic(using=alias):
        while True:
            before = time.perf_counter()
            chunk = next(chunks, None)
            generating += time.perf_counter() - before
            if chunk is None:
                break
            model.objects.using(alias).bulk_create([model(**row) for row in chunk])
    return time.perf_counter() - start - generating


EDITED_FIELDS = ("outcome", "systolic", "comments")


def edited(values) -> dict:
    """New ``EDITED_FIELDS`` values of one CRF, derived from its current ones (a dict or
    an instance's ``__dict__``): the correction a data manager makes, alike in every run."""
    outcomes = ("well", "ill", "referred")
    return {"outcome": outcomes[(outcomes.index(values["outcome"]) + 1) % len(outcomes)],
            "systolic": values["systolic"] + 5,
            "comments": f"corrected: {values['comments']}"[:200]}


def edit_each(model, alias: str) -> None:
    """Load every CRF of ``alias``, change ``EDITED_FIELDS``, ``save()`` each; one atomic()."""
    with transaction.atomic(using=alias):
        for obj in model.objects.using(alias).select_related("visit"):
            for name, value in edited(obj.__dict__).items():
                setattr(obj, name, value)
            obj.save(using=alias)


def bulk_update(model, alias: str, rows: list[dict]) -> None:
    """One ``bulk_update`` writing ``edited(row)`` to the row of each of ``rows`` (by id)."""
    objects = [model(id=row["id"], **edited(row)) for row in rows]
    model.objects.using(alias).bulk_update(objects, EDITED_FIELDS, batch_size=1000)


def edited_values(model, alias: str) -> set:
    """(id, *EDITED_FIELDS) of every row: to check that two sides hold the same edits."""
    return set(model.objects.using(alias).values_list("id", *EDITED_FIELDS))


def update_all(model, alias: str) -> int:
    """One ``QuerySet.update()`` of every row of ``model``."""
    with transaction.atomic(using=alias):
        return model.objects.using(alias).update(outcome="referred", systolic=120)
