"""``IncomingTransaction.objects....deserialize()``: the replay loop.

Rows are read in (producer, sequence) pages and replayed a unit at a time: the
rows of one client database transaction (same producer and
``db_transaction_id``, consecutive sequences). A unit is applied together with
its consumed marks in one database transaction (guarantee 3), with capture
switched off for the alias (guarantee 4), or not at all: when one member waits
or fails, the unit rolls back and every member says which one stopped it.

Runs of units that only insert, update or delete rows of one model go through the fast
path (``batch.py``: a few queries and one bulk write per batch); anything else,
and any unit the fast path declines, is applied row by row (``apply.py``).

A unit that cannot be applied yet is deferred and retried at the end of the
run once other rows have landed; one that can never be applied is marked
``is_error`` with the reason (guarantee 7).

Order within a producer (guarantee 5): once a row of producer P is deferred,
held or in error, P's later rows that touch its natural key (as the row
itself, a parent or an M2M target) are deferred behind it. P's other rows, and
other producers, go on. While P's sequence has a hole below a row, a differing
before-state waits for the hole instead of becoming a conflict.
"""
from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Callable

from django.apps import apps
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from .. import conf, serialization as ser, trust
from ..enums import ReplayOutcome
from ..exceptions import ReplayRefused
from ..models import ProducerClock
from ..registry import site_sync_models
from ..state import replaying
from ..transfer.copy import IDENTITY_FIELDS, TransferQuerySet, keyset_pages
from ..transfer.rows import transaction_groups
from ..trust import atrest
from . import batch, dberrors, decode, dryrun, keys, own, repairs
from .apply import apply_row
from .devices import consumer_node
from .gaps import missing_ranges
from .lock import replay_lock
from .messages import HELD, ApplyStopped, ReplayLog

logger = logging.getLogger("syncrouter.replay")



class _UnitFailed(Exception):
    """One member of a unit could not be applied: the whole unit rolls back."""

    def __init__(self, member: _Prepared, outcome: ApplyStopped):
        super().__init__(outcome.text)
        self.member = member
        self.outcome = outcome


class _Prepared:
    """A row with its parsed payload and model, ready to apply (or already decided)."""

    __slots__ = ("row", "payload", "model", "kind", "text")

    def __init__(self, row, payload, model, kind, text):
        self.row, self.payload, self.model = row, payload, model
        self.kind, self.text = kind, text

    def __str__(self) -> str:
        key = self.payload.get("nk") if isinstance(self.payload, dict) else None
        return f"{self.row.producer}#{self.row.sequence} ({self.row.tx_name} {key})"


def _connection_lost(alias: str) -> bool:
    raw = connections[alias].connection
    return raw is not None and bool(getattr(raw, "broken", False)
                                    or getattr(raw, "closed", False) is True)


def units(pages):
    """Rows grouped by client database transaction: consecutive rows of one producer
    sharing ``db_transaction_id``, kept together across page boundaries."""
    return transaction_groups(itertools.chain.from_iterable(pages))


