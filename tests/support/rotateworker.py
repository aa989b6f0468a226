"""Payload key rotation in its own process, for the test that kills it.

    python -m tests.support.rotateworker --alias client --database NAME --keys JSON --current k2 \
        [--pause-at N]

Runs ``manage.py syncrouter keys rotate-payloads`` in batches of one row on ``--alias``,
pointed at the database ``NAME`` (the test's). With ``--pause-at N`` it prints
``paused N`` once the N-th batch's UPDATE has run, inside its uncommitted transaction,
and waits there (for a line on stdin) so that the test can SIGKILL it at that point.
The hook uses Django's public ``execute_wrapper``; the library has no test code.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alias", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--keys", required=True, help="SYNCROUTER_PAYLOAD_KEYS as JSON")
    parser.add_argument("--current", required=True)
    parser.add_argument("--pause-at", type=int, default=None)
    args = parser.parse_args()

    import django
    from django.conf import settings

    settings.DATABASES[args.alias]["NAME"] = args.database
    settings.SYNCROUTER_PAYLOAD_KEYS = json.loads(args.keys)
    settings.SYNCROUTER_PAYLOAD_KEY = args.current
    django.setup()

    from django.core.management import call_command
    from django.db import connections

    updates = 0

    def pause(execute, sql, params, many, context):
        nonlocal updates
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE") and 'SET "tx"' in sql:
            updates += 1
            if updates == args.pause_at:
                print(f"paused {updates}", flush=True)
                sys.stdin.readline()
        return result

    with connections[args.alias].execute_wrapper(pause):
        call_command("syncrouter", "keys", "rotate-payloads", "--alias", args.alias,
                     "--batch-size", "1")


if __name__ == "__main__":
    main()
