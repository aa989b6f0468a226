"""Import batch files in a process of their own and report what each cost in memory.

    python -m tests.importworker [--max-line BYTES] FILE [FILE ...]

``SYNCROUTER_TEST_DIR`` holds the SQLite files (see tests/settings.py); the
worker migrates alias ``server`` there, then imports each file into it and
prints one JSON line per file: ``{"path", "error", "traced", "rss"}``, where
``rss`` is the growth of the process's peak resident memory during an import
(Linux's VmHWM, reset before it through ``/proc/self/clear_refs``; null
elsewhere) and ``traced`` the peak of Python allocations (tracemalloc) during
a second import of the same file.
"""
from __future__ import annotations

import json
import os
import sys
import tracemalloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def _vm_hwm() -> int | None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def rss_growth(run) -> int | None:
    """How far ``run()`` raised the peak resident memory above where it stood before."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM := current resident size
        before = _vm_hwm()
    except OSError:
        before = None
    run()
    after = _vm_hwm() if before is not None else None
    return after - before if after is not None else None


def traced_peak(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str]) -> None:
    import argparse

    import django
    from django.conf import settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--max-line", type=int, default=None,
                        help="SYNCROUTER_MAX_TRANSACTION_BYTES for this run")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    if args.max_line:
        settings.SYNCROUTER_MAX_TRANSACTION_BYTES = args.max_line
    django.setup()
    from django.core.management import call_command

    from syncrouter.exceptions import SyncError
    from syncrouter.transfer.files import import_transactions

    call_command("migrate", database="server", verbosity=0)
    for path in args.paths:
        error = None

        def run() -> None:
            nonlocal error
            try:
                import_transactions(path, "server")  # noqa: B023 (run within the loop)
            except SyncError as exc:
                error = str(exc)

        rss = rss_growth(run)  # separately: tracemalloc's bookkeeping costs memory too
        traced = traced_peak(run)
        print(json.dumps({"path": path, "error": error, "traced": traced, "rss": rss}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
