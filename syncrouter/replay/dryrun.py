"""``deserialize(dry_run=True)``: what a replay would do, with nothing written or marked.

The replay runs for real, in one database transaction on the replaying alias
that is rolled back at the end: payloads are repaired and decoded, natural
keys and parents are looked up, rows deferred early in the run are retried
after their parents land, conflicts are checked against this node's rows,
exactly as they would be. Then the data, the consumed, deferred and error
marks, the conflict ledger and this node's clock go back to what they were.
A dry run therefore answers "what would happen" from the real code path rather
than a second imitation of it.

What a rollback cannot undo is outside the database: ``pre_replay`` and
``post_replay`` receivers run, and may ask ``is_dry_run(alias)`` before they
touch anything else. On PostgreSQL the rolled-back transaction holds row locks
until it ends, so a dry run of a large inbox delays writers of the same rows.
"""
from __future__ import annotations

import re

from django.db import transaction

from ..state import state_of, switched_on
from .messages import ReplayLog

#: "conflict #12 ...": the ledger row was rolled back with everything else.
_LEDGER_NUMBER = re.compile(r"\bconflict #\d+ ")


def is_dry_run(alias: str) -> bool:
    """Whether the replay now running on ``alias`` is a dry run (for signal receivers)."""
    return state_of(alias).dry_run


def rehearse(replayer) -> ReplayLog:
    """Run ``replayer`` (a ``runner.Replayer``) and roll back everything it wrote."""
    alias = replayer.alias
    with transaction.atomic(using=alias), switched_on(alias, "dry_run"):
        messages = replayer.run()
        transaction.set_rollback(True, using=alias)
    messages.rewrite_texts(lambda text: _LEDGER_NUMBER.sub("conflict (dry run, not recorded) ",
                                                           text))
    return messages
