"""django-simple-history: history models register with their tracked models, their rows
travel by natural key, and replay writes no history row of its own.

``Specimen`` has plain ``history = HistoricalRecords()`` (an integer ``history_id``,
keyed by the tracked id and ``history_date``); the seed CRFs ``MaternalCrf`` and
``OfflineCrf`` have edc-base's UUID ``history_id`` (keyed by it). The producer
writes on the local alias, where django-simple-history writes its rows by default,
so the pairs are SQLite -> SQLite and SQLite -> PostgreSQL.
"""
import datetime
import uuid
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import User
from django.core import checks
from django.test import override_settings
from hypothesis import HealthCheck, given, settings, strategies as st

from syncrouter import history
from syncrouter.compat import site_offline_models
from syncrouter.exceptions import SyncError
from syncrouter.models import Conflict, IncomingTransaction, OutgoingTransaction
from syncrouter.registry import site_sync_models
from tests.support import factories, pg
from tests.support.checksum import table_checksum
from tests.support.nodes import PAIRS, Nodes
from tests.support.replay import TRANSACTIONAL, push, replay
from tests.testapp.models import (
    Bed,
    HistoricalSpecimen,
    MaternalCrf,
    OfflineCrf,
    Room,
    Specimen,
    Ward,
)

pytestmark = TRANSACTIONAL

HISTORY_PAIRS = ["sqlite-sqlite", "sqlite-postgres"]
TRACKED = (Specimen, MaternalCrf, OfflineCrf)


@pytest.fixture(params=HISTORY_PAIRS)
def history_nodes(request) -> Nodes:
    client, server = PAIRS[request.param]
    if "pg" in server and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    return Nodes(client, server)


@contextmanager
def registered(*labels, **kwargs):
    """Register ``labels`` for the block (the registry is process-wide)."""
    registry = kwargs.pop("registry", site_sync_models)
    registry.register(list(labels), **kwargs)
    try:
        yield
    finally:
        for label in labels:
            site_sync_models.unregister(label)


def replay_here(alias) -> dict:
    """Replay on ``alias`` as its own node does: with it as the local alias, where
    django-simple-history writes by default (so a stray history row would land there)."""
    with override_settings(SYNCROUTER_LOCAL_ALIAS=alias):
        return replay(alias)


def histories(alias) -> dict:
    """Per history model: (rows, checksum) of the rows as they travel (no local ids)."""
    return {model: table_checksum(history.history_model(model), alias) for model in TRACKED}


def history_count(alias) -> int:
    return sum(history.history_model(m).objects.using(alias).count() for m in TRACKED)


def visit(alias, subject="S001"):
    return factories.visit(alias, factories.member(alias, factories.household(
        alias, f"H-{subject}"), subject))


def field_work(alias, user, subject="S001"):
    """A specimen and two CRFs created, edited twice by ``user`` and partly deleted."""
    sv = visit(alias, subject)
    specimen = Specimen(subject_visit=sv, specimen_identifier=f"SP-{subject}",
                        collected=datetime.date(2026, 5, 1))
    specimen._history_user = user
    specimen.save(using=alias)
    for volume in (2, 3):
        specimen.volume_ml = volume
        specimen.save(using=alias)
    maternal = MaternalCrf.objects.using(alias).create(maternal_visit=sv, weight_kg=61)
    maternal.weight_kg = 62
    maternal.save(using=alias)
    offline = OfflineCrf.objects.using(alias).create(visit=sv, outcome="ill")
    offline.delete(using=alias)
    return specimen


def test_registration_brings_the_history_model():
    """Mixin models (Specimen, MaternalCrf) at start-up, offline_models.py (OfflineCrf)."""
    for model in TRACKED:
        assert site_sync_models.is_registered(history.history_model(model)), model
    assert site_sync_models.history_problems == {}
    assert not [e for e in checks.run_checks(databases=[]) if e.id == "syncrouter.E005"]


def test_history_key_is_history_id_when_it_is_a_uuid_else_tracked_id_and_date():
    maternal, specimen = history.history_model(MaternalCrf), HistoricalSpecimen
    row = maternal(history_id="6f1c4a34-5a4e-4c0e-9d51-0a5f2c8d2b11")
    assert row.natural_key() == (row.history_id,)
    when = datetime.datetime(2026, 5, 1, tzinfo=datetime.timezone.utc)
    row = specimen(id="0a5f2c8d-2b11-4c0e-9d51-6f1c4a345a4e", history_date=when)
    assert row.natural_key() == (row.id, when)
    with pytest.raises(ValueError, match="2 parts"):
        specimen.objects.get_by_natural_key("only-one")


