"""Crash safety of the direct copy with real processes and SIGKILL (guarantee 2).

A worker process copies 2,000 transactions, written in client database
transactions of 1 to 25 rows, in batches of 10 (run on to the end of a group)
and is killed with SIGKILL at random points: a random number of progress lines
in, then after a random delay between a microsecond and 5 ms. Some runs pause
the worker on purpose between a batch's target commit and its source mark, and
are killed there. After every kill the tables must be consistent, and the
target and the source marks must each hold every client database transaction
whole or not at all; after the last run the target holds every transaction
exactly once and the source marks exactly those.
Set SYNCROUTER_CRASH_SEED to replay a run.
"""
import collections
import os
import random
import time

import pytest

from tests.support import pg
from tests.support.copyharness import Pair

pytestmark = pytest.mark.django_db(databases=[])

ROWS = 2000
BATCH = 10
RANDOM_KILLS = 23
WINDOW_KILLS = 4
SEED = int(os.environ.get("SYNCROUTER_CRASH_SEED") or random.randrange(1 << 32))


@pytest.fixture(params=[("client", "pgserver"), ("client", "server")],
                ids=["sqlite-postgres", "sqlite-sqlite"])
def pair(request, tmp_path):
    source, target = request.param
    if "pg" in source + target and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    pair = Pair.create(source, target, tmp_path)
    try:
        pair.prepare(ROWS)
        yield pair
    finally:
        pair.drop()


def landing(last_line: str, state) -> str:
    """Where a kill landed, from the worker's last line and the tables."""
    event = last_line.split()[0]
    if event == "mark" and state.in_window:
        return "between target commit and source mark"
    return {"ready": "reading or copying a batch", "insert": "target transaction open",
            "mark": "marking the source", "batch": "after a batch, next page",
            "(nothing)": "starting up"}.get(event, event)


def kill_somewhere(pair, rng, window: bool):
    """One worker run killed at a chosen point; returns (was it running, its last line)."""
    if window:
        mark = rng.randint(1, 3)
        worker = pair.start("copy", "--batch-size", str(BATCH), "--pause-at-mark", str(mark))
        if not worker.wait_for("mark", mark):
            worker.finish()
            raise AssertionError(f"seed {SEED}: copy ended before mark {mark}: "
                                 f"{worker.seen[-3:]} {worker.stderr}")
    else:
        worker = pair.start("copy", "--batch-size", str(BATCH))
        event = rng.choice(["ready", "insert", "mark", "batch"])
        if worker.wait_for(event, 1 if event == "ready" else rng.randint(1, 3)):
            time.sleep(10 ** rng.uniform(-6, -2.3))
    return worker.kill(), worker.last


def test_sigkill_at_random_points_loses_and_duplicates_nothing(pair):
    rng = random.Random(f"{SEED}-{pair.source}-{pair.target}")
    plan = [True] * WINDOW_KILLS + [False] * RANDOM_KILLS
    rng.shuffle(plan)
    landed = collections.Counter()
    for window in plan:
        killed, last = kill_somewhere(pair, rng, window)
        state = pair.state()
        state.check(BATCH)
        if killed:
            landed[landing(last, state)] += 1
        if window:
            assert killed and state.in_window, f"seed {SEED}: pause at mark did not hold"
    print(f"seed {SEED}, {pair.source}->{pair.target}, kills landed: {dict(landed)}")

    worker = pair.start("copy", "--batch-size", str(BATCH))
    assert worker.finish() == 0, worker.stderr
    assert worker.last.startswith("done")
    state = pair.state()
    assert len(state.source) == ROWS
    assert state.target == state.source, f"seed {SEED}: target differs from source"
    assert state.target_rows == ROWS
    assert state.marked == state.source
    assert sum(landed.values()) >= 25, f"seed {SEED}: only {dict(landed)} kills hit a live copy"
