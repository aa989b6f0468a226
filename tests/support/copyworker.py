"""A copy run in its own process, for tests that kill it or cut its network.

    python -m tests.support.copyworker --source client --target pgserver \
        --db pgserver=syncrouter_copy_x [--port pgserver=54321] prepare --rows 2000 \
        [--max-group 25]
    python -m tests.support.copyworker ... copy --batch-size 50 [--pause-at-mark 3] [--retry]

``SYNCROUTER_TEST_DIR`` holds the SQLite files (see tests/settings.py); ``--db``
and ``--port`` point PostgreSQL aliases at a database and port of the test's
choosing. ``copy`` prints one line per event, flushed, so the test can kill it
at a chosen point:

    ready                      Django is set up, the copy starts
    insert                     the target is about to run its INSERT (batch uncommitted)
    mark <n>                   the n-th batch is committed on the target, not yet marked
    batch <copied> <present>   a batch is marked on the source
    done <copied> <present>
    interrupted <alias> <message>   (then, with --retry, waits for a line on stdin)

The hooks use Django's public ``execute_wrapper``; the library has no test code.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def _pairs(values: list[str]) -> dict[str, str]:
    return dict(value.split("=", 1) for value in values)


def setup(args) -> None:
    import django
    from django.conf import settings

    for alias, name in _pairs(args.db).items():
        settings.DATABASES[alias]["NAME"] = name
    for alias, port in _pairs(args.port).items():
        settings.DATABASES[alias]["PORT"] = port
    django.setup()


def group_sizes(rows: int, largest: int) -> list[int]:
    """Sizes of client database transactions of 1 to ``largest`` rows that add up to ``rows``,
    from a fixed seed: a failing run meets the same groups again."""
    rng, sizes = random.Random(f"groups-{rows}-{largest}"), []
    while rows:
        sizes.append(min(rng.randint(1, largest), rows))
        rows -= sizes[-1]
    return sizes


def prepare(args) -> None:
    """Create the syncrouter tables on both aliases and ``rows`` pending transactions,
    written in client database transactions of 1 to ``max_group`` rows."""
    from django.core.management import call_command
    from django.utils import timezone

    from syncrouter import conf, serialization as ser
    from syncrouter.models import OutgoingTransaction

    for alias in (args.source, args.target):
        call_command("migrate", "syncrouter", database=alias, verbosity=0)
    producer = conf.node_for_alias(args.source).name
    now = timezone.now()
    db_txids = []
    for size in group_sizes(args.rows, args.max_group):
        db_txids += [uuid.uuid4()] * size
    rows = []
    for sequence, db_txid in enumerate(db_txids, 1):
        pk = uuid.uuid4()
        payload = {"v": 1, "model": "testapp.household", "pk": str(pk),
                   "nk": [f"H{sequence:06d}"],
                   "fields": {"household_identifier": f"H{sequence:06d}",
                              "village": "Ramotswa", "gps_lat": -24.87, "gps_lon": 25.87}}
        rows.append(OutgoingTransaction(
            tx=ser.dumps(payload), tx_name="testapp.household", tx_pk=str(pk),
            producer=producer, hostname=conf.hostname(), sequence=sequence,
            db_transaction_id=db_txid, hlc=(int(time.time() * 1000) << 16) + sequence,
            action="I", timestamp=now, hops=ser.dumps([producer])))
    OutgoingTransaction.objects.using(args.source).bulk_create(rows, batch_size=500)


def say(*words) -> None:
    print(*words, flush=True)


def copy(args) -> None:
    from django.db import connections

    from syncrouter.models import OutgoingTransaction
    from syncrouter.transfer.copy import CopyInterrupted

    marks = 0

    def before_mark(execute, sql, params, many, context):
        nonlocal marks
        if sql.lstrip().upper().startswith("UPDATE"):
            marks += 1
            say("mark", marks)
            if marks == args.pause_at_mark:
                time.sleep(60)  # the test kills the process in this window
        return execute(sql, params, many, context)

    def before_insert(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("INSERT"):
            say("insert")
        return execute(sql, params, many, context)

    pending = OutgoingTransaction.objects.using(args.source).filter(is_consumed_server=False)
    with connections[args.source].execute_wrapper(before_mark), \
            connections[args.target].execute_wrapper(before_insert):
        say("ready")
        while True:
            try:
                result = pending.copy_to_incoming_transaction(
                    args.target, batch_size=args.batch_size,
                    progress=lambda r: say("batch", r.copied, r.already_present))
            except CopyInterrupted as exc:
                say("interrupted", exc.alias, str(exc).replace("\n", " "))
                if not args.retry:
                    sys.exit(3)
                sys.stdin.readline()
                continue
            say("done", result.copied, result.already_present)
            return


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--db", action="append", default=[], help="ALIAS=DATABASE_NAME")
    parser.add_argument("--port", action="append", default=[], help="ALIAS=PORT")
    commands = parser.add_subparsers(dest="command", required=True)
    setup_parser = commands.add_parser("prepare")
    setup_parser.add_argument("--rows", type=int, required=True)
    setup_parser.add_argument("--max-group", type=int, default=25)
    run = commands.add_parser("copy")
    run.add_argument("--batch-size", type=int, required=True)
    run.add_argument("--pause-at-mark", type=int, default=0)
    run.add_argument("--retry", action="store_true")
    args = parser.parse_args(argv)
    setup(args)
    {"prepare": prepare, "copy": copy}[args.command](args)


if __name__ == "__main__":
    main()
