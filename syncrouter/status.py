"""Where a node stands: what it has received, replayed and still has to send on.

Plain data (dataclasses) so that a script, the admin or ``manage.py syncrouter
status`` can each present it their own way. A fixed handful of aggregate
queries per alias, whatever the number of rows, and the ``Refusal`` ledger
(one row per transaction the next hop refused).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.db.models import Count, Max, Q

from . import conf
from .models import IncomingTransaction, OutgoingTransaction, Refusal, RefusedTransaction
from .replay.gaps import ProducerStream, producer_streams


@dataclass(frozen=True)
class InboxProducer:
    """One producer's transactions in ``IncomingTransaction`` on the alias."""

    stream: ProducerStream
    last_received: datetime.datetime | None
    #: Received but not yet passed on to the next hop (middleman and community nodes).
    unforwarded: int


@dataclass(frozen=True)
class OutboxProducer:
    """One producer's transactions in ``OutgoingTransaction`` on the alias."""

    producer: str
    highest: int
    total: int
    #: Not yet copied or exported towards the server.
    pending_server: int
    #: Not yet copied to a middleman.
    pending_middleman: int


@dataclass(frozen=True)
class NextHopRefusal:
    """A transaction the next hop refused, still pending on the alias (``Refusal``)."""

    target: str
    producer: str
    sequence: int
    #: Transactions not sent because of it in the last attempt.
    held_back: int
    reason: str
    first_refused: datetime.datetime
    last_refused: datetime.datetime


@dataclass(frozen=True)
class RefusedProducer:
    """Transactions of one producer that this node refused (``syncrouter.trust``)."""

    producer: str
    #: Refused by a copy or an import: kept in ``RefusedTransaction``, not in the inbox.
    at_entry: int
    #: Refused by replay (signature, registry or a write rule): ``is_refused`` in the inbox.
    at_replay: int
    #: The reason of the latest one.
    last_reason: str


@dataclass(frozen=True)
class NodeStatus:
    alias: str
    node: str
    role: str
    inbox: list[InboxProducer] = field(default_factory=list)
    outbox: list[OutboxProducer] = field(default_factory=list)
    #: Sent from here and refused by the next hop (still pending here).
    refused: list[NextHopRefusal] = field(default_factory=list)
    #: Received here and refused (signature, device registry or a write rule).
    refused_here: list[RefusedProducer] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        """True when some rows are in error, deferred or refused (here or by the next hop)."""
        return bool(self.refused or self.refused_here) or any(
            p.stream.errors or p.stream.deferred for p in self.inbox)


def node_status(alias: str) -> NodeStatus:
    """Status of the node behind ``alias``, producers in name order."""
    node = conf.node_for_alias(alias)
    received = {row["producer"]: row for row in IncomingTransaction.objects.using(alias)
                .values("producer").annotate(
                    last=Max("received_datetime"),
                    unforwarded=Count("id", filter=Q(is_consumed_server=False)))}
    inbox = [InboxProducer(stream, received[stream.producer]["last"],
                           received[stream.producer]["unforwarded"])
             for stream in producer_streams(alias)]
    outbox = [OutboxProducer(**row) for row in OutgoingTransaction.objects.using(alias)
              .values("producer").annotate(
                  highest=Max("sequence"), total=Count("id"),
                  pending_server=Count("id", filter=Q(is_consumed_server=False)),
                  pending_middleman=Count("id", filter=Q(is_consumed_middleman=False)))
              .order_by("producer")]
    refused = [NextHopRefusal(**row) for row in Refusal.objects.using(alias).values(
        "target", "producer", "sequence", "held_back", "reason", "first_refused",
        "last_refused")]
    return NodeStatus(alias=alias, node=node.name, role=node.role, inbox=inbox, outbox=outbox,
                      refused=refused, refused_here=refused_producers(alias))


def refused_producers(alias: str) -> list[RefusedProducer]:
    """Per producer: what copies, imports and replays on ``alias`` refused, and the latest
    reason (one query per table, and one per producer with refusals)."""
    at_entry = RefusedTransaction.objects.using(alias)
    at_replay = IncomingTransaction.objects.using(alias).filter(is_refused=True)
    entry = dict(at_entry.values("producer").annotate(n=Count("id")).values_list("producer", "n"))
    replay = dict(at_replay.values("producer").annotate(n=Count("id")).values_list("producer", "n"))
    return [RefusedProducer(
        producer, entry.get(producer, 0), replay.get(producer, 0),
        at_entry.filter(producer=producer).order_by("-pk").values_list("reason", flat=True).first()
        or at_replay.filter(producer=producer).order_by("-sequence").values_list(
            "error", flat=True).first() or "")
        for producer in sorted(set(entry) | set(replay))]
