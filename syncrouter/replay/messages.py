"""What replay says about each transaction it looked at."""
from __future__ import annotations

import operator
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import orjson

from ..enums import SUCCESSES, ReplayOutcome

#: The kind of an ``ApplyStopped`` for a conflict held for a decision: the message
#: says ``conflict`` and the transaction waits (``is_deferred``).
HELD = "held"


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

    # The older tools' message fields (edc-sync's ``Message`` tuple), read from the
    # fields above so that a message stores nothing more.

    @property
    def tx_name(self) -> str:
        """The model label (``model``)."""
        return self.model

    @property
    def tx_pk(self) -> object:
        """The row's natural key (``key``): what names it on this node. The producer's
        primary key stays on the transaction, ``IncomingTransaction.tx_pk``."""
        return self.key

    @property
    def inserted(self) -> int:
        """1 if the transaction inserted its row here, else 0."""
        return int(self.outcome == ReplayOutcome.INSERTED)

    @property
    def updated(self) -> int:
        return int(self.outcome == ReplayOutcome.UPDATED)

    @property
    def deleted(self) -> int:
        return int(self.outcome == ReplayOutcome.DELETED)

    @property
    def success(self) -> bool:
        """Nothing waits and nothing went wrong: inserted, updated, deleted or skipped.
        A deferred row, a conflict (held or decided by a policy) and an error are not."""
        return self.outcome in SUCCESSES


class ApplyStopped(Exception):
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


#: The exception's former name (it read like ``ReplayMessage.outcome``, which it is not).
Outcome = ApplyStopped


#: The next wider unsigned type of an ``array`` column.
_WIDER = {"B": "H", "H": "I", "I": "Q"}


def _fit(column: array, value: int) -> array:
    """``column``, or a copy of it in a wider type when ``value`` does not fit.

    Index and offset columns start at one byte per message and widen only when
    a value needs it, so a run with a handful of producers pays one byte for
    each message's producer rather than eight.
    """
    while value >> (8 * column.itemsize):
        column = array(_WIDER[column.typecode], column)
    return column


class _Strings:
    """A column of strings that repeat (producer, model, action, outcome, text).

    Each distinct string is stored once; a message holds only its index. The
    strings of a replay come from fresh database rows, so without this every
    message would carry its own copies of "laptop-3", "app.crf" and "insert".
    Texts are mostly "" or a fixed sentence; the distinct ones (a deferral
    naming its blocker, an error) stay in the table until the log is dropped,
    even once their message is replaced.
    """

    __slots__ = ("values", "indexes", "column")

    def __init__(self) -> None:
        self.values: list[str] = []
        self.indexes: dict[str, int] = {}
        self.column = array("B")

    def index(self, value: str) -> int:
        index = self.indexes.get(value)
        if index is None:
            index = self.indexes[value] = len(self.values)
            self.values.append(value)
            self.column = _fit(self.column, index)
        return index

    def append(self, value: str) -> None:
        index = self.index(value)  # may widen self.column: look it up after
        self.column.append(index)

    def __setitem__(self, position: int, value: str) -> None:
        self.column[position] = self.index(value)

    def __getitem__(self, position: int) -> str:
        return self.values[self.column[position]]


