"""A captured writer (or sealer) in its own process, driven line by line, for tests that
hold its transaction open across another process's work or kill it.

    python -m tests.support.writeworker --alias pgclient --db pgclient=test_syncrouter_client

Commands on stdin, one per line; each is answered on stdout with ``ok <command>``
once done (flushed), so the test knows where the process stands when it kills it:

    begin                 open a transaction (an outer ``atomic()``)
    household <ident>     create a household (captured)
    commit | rollback     end the open transaction
    seal                  ``seal(alias)``; prints ``sealing`` and stops for good just
                          before it stores the numbers (the test kills it there)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def say(*words) -> None:
    print(*words, flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alias", required=True)
    parser.add_argument("--db", required=True, help="ALIAS=DATABASE_NAME")
    args = parser.parse_args(argv)
    import django
    from django.conf import settings

    alias, name = args.db.split("=", 1)
    settings.DATABASES[alias]["NAME"] = name
    django.setup()
    from django.db import connections, transaction

    from syncrouter.capture.seal import seal
    from tests.support import factories

    def stop_before_numbers(execute, sql, params, many, context):
        if sql.lstrip().startswith("UPDATE") and "SET sequence" in sql:
            say("sealing")
            time.sleep(600)  # killed here
        return execute(sql, params, many, context)

    block = None
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "begin":
            block = transaction.atomic(using=args.alias)
            block.__enter__()
        elif command == "household":
            factories.household(args.alias, rest[0])
        elif command in ("commit", "rollback"):
            error = None if command == "commit" else RuntimeError("rolled back on purpose")
            try:
                block.__exit__(type(error) if error else None, error, None)
            finally:
                block = None
        elif command == "seal":
            with connections[args.alias].execute_wrapper(stop_before_numbers):
                seal(args.alias)
        else:
            raise SystemExit(f"unknown command {command!r}")
        say("ok", command)


if __name__ == "__main__":
    main()