def test_opting_out_per_model_per_call_and_per_registry(monkeypatch):
    """Ward's history cannot travel (auto pk); each opt-out registers Ward alone."""
    historical_ward = history.history_model(Ward)
    with registered("testapp.ward", history=False):
        assert not site_sync_models.is_registered(historical_ward)
    monkeypatch.setattr(Ward, "sync_history", False, raising=False)
    with registered("testapp.ward"):
        assert not site_sync_models.is_registered(historical_ward)
    monkeypatch.delattr(Ward, "sync_history")
    monkeypatch.setattr(site_offline_models, "register_historical", False)
    with registered("testapp.ward", registry=site_offline_models):
        assert not site_sync_models.is_registered(historical_ward)
    assert not site_sync_models.is_registered(Ward)


@pytest.mark.parametrize("model, reason", [
    (Ward, "auto-increment key that differs on every node"),
    (Room, r"foreign key to testapp.room \(HistoricalRecords\(related_name"),
    (Bed, r"m2m_fields"),
])
def test_a_history_that_cannot_travel_is_refused_by_name(model, reason):
    label = model._meta.label_lower
    with pytest.raises(SyncError, match=f"testapp.historical{model._meta.model_name} .*{reason}"):
        site_sync_models.register([label])
    assert not site_sync_models.is_registered(model)


def test_a_mixin_model_whose_history_cannot_travel_fails_the_system_check():
    site_sync_models.register_mixin_model(Ward)
    try:
        errors = [e for e in checks.run_checks(databases=[]) if e.id == "syncrouter.E005"]
        assert [e.obj for e in errors] == [Ward] and "auto-increment" in errors[0].msg
        assert not site_sync_models.is_registered(history.history_model(Ward))
    finally:
        site_sync_models.unregister(Ward)
        del site_sync_models.history_problems[Ward]


def test_a_history_model_named_by_hand_is_checked_like_a_companion():
    """The seeds' advice holds: a history model comes with its model, so naming it as
    well is registering it twice; one that cannot travel is refused either way."""
    with pytest.raises(SyncError, match="historicalspecimen is already registered"):
        site_sync_models.register(["testapp.historicalspecimen"])
    with registered("testapp.ward", history=False):
        with pytest.raises(SyncError, match="historicalward cannot travel.*auto-increment"):
            site_sync_models.register(["testapp.historicalward"])


def test_history_rows_travel_with_their_dates_and_users(history_nodes):
    nodes = history_nodes
    user = User.objects.using(nodes.client).create(username="ra-neo")
    field_work(nodes.client, user)
    client_history = histories(nodes.client)
    push(nodes)
    messages = replay_here(nodes.server)
    assert {m.outcome for m in messages.values()} == {"inserted", "updated", "deleted"}
    assert histories(nodes.server) == client_history
    rows = HistoricalSpecimen.objects.using(nodes.server).order_by("history_date")
    assert [r.history_type for r in rows] == ["+", "~", "~"]
    assert {r.history_user.username for r in rows} == {"ra-neo"}
    source = HistoricalSpecimen.objects.using(nodes.client).order_by("history_date")
    assert [r.history_date for r in rows] == [r.history_date for r in source]
    maternal = history.history_model(MaternalCrf)
    assert sorted(maternal.objects.using(nodes.server).values_list("history_id", flat=True)) \
        == sorted(maternal.objects.using(nodes.client).values_list("history_id", flat=True))
    offline = history.history_model(OfflineCrf).objects.using(nodes.server)
    assert sorted(offline.values_list("history_type", flat=True)) == ["+", "-"]
    assert replay_here(nodes.server) == {}  # nothing left, nothing written twice
    IncomingTransaction.objects.using(nodes.server).update(is_consumed=False)
    # With every mark reset nothing says which changes are old: the CRF deleted later is
    # inserted and deleted again; everything else is already here.
    again = replay_here(nodes.server).values()
    assert {m.outcome for m in again if m.model != "testapp.offlinecrf"} == {"skipped"}
    assert histories(nodes.server) == client_history


def test_replay_through_save_writes_no_history_row_of_its_own(history_nodes, monkeypatch):
    """``sync_replay_save`` sends post_save, the delete post_delete: neither may add a
    history row on the server (each round is replayed before the next is written, so
    that no change is skipped as superseded)."""
    nodes = history_nodes
    monkeypatch.setattr(Specimen, "sync_replay_save", True, raising=False)
    specimen = Specimen.objects.using(nodes.client).create(
        subject_visit=visit(nodes.client), specimen_identifier="SP-1")
    for done in ("inserted", "updated", "deleted"):
        if done == "updated":
            specimen.volume_ml = 4
            specimen.save(using=nodes.client)
        elif done == "deleted":
            specimen.delete(using=nodes.client)
        push(nodes)
        outcomes = {m.model: m.outcome for m in replay_here(nodes.server).values()}
        assert outcomes["testapp.specimen"] == done
        assert history_count(nodes.server) == history_count(nodes.client)
    assert not Specimen.objects.using(nodes.server).exists()
    assert histories(nodes.server) == histories(nodes.client)


