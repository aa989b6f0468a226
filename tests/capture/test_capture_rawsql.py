"""The raw-SQL guard: writes to registered tables that capture cannot see are loud."""
import logging

import pytest
from django.contrib.auth.models import Group, User
from django.db import connections

from syncrouter.capture import rawsql
from syncrouter.exceptions import SyncError
from tests.support import factories
from tests.testapp.models import Clinic, Household, LocalNote, Referral

ALIASES = ["client", "pgclient"]


@pytest.fixture(params=ALIASES)
def alias(request):
    if request.param not in connections.settings:
        pytest.skip("PostgreSQL not configured")
    factories.load_symptoms(request.param)
    return request.param


def execute(alias, sql, params=()):
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)


def guard_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncrouter.rawsql"]


def test_raw_update_warns_naming_table_and_kind(alias, caplog):
    factories.household(alias)
    with caplog.at_level(logging.WARNING, logger="syncrouter.rawsql"):
        execute(alias, "UPDATE testapp_household SET village = %s", ["Kanye"])
    [message] = guard_warnings(caplog)
    assert message.startswith("UPDATE on 'testapp_household'")
    assert Household.objects.using(alias).get().village == "Kanye"  # warn lets it run


def test_raw_update_with_raise_is_refused_before_it_runs(alias, settings):
    factories.household(alias)
    settings.SYNCROUTER_RAW_SQL = "raise"
    with pytest.raises(SyncError, match="UPDATE on 'testapp_household'.*bypasses syncrouter"):
        execute(alias, 'UPDATE "testapp_household" SET "village" = %s', ["Kanye"])
    with pytest.raises(SyncError, match="DELETE on 'testapp_crfone_symptoms'"):
        execute(alias, "DELETE FROM testapp_crfone_symptoms")
    with pytest.raises(SyncError, match="INSERT on 'auth_group'"):
        execute(alias, "/* hand-written */ INSERT INTO auth_group (name) VALUES ('x')")
    assert Household.objects.using(alias).get().village == "Ramotswa"


def test_off_and_unregistered_tables_and_reads_are_silent(alias, settings, caplog):
    factories.household(alias)
    with caplog.at_level(logging.WARNING, logger="syncrouter.rawsql"):
        execute(alias, "SELECT village FROM testapp_household")
        execute(alias, "INSERT INTO testapp_localnote (id, text) VALUES (%s, 'n')",
                ["0" * 32 if alias == "client" else "00000000-0000-0000-0000-000000000000"])
        LocalNote.objects.using(alias).update(text="m")
        settings.SYNCROUTER_RAW_SQL = "off"
        execute(alias, "UPDATE testapp_household SET village = 'x'")
    assert guard_warnings(caplog) == []


def test_every_orm_path_is_marked_as_captured(alias, settings):
    """With "raise", the ORM paths capture sees run without a SyncError."""
    settings.SYNCROUTER_RAW_SQL = "raise"
    hh = factories.household(alias)
    crf = factories.crf(alias, factories.visit(alias, factories.member(alias, hh)))
    crf.symptoms.remove(*crf.symptoms.all())
    crf.symptoms.clear()
    crf.delete()
    clinics = Clinic.objects.using(alias).bulk_create([Clinic(code="C1", name="a")])
    Clinic.objects.using(alias).bulk_update(clinics, ["name"])
    referral = Referral.objects.using(alias).create(code="R")
    referral.clinics.set(clinics)
    Clinic.objects.using(alias).all().delete()
    user = User.objects.using(alias).create(username="u")
    user.groups.add(Group.objects.using(alias).create(name="g"))
    Household.objects.using(alias).update(village="v")
    User.objects.using(alias).all().delete()


def test_prefilter_and_parser():
    writes = rawsql.writes_to_registered
    assert writes("SELECT * FROM testapp_household") == []
    assert writes("UPDATE testapp_householdmember SET first_name = 'x'") == [
        ("UPDATE", "testapp_householdmember")]
    assert writes("INSERT INTO testapp_localnote SELECT id, village FROM testapp_household") == []
    assert writes("TRUNCATE TABLE testapp_clinic, testapp_person") == [
        ("TRUNCATE", "testapp_clinic"), ("TRUNCATE", "testapp_person")]
    assert writes("WITH gone AS (DELETE FROM auth_user RETURNING id) SELECT 1") == [
        ("DELETE", "auth_user")]


def test_unparseable_flagged_statement_counts_as_a_write():
    """sqlparse refuses statements above 10,000 tokens."""
    ids = ", ".join(str(i) for i in range(6000))
    sql = f"UPDATE testapp_clinic SET name = 'x' WHERE id IN ({ids})"
    assert rawsql.writes_to_registered(sql) == [("UPDATE", "testapp_clinic")]
