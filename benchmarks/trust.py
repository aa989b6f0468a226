"""The cost of trust: signing at capture, verification at copy and replay.

The capture rows time the seal as well, where PostgreSQL producers sign. Each row
times the same work twice in one process, trust on (``syncrouter``) and off
(``baseline``), alternating which goes first, so ``ratio`` is the rate kept with trust
on: 0.95 means signing or verifying took 5 % of the rate. The issue's budgets: signing
at most 10 % of ``save()``'s capture rate, verification at most 15 % of replay's.
"""
from __future__ import annotations

from django.test import override_settings

from syncrouter import conf
from syncrouter.capture.seal import seal
from syncrouter.trust import devices, keys

from . import workload as wl
from .benchapp.models import Crf, Visit
from .measure import Row, timed
from .suites import CLIENT, SERVER, copy_to_server, expect, fresh, outgoing, replay


def _enrolled() -> None:
    """Keys for the client and the server (made once), the client enrolled on the server."""
    for alias in (CLIENT, SERVER):
        if keys.load(alias) is None:
            keys.create(alias)
    devices.trust(SERVER, conf.node_for_alias(CLIENT).name, keys.require(CLIENT).public.token)


def _capture(n: int, rows: list, signed: bool, bulk: bool) -> float:
    """Seconds to capture ``rows`` and seal them: on PostgreSQL the seal signs them."""
    fresh([CLIENT, SERVER], n)
    _enrolled()
    with override_settings(SYNCROUTER_SIGN=signed):
        visits = wl.loaded_visits(Visit, CLIENT)
        if bulk:
            return timed(_sealed, wl.bulk_create, Crf, CLIENT, visits, rows)[0]
        return timed(_sealed, wl.save_each, Crf, CLIENT, visits, rows, True)[0]


def _sealed(write, *args) -> None:
    write(*args)
    seal(CLIENT)


def _verified(function, on: bool):
    with override_settings(SYNCROUTER_VERIFY=on):
        return timed(function)


def trust(n: int, repeat: int) -> list[Row]:
    rows = list(wl.crf_rows(n))
    sign = Row("trust.capture.sign", "trust", "Crf.save() x N in one atomic(), signed",
               "the same saves unsigned (SYNCROUTER_SIGN=False)", n,
               notes={"signatures": "one per save(): a group of 1"})
    sign_bulk = Row("trust.capture.sign.bulk_create", "trust", "Crf.objects.bulk_create(N), "
                    "signed", "the same bulk_create unsigned", n,
                    notes={"signatures": "one per 256 rows"})
    copy = Row("trust.copy.verify", "trust", "copy of N signed rows (one signature each), "
               "verified", "the same copy unverified (SYNCROUTER_VERIFY=False)", n)
    verify = Row("trust.replay.verify", "trust", "replay of N signed inserts (one signature "
                 "each), verified", "the same replay unverified", n)
    verify_bulk = Row("trust.replay.verify.bulk_create", "trust", "replay of N inserts "
                      "signed 256 per signature, verified", "the same replay unverified", n)
    for attempt in range(repeat):
        order = (True, False) if attempt % 2 == 0 else (False, True)
        for bulk, capture_row, replay_row in ((False, sign, verify),
                                              (True, sign_bulk, verify_bulk)):
            for on in order:
                seconds = _capture(n, rows, True, bulk) if on else _capture(n, rows, False, bulk)
                (capture_row.syncrouter_seconds if on else capture_row.baseline_seconds).append(
                    seconds)
            for on in order:
                _capture(n, rows, True, bulk)
                seconds, result = _verified(copy_to_server, on)
                expect("copied signed transactions", tuple(result), (n, 0))
                if not bulk:
                    (copy.syncrouter_seconds if on else copy.baseline_seconds).append(seconds)
                seconds, outcomes = _verified(replay, on)
                expect("replay of signed transactions", dict(outcomes), {"inserted": n})
                (replay_row.syncrouter_seconds if on else replay_row.baseline_seconds).append(
                    seconds)
        expect("captured transactions", outgoing(), n)
    return [sign, sign_bulk, copy, verify, verify_bulk]
