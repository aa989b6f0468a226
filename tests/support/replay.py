"""Helpers shared by the replay and conflict tests (this module holds no tests).

Several producers are played on one client alias by renaming the alias's node
for a while: each name gets its own ProducerClock, so its own gapless sequence.
"""
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.test import override_settings

from syncrouter.capture import outbox
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from tests.support.nodes import DATABASES

#: Each save outside an explicit atomic block must be its own client database
#: transaction (as in production), not part of a test-wide one: replay groups by it.
TRANSACTIONAL = pytest.mark.django_db(databases=DATABASES, transaction=True)


@contextmanager
def producer(alias: str, name: str, monkeypatch=None, skew_ms: int = 0):
    """Capture on ``alias`` as node ``name``, its wall clock ``skew_ms`` off."""
    nodes = {**settings.SYNCROUTER_NODES, alias: {"name": name, "role": "client"}}
    with override_settings(SYNCROUTER_NODES=nodes):
        if skew_ms:
            real = outbox.hlc_now
            monkeypatch.setattr(outbox, "hlc_now", lambda: real() + (skew_ms << 16))
        try:
            yield
        finally:
            if skew_ms:
                monkeypatch.setattr(outbox, "hlc_now", real)


def push(nodes, **filters):
    """Copy the client's not yet copied outgoing rows (those matching ``filters``) to the server."""
    return OutgoingTransaction.objects.using(nodes.client).filter(
        is_consumed_server=False, **filters).copy_to_incoming_transaction(nodes.server)


def replay(alias: str, **kwargs) -> dict:
    """Replay everything pending on ``alias``; (producer, sequence) -> message."""
    messages = IncomingTransaction.objects.using(alias).filter(is_consumed=False).deserialize(
        check_hostname=False, **kwargs)
    return {(m.producer, m.sequence): m for m in messages}


def outcomes(messages: dict) -> dict:
    return {key: message.outcome for key, message in messages.items()}


def incoming(alias: str, name: str, sequence: int) -> IncomingTransaction:
    return IncomingTransaction.objects.using(alias).get(producer=name, sequence=sequence)
