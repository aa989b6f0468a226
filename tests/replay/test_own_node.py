"""A node's own transactions are those produced under its name (issue 15, item 7).

Not those captured on the same machine: laptops cloned from one image share a
hostname, and so do the processes of these tests, where every laptop and
server runs on one host. A replay that leaves own rows untouched says so: a
warning and exit code 1 from the command.
"""
import io
import logging
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings, strategies as st

from syncrouter import conf
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from syncrouter.replay import own
from tests.support import factories
from tests.support.checksum import node_checksums
from tests.support.replay import producer
from tests.testapp.models import Household


def push(nodes):
    return OutgoingTransaction.objects.using(nodes.client).filter(
        is_consumed_server=False).copy_to_incoming_transaction(nodes.server)


def pending(alias):
    return IncomingTransaction.objects.using(alias).filter(is_consumed=False)


def run(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("syncrouter", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def test_a_laptop_on_the_servers_host_is_replayed(nodes):
    """The default check_hostname=True: every row here comes from this very host, and
    from another node, so all of it applies (it used to be skipped, every row)."""
    factories.study(nodes.client, 1, 2, 1)
    push(nodes)
    assert set(IncomingTransaction.objects.using(nodes.server).values_list(
        "hostname", flat=True)) == {conf.hostname()}
    messages = pending(nodes.server).deserialize()
    assert messages.counts.get("skipped", 0) == 0 and messages.counts["inserted"] > 0
    assert node_checksums(nodes.server) == node_checksums(nodes.client)


def test_a_custom_device_is_own_by_its_name(nodes):
    with producer(nodes.client, "tablet-9"):
        factories.household(nodes.client, "H9")
    factories.household(nodes.client, "H1")
    push(nodes)
    laptop = conf.node_for_alias(nodes.client).name
    messages = pending(nodes.server).deserialize(custom_device="tablet-9")
    assert sorted((m.producer, m.outcome, m.text) for m in messages) == [
        (laptop, "inserted", ""), ("tablet-9", "skipped", own.SKIPPED)]
    device = SimpleNamespace(name="tablet-9", role="community")
    assert [m.outcome for m in pending(nodes.server).deserialize(custom_device=device)] == [
        "skipped"]
    messages = pending(nodes.server).deserialize(custom_device="tablet-9", check_hostname=False)
    assert [m.outcome for m in messages] == ["inserted"]


@pytest.fixture
def lite():
    factories.load_symptoms("client")
    factories.load_symptoms("server")


@pytest.mark.usefixtures("lite")
def test_replay_command_is_loud_about_own_rows(caplog):
    """Rows under the server's own name (two nodes given one name): the command warns,
    exits 1 and leaves them pending; the rest applies; --allow-own-host applies them."""
    server = conf.node_for_alias("server").name
    with producer("client", server):
        factories.household("client", "H-own")
    factories.household("client", "H-laptop")
    push(SimpleNamespace(client="client", server="server"))
    with caplog.at_level(logging.WARNING, logger="syncrouter.command"):
        code, out = run("replay", "--target", "server")
    assert code == 1 and "1 inserted, 1 skipped" in out
    assert (f"1 transactions on 'server' were left untouched as this node's own: their "
            f"producer is {server!r}") in out
    assert [r.getMessage() for r in caplog.records if r.name == "syncrouter.command"] == [
        out.splitlines()[-1]]
    assert list(pending("server").values_list("producer", flat=True)) == [server]
    assert run("replay", "--target", "server", "--allow-own-host") == (
        0, "replay on server: 1 inserted\n")


NAMES = ["community-lite", "field-laptop-1", "clone-a", "clone-b"]


@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(["same-host", "other"])),
                min_size=1, max_size=6))
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_own_is_exactly_the_node_name(lite, rows):
    """Whatever the producers and hostnames: a row is left untouched exactly when its
    producer is the replaying node's name, and the command exits 1 exactly then."""
    for alias in ("client", "server"):
        Household.objects.using(alias).all().delete()
        for model in (OutgoingTransaction, IncomingTransaction):
            model.objects.using(alias).all().delete()
    for n, (name, host) in enumerate(rows):
        with producer("client", name):
            factories.household("client", f"G{n}")
        if host == "other":
            OutgoingTransaction.objects.using("client").filter(producer=name).update(
                hostname="another-machine")
    push(SimpleNamespace(client="client", server="server"))
    code, _ = run("replay", "--target", "server")
    own_rows = {f"G{n}" for n, (name, _) in enumerate(rows) if name == "community-lite"}
    assert code == (1 if own_rows else 0)
    assert set(Household.objects.using("server").values_list(
        "household_identifier", flat=True)) == {f"G{n}" for n in range(len(rows))} - own_rows


def test_a_node_name_must_fit_the_producer_column(settings):
    """A name the producer column cannot hold would fail every captured save on PostgreSQL
    and be refused by every inbox: it is a configuration error, found by the checks."""
    from syncrouter.checks import check_settings
    from syncrouter.exceptions import SyncError

    settings.SYNCROUTER_NODES = {**settings.SYNCROUTER_NODES,
                                 "client": {"name": "n" * 201, "role": "client"}}
    with pytest.raises(SyncError, match="'client' is 'nnn.*'; a node name is 1 to 200 char"):
        conf.node_for_alias("client")
    assert [error.id for error in check_settings()] == ["syncrouter.E004"]