class ReplayLog(Sequence[ReplayMessage]):
    """The messages of one replay, stored column by column.

    A replay of a million transactions must fit in a modest process, and a
    ``ReplayMessage`` with its own strings, key list and dict slot costs 600
    to 750 bytes. Here a message costs under 60: its transaction id as 16 bytes,
    its sequence as 8, its key as JSON bytes with an offset and a length, and
    one small index per repeated string (see ``_Strings``). A ``ReplayMessage``
    is built only when one is asked for (by index, slice or iteration); keys
    come back as JSON decodes them (tuples as lists).

    A transaction reported "deferred" is retried later in the run, and its new
    report replaces the old one in place, so messages stay in the order of
    first report. To keep memory flat, only the positions of transactions whose
    current outcome is "deferred" are remembered; a transaction recorded again
    after any other outcome gets a second message at the end.
    """

    def __init__(self) -> None:
        self._ids = bytearray()  # tx_id.bytes, 16 per message
        self._sequences = array("q")
        self._producers = _Strings()
        self._models = _Strings()
        self._actions = _Strings()
        self._outcomes = _Strings()
        self._texts = _Strings()
        # Each message's key as JSON: ``_keys[start:start + length]``.
        self._keys = bytearray()
        self._key_starts = array("B")
        self._key_lengths = array("B")
        #: tx_id.bytes -> position, for the transactions now deferred.
        self._deferred: dict[bytes, int] = {}
        self._counts: dict[str, int] = {}

    def record(self, tx_id: uuid.UUID, producer: str, sequence: int, model: str, key: object,
               action: str, outcome: str, text: str = "") -> None:
        """Add the report of one transaction, or replace it if it is deferred.

        ``key`` must be JSON-serialisable by orjson; it is the natural key as
        read from the payload.
        """
        tx = tx_id.bytes
        position = self._deferred.pop(tx, None) if self._deferred else None
        strings = (producer, model, action, outcome, text)
        encoded = orjson.dumps(key)
        if position is None:  # the common case, kept short: once per row replayed
            position = len(self._sequences)
            self._ids += tx
            self._sequences.append(sequence)
            for column, value in zip(self._string_columns(), strings):
                column.append(value)
            start = self._append_key(encoded)  # may widen the columns: append after
            self._key_starts.append(start)
            self._key_lengths.append(len(encoded))
        else:
            self._count(self._outcomes[position], -1)
            self._sequences[position] = sequence
            for column, value in zip(self._string_columns(), strings):
                column[position] = value
            self._set_key(position, encoded)
        if outcome == "deferred":
            self._deferred[tx] = position
        self._counts[outcome] = self._counts.get(outcome, 0) + 1

    def rewrite_texts(self, rewrite: Callable[[str], str]) -> None:
        """Pass every message text through ``rewrite`` (a dry run renames what it rolled
        back). Each distinct text is rewritten once."""
        texts = self._texts
        texts.values = [rewrite(text) for text in texts.values]
        texts.indexes = {text: index for index, text in enumerate(texts.values)}

    @property
    def counts(self) -> dict[str, int]:
        """Number of messages per outcome (a copy; outcomes with none are left out)."""
        return dict(self._counts)

    def _string_columns(self) -> tuple[_Strings, ...]:
        return self._producers, self._models, self._actions, self._outcomes, self._texts

    def _count(self, outcome: str, change: int) -> None:
        count = self._counts.get(outcome, 0) + change
        if count:
            self._counts[outcome] = count
        else:
            del self._counts[outcome]

    def _key_json(self, position: int) -> bytearray:
        start = self._key_starts[position]
        return self._keys[start:start + self._key_lengths[position]]

    def _set_key(self, position: int, encoded: bytes) -> None:
        """Point the message at ``encoded``, appended unless it is already its key.

        A replacement normally carries the same key (the transaction is the
        same), so its bytes are reused; a different one leaves the old bytes
        unreferenced rather than shifting every later offset.
        """
        if self._key_json(position) == encoded:
            return
        start = self._append_key(encoded)
        self._key_starts[position] = start
        self._key_lengths[position] = len(encoded)

    def _append_key(self, encoded: bytes) -> int:
        """Append a key's bytes; their offset. Widens the offset and length columns to take
        the offset and length it is about to be given."""
        start = len(self._keys)
        self._keys += encoded
        self._key_starts = _fit(self._key_starts, start)
        self._key_lengths = _fit(self._key_lengths, len(encoded))
        return start

    def _message(self, position: int) -> ReplayMessage:
        offset = 16 * position
        return ReplayMessage(
            tx_id=str(uuid.UUID(bytes=bytes(self._ids[offset:offset + 16]))),
            producer=self._producers[position],
            sequence=self._sequences[position],
            model=self._models[position],
            key=orjson.loads(self._key_json(position)),
            action=self._actions[position],
            outcome=self._outcomes[position],
            text=self._texts[position],
        )

    def __len__(self) -> int:
        return len(self._sequences)

    def __getitem__(self, index: int | slice) -> ReplayMessage | list[ReplayMessage]:
        if isinstance(index, slice):
            return [self._message(position) for position in range(*index.indices(len(self)))]
        position = operator.index(index)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError("ReplayLog index out of range")
        return self._message(position)

    def __iter__(self) -> Iterator[ReplayMessage]:
        return map(self._message, range(len(self)))

    def __contains__(self, message: object) -> bool:
        """Find the message's transaction id in the id column rather than
        building every message."""
        if not isinstance(message, ReplayMessage):
            return False
        try:
            tx = uuid.UUID(message.tx_id).bytes
        except (TypeError, ValueError):
            return False
        offset = self._ids.find(tx)
        while offset != -1:
            if offset % 16 == 0 and self._message(offset // 16) == message:
                return True
            offset = self._ids.find(tx, offset + 1)
        return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (ReplayLog, list)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self)} messages {self._counts}>"