def test_fast_path_replay_writes_no_history_row_of_its_own(history_nodes):
    """Tracked rows written without history on the client (a bulk insert, a delete with
    history switched off) replay on the fast path, whose delete sends post_delete: still
    no history row on the server."""
    nodes = history_nodes
    OfflineCrf.objects.using(nodes.client).bulk_create([OfflineCrf(visit=visit(nodes.client))])
    push(nodes)
    replay_here(nodes.server)
    with override_settings(SIMPLE_HISTORY_ENABLED=False):
        OfflineCrf.objects.using(nodes.client).all().delete()
    push(nodes)
    assert [m.outcome for m in replay_here(nodes.server).values()] == ["deleted"]
    assert not OfflineCrf.objects.using(nodes.server).exists()
    assert history_count(nodes.server) == history_count(nodes.client) == 0


def test_deleting_history_rows_stays_local(history_nodes):
    """Pruning a laptop's history leaves the server's audit trail whole."""
    nodes = history_nodes
    field_work(nodes.client, None)
    push(nodes)
    replay_here(nodes.server)
    outbox = OutgoingTransaction.objects.using(nodes.client).count()
    HistoricalSpecimen.objects.using(nodes.client).all().delete()
    history.history_model(MaternalCrf).objects.using(nodes.client).all().delete()
    assert OutgoingTransaction.objects.using(nodes.client).count() == outbox
    assert HistoricalSpecimen.objects.using(nodes.server).count() == 3


def test_two_history_rows_at_one_instant_are_a_conflict_not_a_merge(history_nodes):
    """An integer history_id keys rows by (id, history_date): a clash is held, named."""
    nodes = history_nodes
    specimen = field_work(nodes.client, None)
    when = HistoricalSpecimen.objects.using(nodes.client).latest().history_date
    specimen.volume_ml = 9
    specimen._history_date = when
    specimen.save(using=nodes.client)
    push(nodes)
    messages = replay_here(nodes.server)
    clash = [m for m in messages.values() if m.model == "testapp.historicalspecimen"
             and m.outcome == "conflict"]
    assert len(clash) == 1 and Conflict.objects.using(nodes.server).count() == 1
    assert HistoricalSpecimen.objects.using(nodes.server).count() == 3
    assert HistoricalSpecimen.objects.using(nodes.server).filter(volume_ml=9).count() == 0


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_edit_sequence_arrives_as_the_same_history(history_nodes, data):
    """Random edits, deletes and users, copied and replayed in random slices: the
    server's history equals the client's, row for row, and holds nothing more."""
    nodes = history_nodes
    serial = uuid.uuid4().hex[:8]  # examples share the database (one may stop half-way)
    users = [User.objects.using(nodes.client).get_or_create(username=name)[0]
             for name in ("ra-1", "ra-2")]
    sv = visit(nodes.client, f"P{serial}")
    specimens = []
    for step in data.draw(st.lists(st.sampled_from(["new", "edit", "delete", "crf"]),
                                   min_size=1, max_size=12)):
        live = [s for s in specimens if s.pk is not None]
        if step == "new" or not live:
            specimen = Specimen(subject_visit=sv,
                                specimen_identifier=f"SP{serial}-{len(specimens)}")
            specimens.append(specimen)
        elif step == "crf":
            crf = OfflineCrf.objects.using(nodes.client).filter(visit=sv).first()
            if crf is None:
                OfflineCrf.objects.using(nodes.client).create(visit=sv)
            else:
                crf.outcome = data.draw(st.sampled_from(["well", "ill"]))
                crf.save(using=nodes.client)
            continue
        else:
            specimen = data.draw(st.sampled_from(live))
            if step == "delete":
                specimen.delete(using=nodes.client)
                continue
        specimen.volume_ml = data.draw(st.integers(0, 99))
        specimen._history_user = data.draw(st.sampled_from([None, *users]))
        specimen.save(using=nodes.client)
    pending = OutgoingTransaction.objects.using(nodes.client).filter(is_consumed_server=False)
    while pending.exists():
        cut = data.draw(st.integers(1, 8))
        first = pending.order_by("sequence")[:cut]
        OutgoingTransaction.objects.using(nodes.client).filter(
            pk__in=list(first.values_list("pk", flat=True))).copy_to_incoming_transaction(
            nodes.server)
        replay_here(nodes.server)
    assert histories(nodes.server) == histories(nodes.client)
