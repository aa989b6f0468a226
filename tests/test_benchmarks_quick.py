"""``python -m benchmarks --quick`` runs to the end and reports every row.

Run in a subprocess (the benchmarks have their own settings and databases), on
SQLite always and on PostgreSQL when it is reachable (required under CI=true).
No timing is asserted: the machine is shared and timings are the report, not the test.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import pg

ROOT = Path(__file__).resolve().parent.parent
QUICK_N = 150
COMMON_ROWS = {
    "capture.save.atomic", "capture.save.autocommit", "capture.bulk_create", "capture.update",
    "oldtools.capture", "copy.vs_bulk_create", "replay.vs_bulk_create", "replay.vs_oldtools",
    "replay.updates", "replay.updates.vs_oldtools", "e2e.clients_to_server",
    *(f"scale.replay.{n}{old}" for n in (QUICK_N, 2 * QUICK_N) for old in ("", ".vs_oldtools")),
    "trust.capture.sign", "trust.capture.sign.bulk_create", "trust.copy.verify",
    "trust.replay.verify", "trust.replay.verify.bulk_create",
    "atrest.capture.save", "atrest.replay",
}
ROWS = {"sqlite": COMMON_ROWS, "postgres": COMMON_ROWS | {"copy.vs_copy", "capture.concurrent"}}

pytestmark = pytest.mark.django_db(databases=[])  # the subprocess owns its databases


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_quick_run_reports_every_row(engine, tmp_path):
    if engine == "postgres" and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    out = tmp_path / "bench.json"
    env = dict(os.environ, SYNCROUTER_BENCH_POSTGRES=pg.URL,
               SYNCROUTER_BENCH_DB_SUFFIX=f"_quick{pg.SUFFIX}")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--engine", engine, "-n", str(QUICK_N),
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["failed_suites"] == {}
    assert set(data["rows"]) == ROWS[engine]
    for key, row in data["rows"].items():
        assert row["repeats"] >= (1 if key.startswith("scale.") else 3), key
        assert row["syncrouter_seconds"] and row["baseline_seconds"], key
        assert row["error"] is None and row["ratio"] > 0, key
    assert data["rows"]["capture.save.atomic"]["notes"]["transactions"] == QUICK_N
    assert data["rows"]["e2e.clients_to_server"]["notes"]["counts_match"] is True
    scale_notes = data["rows"][f"scale.replay.{QUICK_N}"]["notes"]
    if sys.platform == "linux":  # RSS comes from /proc
        assert scale_notes["syncrouter_rss_peak_mb"] >= scale_notes["syncrouter_rss_start_mb"] > 0
    env_facts = data["environment"]
    assert env_facts["cpu_count"] and env_facts["django"] and env_facts["sqlite"]
    assert bool(env_facts["postgresql"]) == (engine == "postgres")
    assert f"| capture.save.atomic | {QUICK_N} |" in done.stdout


def test_bad_arguments_are_refused():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--repeat", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--repeat must be at least 3" in done.stderr
