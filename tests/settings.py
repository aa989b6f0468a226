"""Test settings: two SQLite files and two PostgreSQL databases, one test app.

Pairs under test (client alias -> server alias): client -> server (SQLite -> SQLite),
client -> pgserver (SQLite -> PostgreSQL), pgclient -> pgserver (PostgreSQL -> PostgreSQL).
"""
import os
import tempfile
from pathlib import Path

from tests.support import pg

SQLITE_DIR = Path(os.environ.get("SYNCROUTER_TEST_DIR") or tempfile.mkdtemp(prefix="syncrouter-"))
SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "simple_history",
    "syncrouter",
    "tests.testapp.apps.TestAppConfig",
    "tests.convapp.apps.ConvAppConfig",
    "tests.edgeapp.apps.EdgeAppConfig",
]


def sqlite(name):
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(SQLITE_DIR / f"{name}.sqlite3"),
            "TEST": {"NAME": str(SQLITE_DIR / f"test_{name}.sqlite3"), "DEPENDENCIES": []}}


DATABASES = {"default": {}, "client": sqlite("client"), "server": sqlite("server")}
if pg.AVAILABLE:
    DATABASES["pgclient"] = pg.settings_for("syncrouter_client")
    DATABASES["pgserver"] = pg.settings_for("syncrouter_server")
# The model-based convergence test (tests/replay/test_convergence_model.py) adds laptops, a relay
# (middleman) and a reference node; pytest-django creates them only for tests that ask.
for name in ("lap1", "lap2", "lap3", "relay", "ref"):
    DATABASES[name] = sqlite(name)
if pg.AVAILABLE:
    DATABASES["pgref"] = pg.settings_for("syncrouter_ref")

DATABASE_ROUTERS = ["syncrouter.router.SyncRouter"]
SYNCROUTER_LOCAL_ALIAS = "client"
SYNCROUTER_NODES = {
    "client": {"name": "field-laptop-1", "role": "client"},
    "pgclient": {"name": "field-laptop-pg", "role": "client"},
    "server": {"name": "community-lite", "role": "community"},
    "pgserver": {"name": "community-pg", "role": "community"},
    "lap1": {"name": "laptop-1", "role": "client"},
    "lap2": {"name": "laptop-2", "role": "client"},
    "lap3": {"name": "laptop-3", "role": "client"},
    "relay": {"name": "relay-laptop", "role": "middleman"},
    "ref": {"name": "community-lite", "role": "community"},
    "pgref": {"name": "community-pg", "role": "community"},
}
LOGGING_CONFIG = None

# What django.contrib.admin's system checks require (the conflict ledger's admin is tested).
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

# Trust (syncrouter.trust) is off for the tests of the other features, which play many
# producers by renaming one alias and write inbox rows by hand; tests/trust/test_trust_*.py
# switch it on. Keys the tests create go to a directory of their own.
SYNCROUTER_SIGN = False
SYNCROUTER_VERIFY = False
SYNCROUTER_ENCRYPT_FILES = False
SYNCROUTER_KEY_DIR = SQLITE_DIR / "keys"
