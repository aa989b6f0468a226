"""The words replay and the conflict ledger answer in, as string enums.

Each member is its string (``ReplayOutcome.INSERTED == "inserted"``), so code
that compares ``message.outcome`` or ``conflict.resolution`` with a string keeps
working; ``str()`` of a member is its value.
"""
from django.db import models


class ReplayOutcome(models.TextChoices):
    """What replay did with one transaction (``ReplayMessage.outcome``)."""

    INSERTED = "inserted"
    UPDATED = "updated"
    DELETED = "deleted"
    #: Nothing to do: already so here, superseded, or this node's own transaction.
    SKIPPED = "skipped"
    #: Waits for a parent row or an earlier transaction; replayed again later.
    DEFERRED = "deferred"
    #: The before-state did not match: recorded in the ledger, decided by the policy or held.
    CONFLICT = "conflict"
    ERROR = "error"
    #: Refused by a signature check or a write rule.
    REFUSED = "refused"


#: Outcomes after which nothing waits and nothing went wrong (``ReplayMessage.success``).
SUCCESSES = frozenset({ReplayOutcome.INSERTED, ReplayOutcome.UPDATED, ReplayOutcome.DELETED,
                       ReplayOutcome.SKIPPED})


class ConflictPolicy(models.TextChoices):
    """Who wins when an incoming change meets a row changed here since (per model)."""

    SERVER_WINS = "server_wins"
    CLIENT_WINS = "client_wins"
    NEWER_WINS = "newer_wins"
    #: Hold the change for a person's decision (``conflicts.resolve``).
    MANUAL = "manual"


class Resolution(models.TextChoices):
    """How a recorded conflict was settled (``Conflict.resolution``)."""

    PENDING = "pending", "pending: held for a decision"
    SERVER_KEPT = "server_kept", "this node's row kept"
    INCOMING_APPLIED = "incoming_applied", "incoming change applied"
