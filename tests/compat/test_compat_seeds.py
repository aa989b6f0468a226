"""The seed READMEs' snippets, as their users wrote them: only imports differ (and the
labels, which name this test app's models and apps). Their model code is in
``tests/testapp/seed_models.py``, their ``offline_models.py`` in the test app.

Then the older tools' own call forms that are not in the READMEs: ``register(models=...)``
(their ``register_for_app``), ``(label, SyncModel)`` items, the listing without an app.
"""
import pytest
from django.test import override_settings

from syncrouter.compat import (
    AlreadyRegistered,
    ListedModel,
    OfflineModel,
    SyncModel,
    site_offline_models,
)
from syncrouter.exceptions import SyncError
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from syncrouter.registry import site_sync_models
from tests.support import factories
from tests.support.checksum import node_checksums
from tests.testapp.models import (
    LocalNote,
    MaternalCrf,
    OfflineCrf,
    Specimen,
    Symptom,
)


class Device:
    """edc-device's device (a community server), as the seeds' ``device`` was."""

    device_id = "98"
    device_role = "NodeServer"
    is_server = True


device = Device()


def field_visit(alias):
    return factories.visit(alias, factories.member(alias, factories.household(alias)))


def crfs(alias):
    """A CRF of each seed, created, edited and (django-offline's) deleted."""
    visit = field_visit(alias)
    maternal = MaternalCrf.objects.using(alias).create(maternal_visit=visit, weight_kg=60)
    maternal.weight_kg = 61
    maternal.save()
    OfflineCrf.objects.using(alias).create(visit=visit, outcome="ill").delete()


# --- seed 000 / 001 (edc-sync) --------------------------------------------------

def test_allow_model_serialization_false_disables_capture():
    # to disable add this to your settings.py
    with override_settings(ALLOW_MODEL_SERIALIZATION=False):  # (default: True)
        crfs("client")
    assert not OutgoingTransaction.objects.using("client").exists()


def test_sync_model_mixin_captures_inserts_updates_and_deletes_on_the_models_db():
    """"SyncModelMixin creates OutgoingTransaction instances on the same DB as the model
    for all inserts, updates and deletes" (and, with its history, the history rows)."""
    visit = field_visit("client")
    crf = MaternalCrf.objects.using("client").create(maternal_visit=visit)
    crf.weight_kg = 70
    crf.save()
    crf.delete()
    rows = OutgoingTransaction.objects.using("client").filter(tx_name__endswith="maternalcrf")
    assert [(r.tx_name, r.action) for r in rows] == [
        ("testapp.historicalmaternalcrf", "I"), ("testapp.maternalcrf", "I"),
        ("testapp.historicalmaternalcrf", "I"), ("testapp.maternalcrf", "U"),
        ("testapp.historicalmaternalcrf", "I"), ("testapp.maternalcrf", "D")]
    assert not OutgoingTransaction.objects.using("server").exists()


def test_seed_000_copy_then_deserialize_on_the_server_process():
    crfs("client")
    OutgoingTransaction.objects.using('client').filter(
            is_consumed_server=False).copy_to_incoming_transaction('server')
    with override_settings(SYNCROUTER_LOCAL_ALIAS="server"):  # run on the server
        messages = IncomingTransaction.objects.filter(
            is_consumed=False).deserialize(custom_device=device, check_hostname=False)
    assert messages and all(m.success for m in messages)
    assert node_checksums("server") == node_checksums("client")


def test_seed_001_deserialize_names_the_server_alias():
    crfs("client")
    OutgoingTransaction.objects.using('client').filter(
            is_consumed_server=False).copy_to_incoming_transaction('server')
    messages = IncomingTransaction.objects.using('server').filter(
        is_consumed=False).deserialize(custom_device=device, check_hostname=False)
    assert sum(m.inserted for m in messages) == messages.counts["inserted"]
    assert node_checksums("server") == node_checksums("client")


def test_the_seeds_flow_on_every_database_pair(nodes):
    """The same calls with the pair's aliases: SQLite -> PostgreSQL and PostgreSQL too."""
    crfs(nodes.client)
    OutgoingTransaction.objects.using(nodes.client).filter(
        is_consumed_server=False).copy_to_incoming_transaction(nodes.server)
    messages = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(custom_device=device, check_hostname=False)
    assert all(m.success for m in messages)
    assert node_checksums(nodes.server) == node_checksums(nodes.client)
    assert MaternalCrf.objects.using(nodes.server).get().weight_kg == 61


def test_a_natural_key_made_of_the_visits_key_finds_the_crf():
    """The seeds' ``(self.visit.natural_key(), )``: one part that is itself a key."""
    crf = MaternalCrf.objects.using("client").create(maternal_visit=field_visit("client"))
    assert crf.natural_key() == (("S001", "1000"),)
    assert MaternalCrf.objects.db_manager("client").get_by_natural_key(["S001", "1000"]) == crf


# --- seed 002 (django-offline) --------------------------------------------------

def test_offline_models_py_registered_the_crf_and_its_history():
    # site_offline_models.register(offline_models, OfflineModel), in offline_models.py
    assert site_offline_models.is_registered(OfflineCrf)
    assert "testapp.historicalofflinecrf" in site_offline_models


