"""Helpers of the trust tests (this module holds no tests): keys, enrolment, tampering."""
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.test import override_settings

from syncrouter import conf
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from syncrouter.trust import devices, keys

ON = dict(SYNCROUTER_SIGN=True, SYNCROUTER_VERIFY=True, SYNCROUTER_ACCEPT_UNSIGNED=False,
          SYNCROUTER_ENCRYPT_FILES=True)


@pytest.fixture
def trusted(nodes, tmp_path):
    """Trust switched on, keys for the client and the server, the client enrolled on the
    server. Yields ``nodes``."""
    with override_settings(**ON, SYNCROUTER_KEY_DIR=tmp_path / "keys"):
        for alias in (nodes.client, nodes.server):
            keys.create(alias)
        enrol(nodes.server, nodes.client)
        yield nodes


def enrol(target: str, alias: str, role: str = "client", name: str | None = None):
    """Enrol the node behind ``alias`` (its key) on ``target``."""
    return devices.trust(target, name or conf.node_for_alias(alias).name,
                         keys.require(alias).public.token, role=role)


@contextmanager
def node_named(alias: str, name: str, role: str = "client"):
    """Capture on ``alias`` as node ``name`` (with its own key, created if missing)."""
    nodes = {**settings.SYNCROUTER_NODES, alias: {"name": name, "role": role}}
    with override_settings(SYNCROUTER_NODES=nodes):
        if keys.load(alias) is None:
            keys.create(alias)
        yield


def outbox(alias):
    return OutgoingTransaction.objects.using(alias)


def inbox(alias):
    return IncomingTransaction.objects.using(alias)


def flip(value, offset: int = 0):
    """``value`` with one byte (character, digit, bit) changed at ``offset``."""
    if isinstance(value, bool):
        raise TypeError("not a signed field")
    if isinstance(value, int):
        return value ^ (1 << (offset % 32))
    text = str(value)
    if not text:
        return "x"
    position = offset % len(text)
    char = text[position]
    if len(text) == 36 and text.count("-") == 4:  # a UUID: stay a UUID
        while text[position] == "-":
            position = (position + 1) % len(text)
        char = text[position]
        replacement = "0123456789abcdef"[("0123456789abcdef".index(char) + 1) % 16]
    else:
        replacement = chr(ord(char) ^ 1) if ord(char) ^ 1 > 31 else "x"
    return text[:position] + replacement + text[position + 1:]
