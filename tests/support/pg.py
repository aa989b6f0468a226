"""Where the tests find PostgreSQL, and whether they may go on without it.

``SYNCROUTER_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432``)
names the server. On a developer machine without it, PostgreSQL tests skip with
the reason; with ``CI=true`` an unreachable server fails the run.
"""
import os
from urllib.parse import urlparse

URL = os.environ.get("SYNCROUTER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Lets parallel runs on one server use separate test databases.
SUFFIX = os.environ.get("SYNCROUTER_TEST_DB_SUFFIX", "")


def settings_for(name: str) -> dict:
    url = urlparse(URL)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": url.username or "postgres",
        "PASSWORD": url.password or "",
        "HOST": url.hostname or "127.0.0.1",
        "PORT": str(url.port or 5432),
        "OPTIONS": {"connect_timeout": 5},
        "TEST": {"NAME": f"test_{name}{SUFFIX}", "DEPENDENCIES": []},
    }


def unreachable_reason() -> str | None:
    """None if PostgreSQL answers, else why not."""
    import psycopg

    config = settings_for("postgres")
    try:
        psycopg.connect(dbname="postgres", user=config["USER"], password=config["PASSWORD"],
                        host=config["HOST"], port=config["PORT"], connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {URL}: {exc}"
    return None


REASON = unreachable_reason()
AVAILABLE = REASON is None
