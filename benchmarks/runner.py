"""``python -m benchmarks``: build fresh databases, run every suite, print and save results."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile

logger = logging.getLogger("benchmarks")

QUICK_N = 200
MILLION = 1_000_000


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__,
        epilog="Ratios are syncrouter's rate over the baseline's, both medians of --repeat "
               "runs in this process. --quick asserts correctness only, never timing.")
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("-n", type=int, default=None,
                        help=f"rows per benchmark (default 2000; {QUICK_N} with --quick)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per row (median; >= 3)")
    parser.add_argument("--quick", action="store_true",
                        help="a few hundred rows; scale rows at N and 2N; for CI")
    parser.add_argument("--scale-sizes", default="10000,100000",
                        help="comma-separated N for the scale rows (ignored with --quick)")
    parser.add_argument("--scale-repeat", type=int, default=1,
                        help="repeats of each scale size (default 1: they are long)")
    parser.add_argument("--scale-oldtools-up-to", type=int, default=100_000, metavar="N",
                        help="scale sizes up to N also replay the older tools' way "
                             "(default 100000; slow: about 130 rows/s on PostgreSQL)")
    parser.add_argument("--million", action="store_true",
                        help="add N=1,000,000 to the scale rows (long; never with --quick)")
    parser.add_argument("--only", default="",
                        help="comma-separated suites: capture,copy_replay,scale,e2e,trust,"
                             "atrest (default all)")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="where to write the JSON (default benchmarks/results-<engine>.json)")
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3: rows report the median")
    if args.quick and args.million:
        parser.error("--million cannot be combined with --quick")
    args.n = args.n or (QUICK_N if args.quick else 2000)
    if args.n < 3:
        parser.error("-n must be at least 3 (the end-to-end row splits N over three clients)")
    if args.quick:
        args.sizes = [args.n, 2 * args.n]
    else:
        try:
            args.sizes = [int(s) for s in args.scale_sizes.split(",") if s.strip()]
        except ValueError:
            parser.error(f"--scale-sizes must be integers separated by commas, "
                         f"not {args.scale_sizes!r}")
        args.sizes += [MILLION] if args.million else []
    suites = ["capture", "copy_replay", "scale", "e2e", "trust", "atrest"]
    args.suites = [s for s in args.only.split(",") if s] or suites
    unknown = set(args.suites) - set(suites)
    if unknown:
        parser.error(f"unknown suite(s) in --only: {', '.join(sorted(unknown))}")
    args.json_path = args.json_path or os.path.join(
        os.path.dirname(__file__), f"results-{args.engine}.json")
    return args


def setup_django(engine: str, directory: str) -> None:
    os.environ["SYNCROUTER_BENCH_ENGINE"] = engine
    os.environ["SYNCROUTER_BENCH_DIR"] = directory
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    import django

    django.setup()


def run(args: argparse.Namespace) -> bool:
    """Run the suites; True if every row was measured and every count checked out."""
    from . import atrest, concurrent, databases, report, suites, trust

    databases.create()
    try:
        env = report.environment(args.engine, databases.versions())
        print(report.environment_line(env), flush=True)

        def capture() -> list:
            rows = suites.capture(args.n, args.repeat)
            if args.engine == "postgres":  # SQLite runs one writer at a time anyway
                rows += concurrent.concurrent_writers(args.n, args.repeat)
            return rows

        plan = {"capture": capture,
                "copy_replay": lambda: suites.copy_and_replay(args.n, args.repeat),
                "scale": lambda: suites.scale(args.sizes, args.scale_repeat,
                                              args.scale_oldtools_up_to),
                "e2e": lambda: suites.end_to_end(args.n, args.repeat),
                "trust": lambda: trust.trust(args.n, args.repeat),
                "atrest": lambda: atrest.atrest_suite(args.n, args.repeat)}
        rows, failures = [], {}
        for name in args.suites:
            logger.info("suite %s ...", name)
            try:
                rows += plan[name]()
            except Exception as exc:  # report it, run the other suites
                logger.error("suite %s failed", name, exc_info=True)
                failures[name] = f"{type(exc).__name__}: {exc}"
        print(report.table(rows))
        for name, text in failures.items():
            print(f"\nSUITE FAILED {name}: {text}")
        arguments = {"engine": args.engine, "n": args.n, "repeat": args.repeat,
                     "quick": args.quick, "scale_sizes": args.sizes,
                     "scale_repeat": args.scale_repeat, "suites": args.suites}
        report.write_json(args.json_path, report.document(env, arguments, rows, failures))
        print(f"\nJSON written to {args.json_path}")
        return not failures and not any(row.error for row in rows)
    finally:
        databases.drop()


def main(argv: list[str]) -> int:
    """Exit status 0 when everything was measured, 1 when a suite or a row failed."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("syncrouter").setLevel(logging.WARNING)
    directory = tempfile.mkdtemp(prefix="syncrouter-bench-")
    try:
        setup_django(args.engine, directory)
        return 0 if run(args) else 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
