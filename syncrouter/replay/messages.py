"""What replay says about each transaction it looked at."""
from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("inserted", "updated", "deleted", "skipped", "deferred", "conflict", "error")


@dataclass(frozen=True)
class ReplayMessage:
    tx_id: str
    producer: str
    sequence: int
    model: str
    key: object
    action: str
    outcome: str
    text: str = ""

    def __str__(self) -> str:
        text = f": {self.text}" if self.text else ""
        return (f"{self.outcome} {self.model} {self.key} "
                f"({self.producer}#{self.sequence}, {self.action}){text}")


class Outcome(Exception):
    """Raised inside an apply to end it with ``kind`` (and roll back its savepoint).

    Used for the outcomes that must leave no trace: deferred, error, and a
    conflict held for a decision. A held conflict carries its unsaved ledger
    row in ``ledger``: the runner records it after rolling the change back.
    """

    def __init__(self, kind: str, text: str, ledger=None):
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.ledger = ledger
