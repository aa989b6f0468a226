"""Create, empty and drop the benchmark's own databases."""
from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from syncrouter.state import replaying


def _admin_connection():
    import psycopg

    config = settings.DATABASES["server"]
    return psycopg.connect(dbname="postgres", user=config["USER"], password=config["PASSWORD"],
                           host=config["HOST"], port=config["PORT"], autocommit=True,
                           connect_timeout=5)


def _postgres_names() -> list[str]:
    return [settings.DATABASES[alias]["NAME"] for alias in settings.ALIASES]


def create() -> None:
    """Fresh databases for every alias, migrated (benchapp through ``--run-syncdb``)."""
    if settings.ENGINE == "postgres":
        from psycopg import sql

        with _admin_connection() as admin:
            for name in _postgres_names():
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    for alias in settings.ALIASES:
        call_command("migrate", database=alias, run_syncdb=True, verbosity=0)


def drop() -> None:
    """Close connections and drop the PostgreSQL databases (SQLite files go with their dir)."""
    connections.close_all()
    if settings.ENGINE != "postgres":
        return
    from psycopg import sql

    with _admin_connection() as admin:
        for name in _postgres_names():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def _tables() -> list[str]:
    """Every table of syncrouter and benchapp, children before parents."""
    tables = []
    for label in ("benchapp", "syncrouter"):
        models = apps.get_app_config(label).get_models()
        tables += sorted((m._meta.db_table for m in models),
                         key=lambda t: ("visit" in t, t))
    return tables


def reset(*aliases: str) -> None:
    """Empty every benchmark and syncrouter table on ``aliases``.

    Raw SQL under ``replaying()``: nothing is captured and the raw-SQL guard, which
    warns about writes that bypass capture, knows this one is deliberate.
    """
    for alias in aliases:
        connection = connections[alias]
        quoted = [connection.ops.quote_name(t) for t in _tables()]
        with replaying(alias), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"TRUNCATE {', '.join(quoted)}")
            else:
                for table in quoted:
                    cursor.execute(f"DELETE FROM {table}")


def versions() -> dict:
    """Database server versions, by vendor."""
    connection = connections["server"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            return {"postgresql": cursor.fetchone()[0]}
        cursor.execute("SELECT sqlite_version()")
        return {"sqlite": cursor.fetchone()[0]}