class Replayer:
    #: Whether runs of plain units go through ``batch.py``. The convergence tests turn it
    #: off on a reference node to compare the fast path with one unit at a time.
    fast_path = True

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
        self.messages = ReplayLog()
        #: producer -> {key: sequence of the earliest row not applied that touches it}
        self.held: dict[str, dict] = defaultdict(dict)
        #: The part of ``held`` that no retry in this run can lift (held conflicts, errors).
        self.stuck: dict[str, dict] = defaultdict(dict)
        self.counts: dict[str, int] = defaultdict(int)
        self.gaps: dict[str, list[tuple[int, int]]] = {}
        self.batch: list = []  # units of inserts and updates of one model, for the fast path
        self.batch_rows = 0
        self.deferred: list = []  # units to retry at the end of the run
        self.max_hlc = 0

    def run(self) -> ReplayLog:
        with replay_lock(self.alias):
            return self._run()

    def _run(self) -> ReplayLog:
        self.gaps = missing_ranges(self.alias)
        # The bookkeeping columns are not needed to replay and cost a third of the reading.
        pending = self.queryset.filter(is_consumed=False, is_error=False,
                                       is_ignored=False).only(*IDENTITY_FIELDS)
        self.deferred = []
        for unit in units(keyset_pages(pending, self.batch_size)):
            prepared = self._prepare_unit(unit)
            model = self._batch_model(prepared)
            if self.batch and (model is None or model is not self.batch[0][0].model):
                self._flush()
            if model is not None:
                self.batch.append(prepared)
                self.batch_rows += len(prepared)
                if self.batch_rows >= self.batch_size:
                    self._flush()
            elif prepared:
                self._replay_prepared(prepared)
            if self.progress:
                self.progress(dict(self.counts))
        self._flush()
        deferred = self.deferred
        while deferred:  # parents may have landed later in the run
            self.held = defaultdict(dict, {p: dict(stuck) for p, stuck in self.stuck.items()})
            self.deferred = []
            for unit in deferred:
                self.replay(unit)
            if len(self.deferred) == len(deferred):
                break
            deferred = self.deferred
        self._advance_clock()
        logger.info("Replay on %s: %s", self.alias,
                    ", ".join(f"{k} {v}" for k, v in sorted(self.messages.counts.items())))
        return self.messages

    def _batch_model(self, prepared: list):
        """The model if every row of the unit may take the fast path (``batch.py``), else None."""
        if not self.fast_path or not prepared or any(item.kind is not None for item in prepared):
            return None
        model = prepared[0].model
        if all(item.model is model and batch.batchable(model, item.payload, item.row.action)
               for item in prepared):
            return model
        return None

    def _flush(self) -> None:
        """Write the pending batch; units that need it go row by row, in order."""
        pending, self.batch, self.batch_rows = self.batch, [], 0
        if not pending:
            return
        done, slow = batch.apply(pending[0][0].model, pending, self.alias, self.held,
                                 self.node.name)
        for item, kind, text in done:
            self._report(item, kind, text)
            self.max_hlc = max(self.max_hlc, item.row.hlc)
        for unit in slow:
            self._replay_prepared(unit)

    def replay(self, unit: list) -> str:
        """Apply the rows of one client database transaction together, or none of them."""
        prepared = self._prepare_unit(unit)
        return self._replay_prepared(prepared) if prepared else ReplayOutcome.SKIPPED

    def _prepare_unit(self, unit: list) -> list:
        """The unit's rows ready to apply; rows this node leaves alone are reported here."""
        prepared = []
        for row in unit:
            item = self._prepare(row)
            if item.kind == ReplayOutcome.SKIPPED:
                self._report(item, item.kind, item.text)
            else:
                prepared.append(item)
        return prepared

    def _replay_prepared(self, prepared: list) -> str:
        """Returns the unit's outcome if it was not applied (deferred, held, error), else "applied"."""
        for item in prepared:  # checked now: rows applied since it was read may hold its keys
            self._hold_back(item)
        try:
            failed = next((item for item in prepared if item.kind is not None), None)
            if failed is not None:
                raise _UnitFailed(failed, ApplyStopped(failed.kind, failed.text))
            done = self._apply(prepared)
        except _UnitFailed as failure:
            kind = self._fail(prepared, failure)
            if kind == ReplayOutcome.DEFERRED:
                self.deferred.append([item.row for item in prepared])
            return kind
        for item, (kind, text) in zip(prepared, done):
            self._report(item, kind, text)
        return "applied"

    def _prepare(self, row) -> _Prepared:
        payload, model, kind, text, plain = {}, None, None, "", None
        try:
            plain = atrest.reveal(row.tx, row.id)
            payload = ser.loads(plain)
            if not isinstance(payload, dict) or "nk" not in payload:
                raise ValueError("not a syncrouter payload object")
        except ValueError as exc:
            kind, text = ReplayOutcome.ERROR, f"corrupt payload: {exc}"
        except atrest.KeyUnavailable as exc:  # heals when the key is added: it waits
            payload, kind, text = None, ReplayOutcome.DEFERRED, f"waits for its payload key: {exc}"
        except atrest.Tampered as exc:
            kind, text = ReplayOutcome.REFUSED, f"refused: {exc}"
        if kind is None:
            try:
                payload = decode.upgrade(payload)
            except ValueError as exc:
                kind, text = ReplayOutcome.ERROR, str(exc)
        if kind is None:
            model, kind, text = self._model(row, payload)
        if kind is None:  # signature, device registry and write rules (syncrouter.trust)
            text = trust.check(row, payload, model, self.alias, plain) or ""
            kind = ReplayOutcome.REFUSED if text else None
        if kind is None and self.check_hostname and own.is_own(row, self.node):
            kind, text = ReplayOutcome.SKIPPED, own.SKIPPED
        if kind is None:
            payload, kind, text = repairs.repair(model, payload, row)
        if kind is None and (row.action == "D" or "m2m" in payload):
            gap = self._gap_below(row)
            if gap is not None:  # an earlier change may still refer to the row or its links
                kind, text = ReplayOutcome.DEFERRED, (
                    f"waits for {row.producer}#{gap[0]}-{gap[1]}, not on this node yet: a "
                    "delete or link change waits for every earlier change of its producer")
        return _Prepared(row, payload, model, kind, text)

    def _hold_back(self, item: _Prepared) -> None:
        """Defer ``item`` if it touches a key an earlier row of its producer left unapplied."""
        held = self.held.get(item.row.producer)
        if item.kind is None and held:
            blocker = next((k for k in keys.touched(item.row, item.payload, item.model)
                            if k in held), None)
            if blocker is not None:
                item.kind = ReplayOutcome.DEFERRED
                item.text = (f"waits for {item.row.producer}#{held[blocker]} (" + (
                    "its payload cannot be read yet" if blocker == keys.UNREAD
                    else "same key, earlier") + ")")

    def _gap_below(self, row) -> tuple[int, int] | None:
        return next((gap for gap in self.gaps.get(row.producer, ()) if gap[0] < row.sequence),
                    None)

    def _model(self, row, payload):
        label = row.tx_name
        model = site_sync_models.get(label)
        if model is None:
            try:
                apps.get_model(label)
            except (LookupError, ValueError):
                return None, ReplayOutcome.ERROR, f"unknown model {label!r} on this node"
            return None, ReplayOutcome.ERROR, (f"model {label!r} is not registered for sync on this node; "
                                   "replay refuses to write it")
        if payload.get("model") != label:
            return None, ReplayOutcome.ERROR, (f"payload names model {payload.get('model')!r} but the "
                                   f"transaction is for {label!r}")
        return model, None, ""

    def _apply(self, prepared: list) -> list[tuple[str, str]]:
        """Apply and consume every row of a unit in one database transaction."""
        done = []
        with transaction.atomic(using=self.alias):
            with replaying(self.alias):
                for item in prepared:
                    try:
                        done.append(apply_row(item.model, item.row.action, item.payload,
                                              self.alias, item.row, self._gap_below(item.row)))
                    except ApplyStopped as outcome:
                        raise _UnitFailed(item, outcome) from None
                    except Exception as exc:  # isolate the unit: guarantee 7
                        raise _UnitFailed(item, self._failure(item, exc)) from exc
            for item, (_kind, text) in zip(prepared, done):
                if not self._consume(item.row, text):
                    raise _UnitFailed(item, ApplyStopped(ReplayOutcome.SKIPPED,
                                                    "already consumed by another replay"))
        self.max_hlc = max([self.max_hlc] + [item.row.hlc for item in prepared])
        return done

    def _failure(self, item: _Prepared, exc: Exception) -> ApplyStopped:
        """What an unexpected exception means for the unit: it waits if the database's
        state may change (``dberrors``), else it is an error. A lost connection ends the
        run instead: nothing can be marked on it."""
        reason = dberrors.waits(exc)
        if reason is not None:
            logger.info("Replay of %s waits: %s", item, reason)
            return ApplyStopped(ReplayOutcome.DEFERRED, reason)
        if isinstance(exc, DatabaseError) and _connection_lost(self.alias):
            raise exc
        logger.warning("Replay of %s failed", item, exc_info=True)
        return ApplyStopped(ReplayOutcome.ERROR, f"{type(exc).__name__}: {exc}")

    def _fail(self, prepared: list, failure: _UnitFailed) -> str:
        """Mark every row of a unit that was not applied, naming the member that stopped it."""
        member, kind, text = failure.member, failure.outcome.kind, failure.outcome.text
        with transaction.atomic(using=self.alias):
            if failure.outcome.ledger is not None:
                failure.outcome.ledger.save(using=self.alias)
                text = f"conflict #{failure.outcome.ledger.pk} {text}"
            for item in prepared:
                if item is member:
                    item_kind, item_text = kind, text
                else:
                    item_kind = kind if kind in (ReplayOutcome.ERROR, ReplayOutcome.REFUSED,
                                                 ReplayOutcome.SKIPPED) else ReplayOutcome.DEFERRED
                    item_text = (f"not applied: its database transaction also holds {member}, "
                                 f"which is {kind}: {text}")
                if item_kind != ReplayOutcome.SKIPPED:
                    self._mark(item.row, item_kind, item_text)
                self._report(item, item_kind, item_text)
                if item_kind != ReplayOutcome.SKIPPED:  # what it would have written waits with it
                    unread = item.payload is None  # all its producer's keys (keys.UNREAD)
                    for key in keys.own(item.row, item.payload) if item.model or unread else ():
                        self.held[item.row.producer].setdefault(key, item.row.sequence)
                        if kind != ReplayOutcome.DEFERRED:
                            self.stuck[item.row.producer].setdefault(key, item.row.sequence)
        return kind

    def _consume(self, row, text: str) -> bool:
        return bool(type(row).objects.using(self.alias).filter(pk=row.pk, is_consumed=False)
                    .update(is_consumed=True, is_deferred=False, is_error=False, error=text,
                            consumed_datetime=timezone.now(), consumer=self.node.name))

    def _mark(self, row, kind: str, text: str) -> None:
        type(row).objects.using(self.alias).filter(pk=row.pk).update(
            is_deferred=kind in (ReplayOutcome.DEFERRED, HELD),
            is_error=kind in (ReplayOutcome.ERROR, ReplayOutcome.REFUSED),
            is_refused=kind == ReplayOutcome.REFUSED, error=text)

    def _report(self, item: _Prepared, kind: str, text: str) -> None:
        row, payload = item.row, item.payload
        self.counts[kind] += 1
        self.messages.record(
            row.id, row.producer, row.sequence, row.tx_name,
            payload.get("nk") if isinstance(payload, dict) else None, row.action,
            ReplayOutcome.CONFLICT if kind == HELD else kind, text)
        if kind == ReplayOutcome.ERROR:
            logger.warning("%s#%s %s: %s", row.producer, row.sequence, row.tx_name, text)

    def _advance_clock(self) -> None:
        """Hybrid logical clock receive rule: this node's clock passes every replayed change."""
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
                    progress: Callable[[dict], None] | None = None, *,
                    dry_run: bool = False, deserialize_only: bool = False) -> ReplayLog:
        """Replay these incoming transactions on this queryset's alias.

        ``custom_device`` is the node doing the replay (recorded as consumer; a
        node whose role is ``client`` refuses; see ``devices.py``). With
        ``check_hostname=True``, this node's own transactions (by node name,
        ``own.py``) are left untouched and reported. ``dry_run=True`` (or the older tools'
        ``deserialize_only=True``) reports what would happen and writes nothing
        (``dryrun.py``).
        Returns one ``ReplayMessage`` per transaction looked at, in a
        ``ReplayLog``: a sequence that stores them in about 60 bytes each and
        builds each message when it is read, so that a replay of a million
        transactions fits in a small process; ``.counts`` gives the number per
        outcome without building any.
        """
        replayer = Replayer(self, custom_device, check_hostname, batch_size, progress)
        return dryrun.rehearse(replayer) if dry_run or deserialize_only else replayer.run()
