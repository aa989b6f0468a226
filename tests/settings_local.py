"""tests/settings.py with ``SYNCROUTER_RAW_SQL = "raise"`` and a data migration in edgeapp.

Used by ``tests/capture/test_local_writes.py`` to run Django's own migrate, loaddata and
flush as separate processes. ``SYNCROUTER_LOCAL_PG`` names the PostgreSQL
database ``pgclient`` points at (the test creates and drops it).
"""
import os

from tests.settings import *  # noqa: F401,F403
from tests.settings import DATABASES

SYNCROUTER_RAW_SQL = "raise"
MIGRATION_MODULES = {"edgeapp": "tests.edgeapp.data_migrations"}
if "pgclient" in DATABASES and os.environ.get("SYNCROUTER_LOCAL_PG"):
    DATABASES["pgclient"] = {**DATABASES["pgclient"], "NAME": os.environ["SYNCROUTER_LOCAL_PG"]}
