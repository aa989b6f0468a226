"""Django settings of the benchmark runner: its own databases, never the tests' ones.

The runner sets, before ``django.setup()``:

* ``SYNCROUTER_BENCH_ENGINE``: ``sqlite`` (files in ``SYNCROUTER_BENCH_DIR``) or
  ``postgres`` (databases ``syncrouter_bench_<alias><SYNCROUTER_BENCH_DB_SUFFIX>`` on
  ``SYNCROUTER_BENCH_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432``).

Aliases: ``client``, ``client2``, ``client3`` (field laptops) and ``server``.
"""
import os
from pathlib import Path
from urllib.parse import urlparse

ENGINE = os.environ.get("SYNCROUTER_BENCH_ENGINE", "sqlite")
SQLITE_DIR = Path(os.environ.get("SYNCROUTER_BENCH_DIR", "."))
POSTGRES_URL = os.environ.get("SYNCROUTER_BENCH_POSTGRES",
                              "postgresql://postgres@127.0.0.1:5432")
DB_SUFFIX = os.environ.get("SYNCROUTER_BENCH_DB_SUFFIX", "")
CLIENTS = ("client", "client2", "client3")
ALIASES = CLIENTS + ("server",)


def postgres(name: str) -> dict:
    url = urlparse(POSTGRES_URL)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": name,
            "USER": url.username or "postgres", "PASSWORD": url.password or "",
            "HOST": url.hostname or "127.0.0.1", "PORT": str(url.port or 5432)}


def database(alias: str) -> dict:
    if ENGINE == "postgres":
        return postgres(f"syncrouter_bench_{alias}{DB_SUFFIX}")
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(SQLITE_DIR / f"{alias}.sqlite3")}


SECRET_KEY = "benchmarks-only"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["syncrouter", "benchmarks.benchapp.apps.BenchAppConfig"]
DATABASES = {"default": {}, **{alias: database(alias) for alias in ALIASES}}
DATABASE_ROUTERS = ["syncrouter.router.SyncRouter"]
SYNCROUTER_LOCAL_ALIAS = "client"
SYNCROUTER_NODES = {
    **{alias: {"name": f"bench-{alias}", "role": "client"} for alias in CLIENTS},
    "server": {"name": "bench-server", "role": "community"},
}
LOGGING_CONFIG = None
# The suites measure the pipeline with trust off; the "trust" suite switches signing and
# verification on and off around the same work to measure what they cost.
SYNCROUTER_SIGN = False
SYNCROUTER_VERIFY = False
SYNCROUTER_ENCRYPT_FILES = False
SYNCROUTER_KEY_DIR = SQLITE_DIR / "keys"
