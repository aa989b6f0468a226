"""The four-node chain (laptops -> middleman -> community -> FILE -> central).

The scenario in ``tests/transfer/chain_scenario.py`` needs the extra aliases of
``tests/settings_chain.py``; pytest-django takes one settings module per session,
so it runs here in a pytest subprocess under those settings.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import pg


@pytest.mark.django_db(databases=[])
def test_chain_under_its_own_settings():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SYNCROUTER_TEST_DB_SUFFIX": pg.SUFFIX + "_chain"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--ds", "tests.settings_chain", str(root / "tests" / "transfer" / "chain_scenario.py")],
        cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
