"""``manage.py syncrouter ...``: each subcommand, its output and its exit code."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from syncrouter.models import IncomingTransaction, OutgoingTransaction
from tests.support import factories
from tests.support.checksum import node_checksums

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lite():
    factories.load_symptoms("client")
    factories.load_symptoms("server")


def run(*args, stdout=None) -> tuple[int, str]:
    """(exit code, output) of ``manage.py syncrouter *args`` in this process."""
    out = stdout or io.StringIO()
    try:
        call_command("syncrouter", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


@pytest.mark.usefixtures("lite")
def test_push_then_replay(tmp_path):
    factories.study("client", 1, 2, 1)
    total = OutgoingTransaction.objects.using("client").count()
    assert run("push", "--source", "client", "--target", "server") == (
        0, f"client -> server: {total} copied, 0 already there.\n")
    assert run("push") == (0, "client -> server: 0 copied, 0 already there.\n")
    code, out = run("replay", "--target", "server", "--allow-own-host")
    assert code == 0 and "inserted" in out
    assert not IncomingTransaction.objects.using("server").filter(is_consumed=False).exists()


@pytest.mark.usefixtures("lite")
def test_sync_pushes_and_replays():
    factories.study("client", 1, 1, 1)
    code, out = run("sync", "--allow-own-host", "--batch-size", "3")
    assert code == 0, out
    assert "client -> server: 5 copied" in out and "replay on server:" in out
    assert IncomingTransaction.objects.using("server").filter(is_consumed=True).count() == 5


@pytest.mark.usefixtures("lite")
def test_rows_in_error_give_exit_code_1_in_replay_and_status():
    factories.study("client", 1, 1, 1)
    run("push")
    IncomingTransaction.objects.using("server").filter(sequence=2).update(tx="{not json")
    code, out = run("replay", "--target", "server", "--allow-own-host")
    errors = IncomingTransaction.objects.using("server").filter(is_error=True).count()
    assert errors >= 1  # the row, and the rest of its database transaction
    assert code == 1 and f"{errors} error" in out and "deferred, in conflict or in error" in out
    code, out = run("status", "--alias", "server")
    assert code == 1
    header, row = [line.split() for line in out.splitlines()[3:5]]
    assert header[:7] == ["producer", "contiguous", "highest", "gaps", "pending", "deferred",
                          "errors"]
    assert row[0] == "field-laptop-1" and row[6] == str(errors)


@pytest.mark.usefixtures("lite")
def test_status_shows_gaps_and_outbox():
    factories.study("client", 1, 1, 1)
    outbox = OutgoingTransaction.objects.using("client")
    outbox.filter(sequence__in=[2, 3, 5]).copy_to_incoming_transaction("server")
    code, out = run("status", "--alias", "server")
    assert code == 0, out
    producer, contiguous, highest, gaps = out.splitlines()[4].split()[:4]
    assert (producer, contiguous, highest, gaps) == ("field-laptop-1", "0", "5", "1,4")
    code, out = run("status")
    lines = out.splitlines()
    assert lines[0] == "field-laptop-1 (client, alias 'client')"
    assert lines[-1].split() == ["field-laptop-1", "5", "5", "2", "5"]


@pytest.mark.parametrize("args, problem", [
    (("push", "--target", "nowhere"), "'nowhere' is not configured"),
    (("push", "--source", "server", "--target", "server"), "both 'server'"),
    (("replay", "--target", "client"), "has the role 'client'"),
    (("import", "x.zip", "--target", "default"), "'default' is not configured"),
])
def test_usage_errors_give_exit_code_2(args, problem):
    code, out = run(*args)
    assert code == 2 and problem in out


@pytest.mark.usefixtures("lite")
def test_export_import_by_file(tmp_path):
    factories.study("client", 2, 1, 1)
    path = tmp_path / "to-central.zip"
    code, out = run("export", str(path))
    assert code == 0 and "10 transactions from 1 producers" in out and "left pending" in out
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(path.read_bytes()[:-50])
    code, out = run("import", str(damaged), str(path), "--target", "server")
    assert code == 4 and "1 of 2 files refused" in out
    assert f"{path}: 10 imported into server, 0 already there." in out
    run("replay", "--target", "server", "--allow-own-host")
    assert node_checksums("server")["testapp.crfone"] == node_checksums("client")["testapp.crfone"]
    code, out = run("export", str(path), "--mark")
    assert code == 0 and "marked sent" in out
    assert run("export", str(path))[1].startswith(f"{path}: 0 transactions")


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.usefixtures("lite")
def test_progress_line_only_on_a_terminal():
    factories.study("client", 1, 1, 1)
    terminal = Terminal()
    assert run("push", "--batch-size", "2", stdout=terminal)[0] == 0
    assert "\rclient -> server: 2 (0 already there) (" in terminal.getvalue()
    assert "/s)" in terminal.getvalue()
    OutgoingTransaction.objects.using("client").update(is_consumed_server=False)
    code, out = run("push", "--batch-size", "2")
    assert "\r" not in out and out == "client -> server: 0 copied, 5 already there.\n"


def manage(*args) -> subprocess.CompletedProcess:
    """``django-admin syncrouter *args`` as its own process, on the chain settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings_chain"}
    return subprocess.run([sys.executable, "-m", "django", "syncrouter", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.django_db(databases=[])
def test_unreachable_target_exits_3():
    done = manage("sync", "--source", "middleman", "--target", "offline", "--timeout", "1")
    assert done.returncode == 3, done.stderr
    assert "Cannot reach 'offline'" in done.stderr


@pytest.mark.django_db(databases=[])
def test_watch_backs_off_then_gives_up_after_max_cycles():
    done = manage("sync", "--target", "offline", "--watch", "--interval", "0",
                  "--max-cycles", "3", "--timeout", "1")
    assert done.returncode == 3, done.stderr
    assert done.stdout.count("next try in 0s") == 2


@pytest.mark.django_db(databases=[])
def test_usage_error_exit_code_from_the_command_line():
    assert manage("status", "--alias", "nowhere").returncode == 2
    assert manage("frobnicate").returncode == 2


@pytest.mark.django_db(databases=[])
@pytest.mark.parametrize("role", ["client", "middleman", "community", "central"])
def test_settings_examples_pass_django_checks(role, tmp_path):
    """The example settings stay true: Django and syncrouter's checks pass on each, once
    the node has made its key (without one, the check warns)."""
    import importlib

    module = importlib.import_module(f"settings_examples.{role}")
    assert module.SYNCROUTER_NODES[module.SYNCROUTER_LOCAL_ALIAS]["role"] == role
    assert set(module.SYNCROUTER_NODES) <= set(module.DATABASES)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "",
           "SYNCROUTER_DATA_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "django", "syncrouter", "keys", "init"],
                   cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": f"settings_examples.{role}"},
                   capture_output=True, text=True, timeout=120, check=True)
    done = subprocess.run(
        [sys.executable, "-m", "django", "check", "--fail-level", "WARNING",
         "--settings", f"settings_examples.{role}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout
