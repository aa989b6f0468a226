"""What each producer's stream looks like on one node: held, missing, waiting.

Sequences are gapless where they are made, so a hole on the receiving node
means a transaction that has not arrived yet (a copy still running, a file not
imported). Replay uses the holes to tell "the before-state differs because an
earlier change of this producer is missing" (wait) from a real conflict;
``manage.py syncrouter status`` shows the report.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, F, Max, Min, Q, Window
from django.db.models.functions import Lead

from ..models import IncomingTransaction


@dataclass(frozen=True)
class ProducerStream:
    """One producer's transactions as held on one alias (plain data; ``dataclasses.asdict`` works)."""

    producer: str
    #: Highest n such that sequences 1..n are all here (0: sequence 1 is missing).
    contiguous: int
    #: Highest sequence here.
    highest: int
    #: Missing sequences below ``highest``, as inclusive (first, last) ranges.
    gaps: list[tuple[int, int]] = field(default_factory=list)
    #: Not replayed yet and not deferred or in error.
    pending: int = 0
    #: Waiting for a parent, an earlier transaction or a conflict decision.
    deferred: int = 0
    #: Marked ``is_error``: will not be retried until someone fixes and clears them.
    errors: int = 0
    consumed: int = 0


def missing_ranges(alias: str, producers=None) -> dict[str, list[tuple[int, int]]]:
    """producer -> inclusive (first, last) ranges of sequences absent on ``alias``.

    Two queries whatever the volume: the lowest sequence per producer, and the
    rows whose successor (by a window function) is not the next number.
    """
    rows = IncomingTransaction.objects.using(alias)
    if producers is not None:
        rows = rows.filter(producer__in=list(producers))
    gaps: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for producer, lowest in rows.values("producer").annotate(
            lowest=Min("sequence")).values_list("producer", "lowest"):
        if lowest > 1:
            gaps[producer].append((1, lowest - 1))
    following = rows.annotate(following=Window(
        Lead("sequence"), partition_by=[F("producer")], order_by=F("sequence").asc()))
    holes = following.filter(following__gt=F("sequence") + 1).values_list(
        "producer", "sequence", "following")
    for producer, sequence, next_held in holes.order_by("producer", "sequence"):
        gaps[producer].append((sequence + 1, next_held - 1))
    return {producer: sorted(ranges) for producer, ranges in gaps.items()}


def producer_streams(alias: str) -> list[ProducerStream]:
    """Per producer on ``alias``: contiguous and highest sequence, gaps and row counts.

    Ordered by producer name.
    """
    gaps = missing_ranges(alias)
    waiting = Q(is_consumed=False)
    counts = IncomingTransaction.objects.using(alias).values("producer").annotate(
        highest=Max("sequence"),
        pending=Count("id", filter=waiting & Q(is_deferred=False, is_error=False,
                                               is_ignored=False)),
        deferred=Count("id", filter=waiting & Q(is_deferred=True, is_error=False)),
        errors=Count("id", filter=waiting & Q(is_error=True)),
        consumed=Count("id", filter=Q(is_consumed=True)),
    ).order_by("producer")
    streams = []
    for row in counts:
        holes = gaps.get(row["producer"], [])
        streams.append(ProducerStream(
            producer=row["producer"], contiguous=holes[0][0] - 1 if holes else row["highest"],
            highest=row["highest"], gaps=holes, pending=row["pending"],
            deferred=row["deferred"], errors=row["errors"], consumed=row["consumed"]))
    return streams
