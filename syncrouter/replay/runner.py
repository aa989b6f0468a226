"""``IncomingTransaction.objects....deserialize()``: the replay loop.

Rows are read in (producer, sequence) pages. Each row is applied in its own
savepoint together with its consumed mark (guarantee 3) and with capture
switched off for the alias (guarantee 4). A row that cannot be applied yet is
deferred and retried at the end of the run once other rows have landed; a row
that can never be applied is marked ``is_error`` with the reason (guarantee 7).

Order within a producer (guarantee 5): once a row of producer P is deferred,
held or in error, P's later rows that touch the same natural key (as the row
itself, a parent or an M2M target) are deferred behind it. P's other rows, and
other producers, go on.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable

from django.apps import apps
from django.db import transaction
from django.utils import timezone

from .. import conf, serialization as ser
from ..capture.context import replaying
from ..exceptions import ReplayRefused
from ..registry import site_sync_models
from ..transfer.copy import TransferQuerySet, keyset_pages
from .apply import apply_row
from .messages import Outcome, ReplayMessage

logger = logging.getLogger("syncrouter.replay")

NOT_CONSUMED = ("deferred", "held", "error")


def consumer_node(custom_device, alias: str) -> conf.Node:
    """The node doing the replay: ``custom_device`` (a name, or an object with
    ``name``/``role``), else the node configured for ``alias``."""
    node = conf.node_for_alias(alias)
    if custom_device is None:
        return node
    if isinstance(custom_device, str):
        return conf.Node(alias, custom_device, node.role)
    name = getattr(custom_device, "name", None) or str(custom_device)
    return conf.Node(alias, name, getattr(custom_device, "role", node.role))


def _touched_keys(row, payload: dict, model) -> set:
    """(model label, key) pairs this transaction depends on or changes."""
    keys = {(row.tx_name, ser.dumps(payload.get("nk"))),
            (row.tx_name, ser.dumps(payload.get("old_nk", payload.get("nk"))))}
    for name, value in payload.get("fields", {}).items():
        field = model._meta._forward_fields_map.get(name)
        if field is not None and field.is_relation and value is not None:
            keys.add((field.related_model._meta.label_lower, ser.dumps(value)))
    change = payload.get("m2m")
    if change:
        field = model._meta._forward_fields_map.get(change.get("field"))
        if field is not None and field.many_to_many:
            keys.update((field.related_model._meta.label_lower, ser.dumps(k))
                        for k in change.get("keys", []))
    return keys


class Replayer:
    def __init__(self, queryset, custom_device=None, check_hostname: bool = True,
                 batch_size: int | None = None,
                 progress: Callable[[dict], None] | None = None):
        self.queryset = queryset
        self.alias = queryset.db
        self.node = consumer_node(custom_device, self.alias)
        if self.node.role == "client":
            raise ReplayRefused(
                f"Node {self.node.name!r} (alias {self.alias!r}) has the role 'client'; a client "
                "does not replay. Set its role in SYNCROUTER_NODES or pass a custom_device.")
        self.check_hostname = check_hostname
        self.batch_size = batch_size or conf.batch_size()
        self.progress = progress
        self.messages: dict = {}
        self.held: dict[str, dict] = defaultdict(dict)
        self.counts: dict[str, int] = defaultdict(int)
        self.max_hlc = 0

    def run(self) -> list[ReplayMessage]:
        pending = self.queryset.filter(is_consumed=False, is_error=False, is_ignored=False)
        deferred = []
        for page in keyset_pages(pending, self.batch_size):
            deferred += [row for row in page if self.replay(row) == "deferred"]
            if self.progress:
                self.progress(dict(self.counts))
        while deferred:  # parents may have landed later in the run
            self.held.clear()
            still = [row for row in deferred if self.replay(row) == "deferred"]
            if len(still) == len(deferred):
                break
            deferred = still
        self._advance_clock()
        logger.info("Replay on %s: %s", self.alias,
                    ", ".join(f"{k} {v}" for k, v in sorted(self._final_counts().items())))
        return list(self.messages.values())

    def _final_counts(self) -> dict:
        counts = defaultdict(int)
        for message in self.messages.values():
            counts[message.outcome] += 1
        return counts

    def replay(self, row) -> str:
        payload, model, kind, text = {}, None, None, ""
        try:
            payload = ser.loads(row.tx)
            if not isinstance(payload, dict) or "nk" not in payload:
                raise ValueError("not a syncrouter payload object")
        except ValueError as exc:
            kind, text = "error", f"corrupt payload: {exc}"
        if kind is None:
            model, kind, text = self._model(row, payload)
        if kind is None and self.check_hostname and row.hostname == conf.hostname():
            kind, text = "skipped", ("produced on this host; left untouched "
                                     "(deserialize(check_hostname=False) replays it)")
            return self._report(row, payload, kind, text)
        keys = _touched_keys(row, payload, model) if model is not None else set()
        if kind is None:
            blocker = next((self.held[row.producer][k] for k in keys
                            if k in self.held[row.producer]), None)
            if blocker is not None:
                kind, text = "deferred", f"waits for {row.producer}#{blocker} (same key, earlier)"
        if kind is None:
            kind, text = self._apply(row, model, payload)
        if kind in NOT_CONSUMED and kind != "held":
            self._mark(row, kind, text)
        if kind in NOT_CONSUMED:
            for key in keys:
                self.held[row.producer].setdefault(key, row.sequence)
        return self._report(row, payload, kind, text)

    def _model(self, row, payload):
        label = row.tx_name
        model = site_sync_models.get(label)
        if model is None:
            try:
                apps.get_model(label)
            except (LookupError, ValueError):
                return None, "error", f"unknown model {label!r} on this node"
            return None, "error", (f"model {label!r} is not registered for sync on this node; "
                                   "replay refuses to write it")
        if payload.get("model") != label:
            return None, "error", (f"payload names model {payload.get('model')!r} but the "
                                   f"transaction is for {label!r}")
        return model, None, ""

    def _apply(self, row, model, payload) -> tuple[str, str]:
        try:
            with transaction.atomic(using=self.alias):
                with replaying(self.alias):
                    kind, text = apply_row(model, row.action, payload, self.alias, row)
                if kind == "held":
                    self._mark(row, "held", text)
                elif not self._consume(row, text):
                    raise Outcome("skipped", "already consumed by another replay")
                else:
                    self.max_hlc = max(self.max_hlc, row.hlc)
            return kind, text
        except Outcome as outcome:
            return outcome.kind, outcome.text
        except Exception as exc:  # isolate the row: guarantee 7
            logger.warning("Replay of %s#%s (%s) failed", row.producer, row.sequence,
                           row.tx_name, exc_info=True)
            return "error", f"{type(exc).__name__}: {exc}"

    def _consume(self, row, text: str) -> bool:
        return bool(type(row).objects.using(self.alias).filter(pk=row.pk, is_consumed=False)
                    .update(is_consumed=True, is_deferred=False, is_error=False, error=text,
                            consumed_datetime=timezone.now(), consumer=self.node.name))

    def _mark(self, row, kind: str, text: str) -> None:
        type(row).objects.using(self.alias).filter(pk=row.pk).update(
            is_deferred=kind in ("deferred", "held"), is_error=kind == "error", error=text)

    def _report(self, row, payload, kind: str, text: str) -> str:
        self.counts[kind] += 1
        self.messages[row.id] = ReplayMessage(
            tx_id=str(row.id), producer=row.producer, sequence=row.sequence, model=row.tx_name,
            key=payload.get("nk") if isinstance(payload, dict) else None, action=row.action,
            outcome="conflict" if kind == "held" else kind, text=text)
        if kind == "error":
            logger.warning("%s#%s %s: %s", row.producer, row.sequence, row.tx_name, text)
        return kind

    def _advance_clock(self) -> None:
        """Hybrid logical clock receive rule: this node's clock passes every replayed change."""
        from ..models import ProducerClock

        if not self.max_hlc:
            return
        producer = conf.node_for_alias(self.alias).name
        clocks = ProducerClock.objects.using(self.alias)
        clocks.bulk_create([ProducerClock(producer=producer)], ignore_conflicts=True)
        clocks.filter(producer=producer, last_hlc__lt=self.max_hlc).update(
            last_hlc=self.max_hlc)


class ReplayQuerySet(TransferQuerySet):
    def deserialize(self, custom_device=None, check_hostname: bool = True,
                    batch_size: int | None = None,
                    progress: Callable[[dict], None] | None = None) -> list[ReplayMessage]:
        """Replay these incoming transactions on this queryset's alias.

        ``custom_device`` is the node doing the replay (recorded as consumer; a
        node whose role is ``client`` refuses). With ``check_hostname=True``,
        transactions produced on this host are left untouched and reported.
        Returns one ``ReplayMessage`` per transaction looked at.
        """
        return Replayer(self, custom_device, check_hostname, batch_size, progress).run()
