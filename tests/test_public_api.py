"""The public API: ``import syncrouter`` gives every documented name, lazily; outcomes,
policies and resolutions are string enums equal to the strings they always were."""
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import syncrouter
from syncrouter import (
    ConflictPolicy,
    IncomingTransaction,
    OutgoingTransaction,
    ReplayOutcome,
    Resolution,
)
from syncrouter.replay import messages
from tests.support import factories


def test_import_loads_no_model_before_django_is_set_up():
    """``import syncrouter`` in a settings file or an app's __init__ imports no Django models."""
    code = ("import sys, syncrouter; "
            "print(sorted(m for m in sys.modules if m.startswith(('syncrouter.', 'django.db'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": ""}).stdout
    assert out.strip() == "[]"


@settings(max_examples=len(syncrouter.__all__), deadline=None)
@given(st.sampled_from(syncrouter.__all__))
def test_every_public_name_resolves(name):
    assert getattr(syncrouter, name) is not None
    assert name in dir(syncrouter)


def test_star_import_and_unknown_names():
    namespace: dict = {}
    exec("from syncrouter import *", namespace)
    assert set(syncrouter.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        syncrouter.nothing_here  # noqa: B018


def test_public_names_are_the_package_objects():
    from syncrouter.registry import site_sync_models
    from syncrouter.replay.conflicts import resolve

    assert syncrouter.register == site_sync_models.register
    assert syncrouter.site_sync_models is site_sync_models
    assert syncrouter.resolve is resolve


@given(st.sampled_from([*ReplayOutcome, *ConflictPolicy, *Resolution]))
def test_enum_members_are_their_strings(member):
    assert member == member.value
    assert str(member) == f"{member}" == member.value
    assert hash(member) == hash(member.value)
    assert {member.value: 1}[member] == 1


def test_the_exception_keeps_its_former_name():
    assert messages.Outcome is messages.ApplyStopped
    assert not hasattr(messages, "OUTCOMES")


def test_replay_outcomes_compare_with_strings_and_enums(nodes):
    hh = factories.household(nodes.client)
    factories.member(nodes.client, hh)
    OutgoingTransaction.objects.using(nodes.client).copy_to_incoming_transaction(nodes.server)
    log = IncomingTransaction.objects.using(nodes.server).deserialize(check_hostname=False)
    assert [m.outcome for m in log] == ["inserted", "inserted"]
    assert [m.outcome for m in log] == [ReplayOutcome.INSERTED] * 2
    assert log.counts[ReplayOutcome.INSERTED] == log.counts["inserted"] == 2
