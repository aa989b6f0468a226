"""A network cut in the middle of a direct copy to PostgreSQL, then a retry.

The worker process reaches the target through tests/support/tcpproxy.py, which closes
both sockets once a set number of bytes has gone towards the server: the cut
lands inside a batch. The copy must fail with an error naming the target alias,
leave every committed batch marked and nothing else, no client database
transaction (1 to 25 rows here) partly on the target, and finish on a retry in
the same process once the network is back.
"""
import pytest

from tests.support import pg
from tests.support.copyharness import Pair
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.django_db(databases=[])

ROWS = 2000
BATCH = 100


@pytest.fixture
def pair(tmp_path):
    if not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    pair = Pair.create("client", "pgserver", tmp_path)
    try:
        pair.prepare(ROWS)
        yield pair
    finally:
        pair.drop()


def test_cut_connection_fails_clearly_and_retry_completes(pair):
    config = pg.settings_for("postgres")
    with TcpProxy(config["HOST"], int(config["PORT"])) as proxy:
        proxy.cut_after(300_000)  # about a third of the copy
        worker = pair.start("copy", "--batch-size", str(BATCH), "--retry",
                            ports={"pgserver": proxy.port})
        try:
            line = worker.wait_for("interrupted")
            assert line, f"copy did not fail: {worker.seen[-3:]}"
            assert proxy.cuts == 1
            assert line.startswith("interrupted pgserver ")
            assert "interrupted by alias 'pgserver'" in line and "run the copy again" in line
            cut = pair.state()
            cut.check(BATCH)
            assert 0 < len(cut.target) < ROWS

            proxy.restore()
            worker.send("retry")
            done = worker.wait_for("done")
        finally:
            worker.kill()
    print(line)
    copied, present = map(int, done.split()[1:])
    assert (copied, present) == (ROWS - len(cut.target), len(cut.target - cut.marked))
    state = pair.state()
    assert state.target == state.source
    assert state.target_rows == ROWS
    assert state.marked == state.source
