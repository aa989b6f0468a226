"""The cost of at-rest payload encryption: at capture (``save()``) and at replay.

Each row times the same work with encryption on (``syncrouter``: payloads stored under
a payload key) and off (``baseline``: plain JSON), in one process, alternating which
goes first; ``ratio`` is the rate kept with encryption on. Signing and verification
stay off on both sides, so the rows show encryption alone. The aim: under 10 % of
``save()``'s capture rate.
"""
from __future__ import annotations

import time
from pathlib import Path

from django.test import override_settings

from syncrouter.models import OutgoingTransaction
from syncrouter.trust import atrest

from . import workload as wl
from .benchapp.models import Crf, Visit
from .measure import Row, timed
from .settings import SQLITE_DIR
from .suites import CLIENT, SERVER, copy_to_server, expect, fresh, outgoing, replay

KEYS = {"bench": str(SQLITE_DIR / "payload-keys" / "bench.key")}


def _keyring(on: bool):
    return override_settings(SYNCROUTER_PAYLOAD_KEYS=KEYS,
                             SYNCROUTER_PAYLOAD_KEY="bench" if on else None)


def _capture(n: int, rows: list, on: bool) -> float:
    fresh([CLIENT, SERVER], n)
    with _keyring(on):
        visits = wl.loaded_visits(Visit, CLIENT)
        seconds = timed(wl.save_each, Crf, CLIENT, visits, rows, True)[0]
    stored = OutgoingTransaction.objects.using(CLIENT).values_list("tx", flat=True).first()
    expect("payload stored encrypted" if on else "payload stored plain",
           atrest.key_of(stored), "bench" if on else None)
    return seconds


def _cpu_per_row(n: int) -> dict:
    """Microseconds of CPU per row for protect and reveal alone, on the captured payloads."""
    with _keyring(True):
        rows = list(OutgoingTransaction.objects.using(CLIENT).values_list("id", "tx")[:n])
        plain = [(row_id, atrest.reveal(text, row_id)) for row_id, text in rows]
        start = time.process_time()
        for row_id, text in plain:
            atrest.protect(text, row_id)
        protect = time.process_time() - start
        start = time.process_time()
        for row_id, text in rows:
            atrest.reveal(text, row_id)
        reveal = time.process_time() - start
    size = sum(len(text) for _, text in plain) // max(len(plain), 1)
    return {"protect_us_per_row": round(protect / len(rows) * 1e6, 1),
            "reveal_us_per_row": round(reveal / len(rows) * 1e6, 1),
            "mean_payload_chars": size}


def atrest_suite(n: int, repeat: int) -> list[Row]:
    if not Path(KEYS["bench"]).exists():
        with _keyring(False):
            atrest.new_key("bench")
    rows = list(wl.crf_rows(n))
    capture = Row("atrest.capture.save", "atrest", "Crf.save() x N in one atomic(), payload "
                  "encrypted", "the same saves, payload plain", n)
    replayed = Row("atrest.replay", "atrest", "copy and replay of N encrypted inserts",
                   "the same of N plain inserts", n)
    for attempt in range(repeat):
        order = (True, False) if attempt % 2 == 0 else (False, True)
        for on in order:
            seconds = _capture(n, rows, on)
            (capture.syncrouter_seconds if on else capture.baseline_seconds).append(seconds)
            with _keyring(on):
                copy_seconds, result = timed(copy_to_server)
                expect("copied transactions", tuple(result), (n, 0))
                replay_seconds, outcomes = timed(replay)
                expect("replay", dict(outcomes), {"inserted": n})
            (replayed.syncrouter_seconds if on else replayed.baseline_seconds).append(
                copy_seconds + replay_seconds)
        expect("captured transactions", outgoing(), n)
    _capture(n, rows, True)
    capture.notes.update(_cpu_per_row(n))
    return [capture, replayed]
