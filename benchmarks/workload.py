"""Deterministic rows for the CRF workload, and the writes every benchmark repeats."""
from __future__ import annotations

import datetime
import decimal
import random
import uuid

from django.db import transaction

from syncrouter.capture.context import replaying

from .benchapp.models import PlainVisit, Visit

START = datetime.datetime(2025, 1, 6, 8, 0, tzinfo=datetime.timezone.utc)
WORDS = ("fever", "cough", "headache", "referred", "stable", "follow-up", "reports", "no",
         "pain", "since", "visit", "clinic", "mild", "severe", "resolved", "today")


def visit_rows(count: int, prefix: str = "S") -> list[dict]:
    """``count`` visits with unique natural keys ``(<prefix>nnnnnn, "1000")``."""
    return [{"id": uuid.UUID(int=random.Random(f"{prefix}{i}").getrandbits(128)),
             "subject_identifier": f"{prefix}{i:07d}", "visit_code": "1000",
             "report_datetime": START + datetime.timedelta(minutes=i)} for i in range(count)]


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
        "comments": " ".join(rng.choice(WORDS) for _ in range(60))[:200].ljust(200, "."),
        "extra": {"site": rng.randint(1, 9), "flags": [rng.random() < 0.5]},
    }


def crf_rows(count: int, seed: str = "crf") -> list[dict]:
    rng = random.Random(seed)
    return [crf_values(rng, i) for i in range(count)]


def seed_visits(alias: str, visits: list[dict], registered: bool = True,
                plain: bool = True) -> None:
    """Insert visits without capturing them (setup, never timed)."""
    with replaying(alias), transaction.atomic(using=alias):
        if registered:
            Visit.objects.using(alias).bulk_create([Visit(**v) for v in visits], batch_size=2000)
        if plain:
            PlainVisit.objects.using(alias).bulk_create([PlainVisit(**v) for v in visits],
                                                        batch_size=2000)


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


def update_all(model, alias: str) -> int:
    """One ``QuerySet.update()`` of every row of ``model``."""
    with transaction.atomic(using=alias):
        return model.objects.using(alias).update(outcome="referred", systolic=120)
