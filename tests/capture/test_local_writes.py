"""Django's own flush, loaddata and migrations (issue 15, item 8; ``capture/local.py``).

None of them is refused under ``SYNCROUTER_RAW_SQL = "raise"``; none of them is
captured; each says so in one line, naming what it wrote. Fixture rows can be
sent on with ``capture_existing``.
"""
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import connections, migrations
from django.db.migrations.loader import MigrationLoader

from syncrouter.capture.local import capture_existing
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from tests.edgeapp.models import Village
from tests.support import factories, pg
from tests.support.replay import TRANSACTIONAL

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "edgeapp" / "fixtures" / "villages.json"


@pytest.fixture(params=["client", "pgclient"])
def alias(request, settings):
    if request.param not in connections.settings:
        pytest.skip(pg.REASON)
    settings.SYNCROUTER_RAW_SQL = "raise"
    return request.param


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncrouter.rawsql"]


def test_flush_is_one_line_and_never_refused(alias, caplog):
    factories.load_symptoms(alias)
    factories.household(alias)
    with caplog.at_level(logging.INFO, logger="syncrouter.rawsql"):
        call_command("flush", database=alias, interactive=False, verbosity=0,
                     inhibit_post_migrate=True)
    [line] = lines(caplog)
    assert line.startswith("flush emptied ") and f"registered tables on {alias!r}" in line
    assert "(auth_group, " in line and "takes sequence 1 again" in line
    assert not OutgoingTransaction.objects.using(alias).exists()


def test_loaddata_is_not_captured_and_says_so_in_one_line(alias, caplog):
    with caplog.at_level(logging.INFO, logger="syncrouter.rawsql"):
        call_command("loaddata", str(FIXTURE), database=alias, verbosity=0)
    [line] = lines(caplog)
    assert line.startswith(f"loaddata wrote 4 rows of registered models on {alias!r} without "
                           "capturing them (auth.group: 1, auth.user: 1, edgeapp.village: 2)")
    assert "capture_existing" in line
    assert User.objects.using(alias).get().groups.get().name == "field staff"
    assert not OutgoingTransaction.objects.using(alias).exists()  # M2M rows neither
    Village.objects.using(alias).create(name="Lobatse", district="South East")
    assert OutgoingTransaction.objects.using(alias).count() == 1  # capture is back on


def test_capture_existing_sends_fixture_rows_on(nodes, settings):
    settings.SYNCROUTER_RAW_SQL = "raise"
    call_command("loaddata", str(FIXTURE), database=nodes.client, verbosity=0)
    assert capture_existing(Village.objects.using(nodes.client).all()) == 2
    call_command("loaddata", str(FIXTURE), database=nodes.server, verbosity=0)
    Village.objects.using(nodes.server).filter(name="Tlokweng").delete()
    OutgoingTransaction.objects.using(nodes.client).copy_to_incoming_transaction(nodes.server)
    messages = IncomingTransaction.objects.using(nodes.server).deserialize(
        check_hostname=False)
    assert sorted((m.key, m.outcome) for m in messages) == [
        (["Ramotswa"], "skipped"), (["Tlokweng"], "inserted")]
    assert set(Village.objects.using(nodes.server).values_list("name", flat=True)) == {
        "Ramotswa", "Tlokweng"}


def forwards(apps, schema_editor):
    village = apps.get_model("edgeapp", "Village").objects.using(schema_editor.connection.alias)
    village.create(name="Kanye", district="Southern")
    village.bulk_create([village.model(name="Mochudi", district="Kgatleng")])
    village.filter(name="Kanye").update(district="South East")
    group = apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias)
    group.create(name="migrated")


def failing(apps, schema_editor):
    apps.get_model("edgeapp", "Village").objects.using(schema_editor.connection.alias).create(
        name="Half", district="-")
    raise RuntimeError("half way")


def data_migration(code) -> migrations.Migration:
    migration = migrations.Migration("0002_villages", "edgeapp")
    migration.operations = [
        migrations.RunPython(code),
        migrations.RunSQL("DELETE FROM edgeapp_village WHERE name = 'Mochudi'")]
    return migration


def apply(alias: str, migration) -> None:
    connection = connections[alias]
    state = MigrationLoader(connection).project_state()
    with connection.schema_editor(atomic=True) as editor:
        migration.apply(state, editor)


@TRANSACTIONAL
def test_a_data_migration_is_not_captured_and_named_in_one_line(alias, caplog):
    """Historical models are not the registered classes: the guard used to call their
    ORM writes raw SQL, refuse them under "raise", and bulk_create failed outright."""
    with caplog.at_level(logging.INFO, logger="syncrouter.rawsql"):
        apply(alias, data_migration(forwards))
    [line] = lines(caplog)
    assert line == (
        f"migration edgeapp.0002_villages wrote registered tables on {alias!r} without capture "
        "(DELETE edgeapp_village x1, INSERT auth_group x1, INSERT edgeapp_village x2, UPDATE "
        "edgeapp_village x1): data migrations are not replicated, since every node runs the "
        "same migrations.")
    assert list(Village.objects.using(alias).values_list("name", "district")) == [
        ("Kanye", "South East")]
    assert Group.objects.using(alias).filter(name="migrated").exists()
    assert not OutgoingTransaction.objects.using(alias).exists()
    caplog.clear()
    with pytest.raises(RuntimeError, match="half way"):
        apply(alias, data_migration(failing))
    assert lines(caplog) == []  # rolled back: nothing to report
    Village.objects.using(alias).create(name="Lobatse", district="South East")
    assert OutgoingTransaction.objects.using(alias).count() == 1  # capture is back on


# ---------------------------------------------------------------- Django's own commands

def django_admin(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "django", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.django_db(databases=[])
@pytest.mark.parametrize("alias", ["client", "pgclient"])
def test_migrate_loaddata_flush_as_commands_under_raise(alias, tmp_path):
    """``django-admin migrate``, ``loaddata`` and ``flush`` in processes of their own, with
    SYNCROUTER_RAW_SQL = "raise", on fresh databases: each exits 0 and says what it wrote
    in one line; nothing is captured."""
    if alias == "pgclient" and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    name = f"syncrouter_local_{secrets.token_hex(4)}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SYNCROUTER_TEST_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "tests.settings_local", "SYNCROUTER_LOCAL_PG": name}
    config = pg.settings_for("postgres")
    server = dict(user=config["USER"], password=config["PASSWORD"], host=config["HOST"],
                  port=config["PORT"], autocommit=True)
    if alias == "pgclient":
        with psycopg.connect(dbname="postgres", **server) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        steps = {
            "migrate": (["migrate", "--database", alias, "-v", "0"],
                        "migration edgeapp.0002_villages wrote registered tables"),
            "loaddata": (["loaddata", "villages", "--database", alias, "-v", "0"],
                         "loaddata wrote 4 rows of registered models"),
            "flush": (["flush", "--database", alias, "--noinput", "-v", "0"],
                      "flush emptied"),
        }
        for step, (args, line) in steps.items():
            done = django_admin(*args, env=env)
            assert done.returncode == 0, (step, done.stderr)
            assert done.stderr.count(line) == 1, (step, done.stderr)
            assert "bypasses syncrouter capture" not in done.stderr, step
            if step == "loaddata":
                count = django_admin(
                    "shell", "-v", "0", "-c", "from syncrouter.models import "
                    f"OutgoingTransaction as O; print(O.objects.using({alias!r}).count())",
                    env=env)
                assert count.stdout.split() == ["0"], count.stderr
    finally:
        if alias == "pgclient":
            with psycopg.connect(dbname="postgres", **server) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