def test_listing_an_apps_models_to_build_the_registration_list():
    # list all models in app 'bcpp_household' set for offline-use
    models = site_offline_models.site_models('testapp', sync=True)
    assert {m.model._meta.label_lower for m in models} >= {
        "testapp.offlinecrf", "testapp.historicalofflinecrf", "testapp.specimen",
        "testapp.historicalspecimen", "testapp.crfone"}
    assert all(isinstance(m, ListedModel) and m.sync and m.offline for m in models)

    # list all models in app 'bcpp_household' NOT set for offline-use
    models = site_offline_models.site_models('testapp', offline=False)

    # list all models in app 'bcpp_household' not set for offline-use, excluding the
    # "historical" models
    offline_models = [m.model._meta.label_lower for m in models if 'historical' not in m.model_name]
    assert offline_models == ["testapp.bed", "testapp.localnote", "testapp.room",
                              "testapp.symptom", "testapp.ward"]
    assert {m.model_name for m in models} > {"historicalward", "historicalroom", "ward"}

    # To create the model list for an apps offline_models.py, open a shell and list all
    # models not yet registered for offline-use:
    models = site_offline_models.site_models('testapp', offline=False)
    listed = [m.model._meta.label_lower for m in models if 'historical' not in m.model_name]
    assert listed == offline_models


def test_registering_from_the_listing_moves_a_model_across():
    site_offline_models.register(["testapp.localnote", "testapp.symptom"], OfflineModel)
    try:
        assert [m.model for m in site_offline_models.site_models("testapp", offline=False)
                if m.model in (LocalNote, Symptom)] == []
        assert {LocalNote, Symptom} <= {m.model for m in
                                        site_offline_models.site_models("testapp", sync=True)}
    finally:
        site_sync_models.unregister(LocalNote)
        site_sync_models.unregister(Symptom)


# --- the older tools' other call forms ------------------------------------------

@pytest.mark.parametrize("call", [
    lambda labels: site_sync_models.register(labels, SyncModel),        # edc-sync
    lambda labels: site_offline_models.register(labels, OfflineModel),  # django-offline
    lambda labels: site_offline_models.register(models=labels),         # register_for_app
    lambda labels: site_sync_models.register(models=labels),
    lambda labels: site_sync_models.register([(label, SyncModel) for label in labels],
                                             SyncModel),
    lambda labels: site_offline_models.register(models=labels, wrapper_cls=OfflineModel),
    lambda labels: site_sync_models.register(labels),                   # syncrouter's own
], ids=["edc-sync", "django-offline", "models=", "modern models=", "tuples", "wrapper_cls=",
        "modern"])
def test_every_register_form_registers(call):
    call(["testapp.localnote"])
    try:
        assert site_sync_models.is_registered(LocalNote)
        with pytest.raises(AlreadyRegistered, match="testapp.localnote is already registered"):
            call(["testapp.localnote"])
    finally:
        site_sync_models.unregister(LocalNote)


def test_register_for_app_leaves_history_models_to_their_tracked_models():
    """Everything of testapp not yet registered but the models whose history cannot
    travel: their history models are skipped, not registered by hand."""
    done = {m._meta.label_lower for m in site_sync_models}
    site_offline_models.register_for_app(
        "testapp", exclude_models=[*done, "testapp.ward", "testapp.room", "testapp.bed"])
    try:
        assert {m._meta.label_lower for m in site_sync_models} - done == {
            "testapp.localnote", "testapp.symptom"}
    finally:
        for label in {m._meta.label_lower for m in site_sync_models} - done:
            site_sync_models.unregister(label)


@pytest.mark.parametrize("call, error, message", [
    (lambda: site_sync_models.register(["testapp.localnote"], dict), SyncError,
     "<class 'dict'> is not a wrapper syncrouter knows"),
    (lambda: site_sync_models.register(["testapp.localnote"], type("Mine", (OfflineModel,), {})),
     SyncError, "Mine'> is not a wrapper syncrouter knows"),
    (lambda: site_sync_models.register(["testapp.localnote"], SyncModel, SyncModel), TypeError,
     "at most 2 positional arguments but 3 were given"),
    (lambda: site_sync_models.register(model=["testapp.localnote"]), TypeError,
     "unexpected keyword argument 'model'"),
    (lambda: site_sync_models.register(["testapp.localnote"], models=["testapp.symptom"]),
     TypeError, "got the models twice"),
    (lambda: site_sync_models.register(), TypeError, "needs the models"),
    (lambda: site_offline_models.site_models("testapp", sync=True, offline=False), TypeError,
     "they mean the same"),
    (lambda: site_offline_models.site_models("no_such_app", sync=True), LookupError,
     "no_such_app"),
])
def test_a_wrong_old_call_is_a_clear_error_and_registers_nothing(call, error, message):
    with pytest.raises(error, match=message):
        call()
    assert not site_sync_models.is_registered(LocalNote)
    assert not site_sync_models.is_registered(Symptom)


def test_listing_without_an_app_is_per_app_and_items_describe_themselves():
    listing = site_sync_models.site_models(sync=False)
    assert {"auth", "testapp", "syncrouter"} <= set(listing)
    assert "testapp.bed" in {m.model._meta.label_lower for m in listing["testapp"]}
    ward = next(m for m in listing["testapp"] if m.model_name == "ward")
    assert (repr(ward), str(ward), ward.app_label) == (
        "ListedModel(testapp.ward, sync=False)", "ward", "testapp")
    assert site_sync_models.site_models("syncrouter", sync=True) == []  # not None
    assert site_sync_models.site_models("testapp") == [
        m for m in site_sync_models if m._meta.app_label == "testapp"]  # the modern form


def test_a_wrapper_checks_the_natural_key_as_the_older_tools_did():
    specimen = Specimen(specimen_identifier="SP-1")
    assert str(OfflineModel(specimen)) == "testapp.specimen"
    assert repr(SyncModel(specimen)).startswith("SyncModel(<Specimen")
    with pytest.raises(SyncError, match="syncrouter.incomingtransaction cannot be synchronised: "
                                        "it needs the model method"):
        SyncModel(IncomingTransaction())
