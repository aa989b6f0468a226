"""Every syncrouter setting, with its default, in one place.

Values are cached: the capture path reads several of them on every captured
``save()``, and a Django settings lookup of an undefined name costs microseconds.
The cache is cleared on ``setting_changed``, which ``override_settings`` sends.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import cache

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from .exceptions import SyncError

ROLES = ("client", "middleman", "community", "central")
#: Longest node name: the ``producer`` column's length.
MAX_NAME = 200

DEFAULTS = {
    # False: nothing is captured (the seeds' setting, kept under its old name).
    "ALLOW_MODEL_SERIALIZATION": True,
    # The alias the router sends reads and writes to: this node's own database.
    "SYNCROUTER_LOCAL_ALIAS": "client",
    # alias -> {"name": ..., "role": ...}; see node_for_alias() for the defaults.
    "SYNCROUTER_NODES": {},
    # What to do with raw SQL that writes a registered table: "warn", "raise", "off".
    "SYNCROUTER_RAW_SQL": "warn",
    # Default conflict policy, and per-model overrides {"app.model": policy}.
    "SYNCROUTER_CONFLICT_POLICY": "manual",
    "SYNCROUTER_CONFLICT_POLICIES": {},
    # Rows per batch for copy, export, import and replay (a batch runs on to the end
    # of a producer's database transaction).
    "SYNCROUTER_BATCH_SIZE": 500,
    # Largest transaction a batch file may carry, as one line of its transactions.jsonl:
    # export leaves a larger one out (refused), import refuses a file holding one.
    "SYNCROUTER_MAX_TRANSACTION_BYTES": 16 * 2**20,
    # Payload repair hooks per model, {"app.model": [callable or dotted path]}
    # (replay/repairs.py): run on a payload before replay decodes it.
    "SYNCROUTER_PAYLOAD_REPAIRS": {},
    # Trust (syncrouter.trust): capture signs every transaction with the node's key
    # (a node without one refuses to write), receivers verify signatures against
    # their device registry and apply write rules. Unsigned rows are refused
    # unless SYNCROUTER_ACCEPT_UNSIGNED (the upgrade path). SYNCROUTER_VERIFY=False
    # believes every row, as before trust existed: for development only.
    "SYNCROUTER_SIGN": True,
    "SYNCROUTER_VERIFY": True,
    "SYNCROUTER_ACCEPT_UNSIGNED": False,
    # Where key files live: <dir>/<node name>.key (0600). None: ~/.syncrouter/keys.
    # A node may name its own source instead: SYNCROUTER_NODES[alias]["key"] =
    # "/path/to/file" or "env:VARIABLE".
    "SYNCROUTER_KEY_DIR": None,
    # Write rules (syncrouter.trust.rules.WriteRule or dicts), tried before the defaults.
    "SYNCROUTER_WRITE_RULES": [],
    # Batch files are encrypted to their recipient's key; False writes plain archives.
    "SYNCROUTER_ENCRYPT_FILES": True,
    # At-rest encryption of the outbox/inbox payload column (trust/atrest.py): a keyring
    # {key id: "/path/to/file" (0600) or "env:VARIABLE"} shared by the nodes that read
    # each other's payloads, and the id of the key that encrypts new rows. None: new
    # rows are stored plain (older keys still decrypt the rows stored under them).
    "SYNCROUTER_PAYLOAD_KEYS": {},
    "SYNCROUTER_PAYLOAD_KEY": None,
}


_cache: dict[str, object] = {}  # setting name, or 'node:<alias>' -> value


def get(name: str):
    try:
        return _cache[name]
    except KeyError:
        value = _cache[name] = getattr(django_settings, name, DEFAULTS[name])
        return value


def _forget(**kwargs) -> None:
    _cache.clear()


setting_changed.connect(_forget, dispatch_uid="syncrouter.conf")


def capture_enabled() -> bool:
    return bool(get("ALLOW_MODEL_SERIALIZATION"))


def local_alias() -> str:
    return get("SYNCROUTER_LOCAL_ALIAS")


def batch_size() -> int:
    return int(get("SYNCROUTER_BATCH_SIZE"))


def max_transaction_bytes() -> int:
    return int(get("SYNCROUTER_MAX_TRANSACTION_BYTES"))


@cache
def hostname() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Node:
    """The node a database alias stands for: its producer name and its role.

    One process may hold several nodes (a middleman holds the field laptop's alias
    and its own), so identity belongs to the alias, not to the process.
    """

    alias: str
    name: str
    role: str


def node_for_alias(alias: str) -> Node:
    """Name and role of the node behind ``alias``.

    Defaults: the name is ``<hostname>-<alias>``; the role is ``client`` for the
    local alias and ``community`` for any other alias.
    """
    key = f"node:{alias}"
    if key not in _cache:
        _cache[key] = _node(alias)
    return _cache[key]


def _node(alias: str) -> Node:
    declared = get("SYNCROUTER_NODES").get(alias, {})
    default_role = "client" if alias == local_alias() else "community"
    role = declared.get("role", default_role)
    if role not in ROLES:
        raise SyncError(
            f"SYNCROUTER_NODES[{alias!r}]['role'] is {role!r}; expected one of {', '.join(ROLES)}."
        )
    name = declared.get("name", f"{hostname()}-{alias}")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise SyncError(
            f"The node name of alias {alias!r} is {name!r}; a node name is 1 to {MAX_NAME} "
            "characters (it is the producer of every transaction the node captures)."
        )
    return Node(alias=alias, name=name, role=role)
