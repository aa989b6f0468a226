"""syncrouter: capture, transfer and replay of Django model changes between databases.

The pipeline, one package per stage:
capture (record every write) -> outbox (OutgoingTransaction) -> transfer (copy, files)
-> inbox (IncomingTransaction) -> replay (apply by natural key).

The names below are the public API. They are looked up on first use (PEP 562),
so ``import syncrouter`` imports no models before Django's app registry is ready.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module (below this package) that defines it.
_EXPORTS = {
    # Registering models
    "site_sync_models": "registry",
    "register": "registry",
    "SyncModelMixin": "models",
    # The tables
    "OutgoingTransaction": "models",
    "IncomingTransaction": "models",
    "ProducerClock": "models",
    "Conflict": "models",
    "Refusal": "models",
    "Device": "models",
    "RefusedTransaction": "models",
    # Moving data: querysets' copy_to_incoming_transaction() and deserialize(), and files
    "CopyResult": "transfer.rows",
    "export_transactions": "transfer.files",
    "import_transactions": "transfer.files",
    "ReplayLog": "replay.messages",
    "ReplayMessage": "replay.messages",
    "is_dry_run": "replay.dryrun",
    # Conflicts and status
    "resolve": "replay.conflicts",
    "node_status": "status",
    # Exceptions
    "SyncError": "exceptions",
    "AlreadyRegistered": "exceptions",
    "ReplayRefused": "exceptions",
    "CopyInterrupted": "transfer.copy",
    "CopyRefused": "transfer.copy",
    "ExportRefused": "transfer.files",
    # Signals
    "pre_replay": "signals",
    "post_replay": "signals",
    # Enums
    "ReplayOutcome": "enums",
    "ConflictPolicy": "enums",
    "Resolution": "enums",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'syncrouter' has no attribute {name!r}")
    if name == "register":
        value = import_module(f"{__name__}.registry").site_sync_models.register
    else:
        value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

