"""Capture never breaks a valid write, and every value arrives as the client stores it.

Issue 15, items 2 and 3: ``F()`` expressions and integers beyond 64 bits in a JSON
field made ``save()`` fail; ``inf``/``nan`` arrived as NULL; a datetime whose zone
offset has seconds arrived 30 seconds off; a generic foreign key carried the
client's local id. Each runs on every database pair; a property test writes
generated values of every field type Django ships and compares the server's row
with what the client's database holds.
"""
import datetime
import decimal
import json
import math
import uuid
import zoneinfo

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connections
from django.db.models import F, JSONField, Value
from django.utils import timezone
from hypothesis import HealthCheck, given, settings, strategies as st

from syncrouter import serialization as ser
from syncrouter.exceptions import SyncError
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from tests.support import factories
from tests.testapp.models import Annotation, Clinic, CrfOne, EveryField

MONROVIA = zoneinfo.ZoneInfo("Africa/Monrovia")  # -00:44:30 until 1972


def sync(nodes) -> list:
    OutgoingTransaction.objects.using(nodes.client).filter(
        is_consumed_server=False).copy_to_incoming_transaction(nodes.server)
    return IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False)


def synced(nodes) -> list:
    messages = sync(nodes)
    bad = [m for m in messages if m.outcome in ("error", "deferred", "conflict")]
    assert not bad, bad
    return messages


def last_payload(alias) -> dict:
    return ser.loads(OutgoingTransaction.objects.using(alias).order_by("-sequence").first().tx)


def stored(model, alias, code) -> dict:
    obj = model._base_manager.using(alias).get(code=code)
    return {f.name: getattr(obj, f.attname) for f in ser.synced_fields(model)}


def _json_number(value):
    """A JSON value with its numbers as decimals: PostgreSQL's jsonb gives 1e+300 back as
    the integer 10**300, the same JSON number."""
    return json.loads(json.dumps(value), parse_float=decimal.Decimal, parse_int=decimal.Decimal)


def assert_same_rows(model, nodes, code) -> None:
    client, server = stored(model, nodes.client, code), stored(model, nodes.server, code)
    for name, value in client.items():
        theirs = server[name]
        if isinstance(value, memoryview):
            value, theirs = bytes(value), bytes(theirs)
        if isinstance(model._meta.get_field(name), JSONField):
            value, theirs = _json_number(value), _json_number(theirs)
        assert ser.same(value, theirs) and type(value) is type(theirs), (name, value, theirs)


def crf(nodes, **values):
    member = factories.member(nodes.client, factories.household(nodes.client))
    return factories.crf(nodes.client, factories.visit(nodes.client, member), **values)


# F() and other expressions: the row is read back after the write.

def test_save_with_an_f_expression_carries_the_value_stored(nodes):
    obj = crf(nodes, cigarettes_per_day=4)
    obj.cigarettes_per_day = F("cigarettes_per_day") + 1
    obj.save()
    assert last_payload(nodes.client)["fields"]["cigarettes_per_day"] == 5
    assert last_payload(nodes.client)["before"] == {"cigarettes_per_day": 4}
    synced(nodes)
    assert CrfOne.objects.using(nodes.server).get().cigarettes_per_day == 5


def test_insert_with_expressions_by_save_and_bulk_create(nodes):
    EveryField.objects.using(nodes.client).create(code="E1", integer=Value(2) + Value(3))
    EveryField.objects.using(nodes.client).bulk_create(
        [EveryField(code="E2", integer=Value(7) * 6), EveryField(code="E3", integer=1)])
    synced(nodes)
    assert dict(EveryField.objects.using(nodes.server).values_list("code", "integer")) == {
        "E1": 5, "E2": 42, "E3": 1}


def test_update_and_bulk_update_with_expressions(nodes):
    EveryField.objects.using(nodes.client).create(code="E1", integer=1, float=0.5)
    EveryField.objects.using(nodes.client).update(integer=F("integer") * 10)
    obj = EveryField.objects.using(nodes.client).get()
    obj.float = F("float") + 1
    EveryField.objects.using(nodes.client).bulk_update([obj], ["float"])
    synced(nodes)
    assert_same_rows(EveryField, nodes, "E1")
    assert EveryField.objects.using(nodes.server).values_list("integer", "float").get() == (
        10, 1.5)


def test_a_decimal_with_more_places_than_its_column_arrives_as_the_client_rounded_it(nodes):
    """SQLite and PostgreSQL round 1.25 to one place differently: the client's wins."""
    obj = crf(nodes, weight_kg=decimal.Decimal("1.25"))
    obj.weight_kg = decimal.Decimal("2.35")
    obj.save()
    synced(nodes)
    assert CrfOne.objects.using(nodes.server).get().weight_kg == \
        CrfOne.objects.using(nodes.client).get().weight_kg


# Integers beyond 64 bits in JSON.

def test_json_integers_beyond_64_bits_are_saved_and_arrive_exactly(nodes):
    value = {"n": 2 ** 70, "m": [-(2 ** 80), 2 ** 64 - 1, -(2 ** 63)], "k": {"x": 10 ** 30}}
    obj = crf(nodes, extra=value)
    obj.extra = {**value, "again": 2 ** 65}
    obj.save()
    obj.delete()
    EveryField.objects.using(nodes.client).create(code="E1", json=[2 ** 100])
    synced(nodes)
    assert EveryField.objects.using(nodes.server).get().json == [2 ** 100]


def test_a_row_read_back_with_a_huge_json_number_can_be_saved_again(nodes):
    """PostgreSQL's jsonb gives 1e300 back as the integer 10**300."""
    EveryField.objects.using(nodes.client).create(code="E1", json={"x": 1e300})
    obj = EveryField.objects.using(nodes.client).get()
    obj.char = "edited"
    obj.save()
    synced(nodes)
    assert_same_rows(EveryField, nodes, "E1")


def test_a_json_value_shaped_like_the_tag_travels_as_itself(nodes):
    value = {ser.JSON_TEXT: "[1]"}
    EveryField.objects.using(nodes.client).create(code="E1", json=value)
    synced(nodes)
    assert EveryField.objects.using(nodes.server).get().json == value


# Floats that are not numbers.

def test_infinities_arrive_as_themselves(nodes):
    EveryField.objects.using(nodes.client).create(code="E1", float=math.inf)
    EveryField.objects.using(nodes.client).create(code="E2", float=-math.inf)
    obj = EveryField.objects.using(nodes.client).get(code="E1")
    obj.float = -math.inf
    obj.save()
    synced(nodes)
    assert dict(EveryField.objects.using(nodes.server).values_list("code", "float")) == {
        "E1": -math.inf, "E2": -math.inf}


def test_nan_arrives_where_the_database_stores_it_and_is_refused_before_the_write_on_sqlite(
        nodes):
    client = connections[nodes.client].vendor
    if client == "sqlite":  # SQLite would store NULL: refused, nothing written
        before = OutgoingTransaction.objects.using(nodes.client).count()
        with pytest.raises(SyncError, match=r"testapp.everyfield.float = nan .*SQLite"):
            EveryField.objects.using(nodes.client).create(code="E1", float=math.nan)
        with pytest.raises(SyncError, match=r"testapp.everyfield.float = nan"):
            EveryField.objects.using(nodes.client).bulk_create([EveryField(code="E2",
                                                                           float=math.nan)])
        EveryField.objects.using(nodes.client).create(code="E3", float=1.0)
        with pytest.raises(SyncError, match=r"testapp.everyfield.float = nan"):
            EveryField.objects.using(nodes.client).update(float=math.nan)
        assert list(EveryField.objects.using(nodes.client).values_list("float", flat=True)) \
            == [1.0]
        assert OutgoingTransaction.objects.using(nodes.client).count() == before + 1
        return
    EveryField.objects.using(nodes.client).create(code="E1", float=math.nan)
    messages = sync(nodes)
    if connections[nodes.server].vendor == "sqlite":
        assert [m.outcome for m in messages] == ["error"]
        assert "testapp.everyfield.float" in messages[0].text and "NaN" in messages[0].text
        assert not EveryField.objects.using(nodes.server).exists()
    else:
        assert math.isnan(EveryField.objects.using(nodes.server).get().float)
        obj = EveryField.objects.using(nodes.client).get()
        obj.char = "edited"  # the before-state holds NaN: it matches the server's NaN
        obj.save()
        assert [m.outcome for m in sync(nodes)] == ["updated"]


# Datetimes whose zone offset has seconds.

def test_an_offset_with_seconds_arrives_to_the_second(nodes):
    moment = datetime.datetime(1960, 6, 1, 12, 0, 0, 123456, tzinfo=MONROVIA)
    obj = crf(nodes, report_datetime=moment)
    obj.report_datetime = moment + datetime.timedelta(days=1)
    obj.save()
    synced(nodes)
    assert CrfOne.objects.using(nodes.server).get().report_datetime == \
        moment + datetime.timedelta(days=1)
    assert last_payload(nodes.client)["fields"]["report_datetime"] == \
        "1960-06-02T12:44:30.123456+00:00"


# Generic foreign keys.

def _clinics(nodes):
    """The server holds an extra clinic first, so its ids differ from the client's."""
    Clinic.objects.using(nodes.server).create(code="X0", name="only on the server")
    return [Clinic.objects.using(nodes.client).create(code=f"C{i}", name=f"c{i}")
            for i in range(3)]


def test_a_generic_key_to_an_auto_key_row_arrives_naming_the_same_row(nodes):
    clinics = _clinics(nodes)
    hh = factories.household(nodes.client)
    note = Annotation.objects.using(nodes.client).create(code="A1", subject=clinics[1],
                                                         other=clinics[2])
    assert last_payload(nodes.client)["fields"]["object_id"] == ["C1"]
    synced(nodes)
    server = Annotation.objects.using(nodes.server).get()
    assert (server.subject.code, server.other.code) == ("C1", "C2")
    note.subject = clinics[0]
    note.other = hh  # a UUID target keeps its id
    note.save()
    assert last_payload(nodes.client)["before"]["object_id"] == ["C1"]
    synced(nodes)
    server = Annotation.objects.using(nodes.server).get()
    assert server.subject.code == "C0" and server.other.pk == hh.pk
    note.delete()
    assert [m.outcome for m in synced(nodes)] == ["deleted"]


def test_a_row_whose_generic_target_is_gone_can_still_be_deleted(nodes):
    clinic = _clinics(nodes)[0]
    note = Annotation.objects.using(nodes.client).create(code="A1", subject=clinic)
    synced(nodes)
    Clinic.objects.using(nodes.client).filter(pk=clinic.pk).delete()
    Annotation.objects.using(nodes.client).get(pk=note.pk).delete()
    assert not Annotation.objects.using(nodes.client).exists()


def test_a_generic_key_waits_for_its_target(nodes):
    clinic = _clinics(nodes)[0]
    Annotation.objects.using(nodes.client).create(code="A1", subject=clinic)
    OutgoingTransaction.objects.using(nodes.client).filter(
        tx_name="testapp.clinic").update(is_consumed_server=True)
    assert [m.outcome for m in sync(nodes)] == ["deferred"]
    Clinic.objects.using(nodes.server).create(code="C0", name="c0")
    messages = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False)
    assert [m.outcome for m in messages] == ["inserted"]
    assert Annotation.objects.using(nodes.server).get().subject.code == "C0"


def test_a_generic_key_that_cannot_travel_is_refused_before_the_write(nodes):
    user = User.objects.using(nodes.client).create(username="u")
    entry = LogEntry.objects.using(nodes.client).create(user=user, action_flag=1,
                                                        object_repr="x")
    before = OutgoingTransaction.objects.using(nodes.client).count()
    with pytest.raises(SyncError, match=r"testapp.annotation.subject points to "
                                        r"admin.logentry .*natural_key"):
        Annotation.objects.using(nodes.client).create(code="A1", subject=entry)
    clinic_type = ContentType.objects.db_manager(nodes.client).get_for_model(Clinic)
    with pytest.raises(SyncError, match=r"testapp.annotation.subject points to "
                                        r"testapp.clinic 999, which does not exist"):
        Annotation.objects.using(nodes.client).create(code="A2", content_type=clinic_type,
                                                      object_id=999)
    assert not Annotation.objects.using(nodes.client).exists()
    assert OutgoingTransaction.objects.using(nodes.client).count() == before


# The payload version.

def test_payloads_are_version_2_and_version_1_payloads_still_replay(nodes):
    EveryField.objects.using(nodes.client).create(code="E1", integer=1)
    assert last_payload(nodes.client)["v"] == 2
    synced(nodes)
    clinic = Clinic.objects.using(nodes.server).create(code="C9", name="c9")
    old = {"v": 1, "model": "testapp.annotation", "pk": str(uuid.uuid4()), "nk": ["A1"],
           "fields": {"code": "A1", "content_type": ["testapp", "clinic"],
                      "object_id": clinic.pk, "other_type": None, "other_id": None}}
    shaped = {"v": 1, "model": "testapp.everyfield", "pk": str(uuid.uuid4()), "nk": ["E2"],
              "fields": {"code": "E2", "json": {ser.JSON_TEXT: "not a tag in version 1"}}}
    for sequence, payload in enumerate([old, shaped], start=1):
        IncomingTransaction.objects.using(nodes.server).create(
            tx=ser.dumps(payload), tx_name=payload["model"], tx_pk="1", producer="old-laptop",
            hostname="old", sequence=sequence, db_transaction_id=uuid.uuid4(), hlc=sequence,
            action="I", timestamp=timezone.now())
    messages = IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False)
    assert [m.outcome for m in messages] == ["inserted", "inserted"]
    assert Annotation.objects.using(nodes.server).get().subject == clinic
    assert EveryField.objects.using(nodes.server).get(code="E2").json == {
        ser.JSON_TEXT: "not a tag in version 1"}


def test_a_payload_of_a_newer_version_is_an_error_naming_it(nodes):
    IncomingTransaction.objects.using(nodes.server).create(
        tx=ser.dumps({"v": 3, "model": "testapp.clinic", "pk": None, "nk": ["C1"],
                      "fields": {"code": "C1", "name": "c"}}),
        tx_name="testapp.clinic", tx_pk="1", producer="new-laptop", hostname="new",
        sequence=1, db_transaction_id=uuid.uuid4(), hlc=1, action="I",
        timestamp=timezone.now())
    messages = sync(nodes)
    assert [m.outcome for m in messages] == ["error"]
    assert "payload version 3" in messages[0].text
    assert not Clinic.objects.using(nodes.server).exists()


# Every field type: generated values, written on the client, compared on the server.

def _aware(naive):
    return naive.replace(tzinfo=datetime.timezone.utc)


_JSON = st.recursive(
    st.none() | st.booleans() | st.text(st.characters(blacklist_categories=("Cs",),
                                                      blacklist_characters="\x00"), max_size=5)
    | st.integers(min_value=-(2 ** 90), max_value=2 ** 90)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",),
                                            blacklist_characters="\x00"), max_size=4),
                      children, max_size=3),
    max_leaves=6)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=30)

VALUES = {
    "char": _TEXT,
    "text": _TEXT,
    "slug": st.from_regex(r"[-a-zA-Z0-9_]{0,20}", fullmatch=True),
    "email": st.emails().filter(lambda email: len(email) <= 254),
    "url": st.sampled_from(["https://example.com/a?b=c", "http://[::1]:8000/x"]),
    "file": st.from_regex(r"[a-z]{1,10}/[a-z]{1,10}\.pdf", fullmatch=True),
    "file_path": st.from_regex(r"/[a-z]{1,10}", fullmatch=True),
    "boolean": st.booleans(),
    "integer": st.integers(-2 ** 31, 2 ** 31 - 1),
    "big": st.integers(-2 ** 63, 2 ** 63 - 1),
    "small": st.integers(-2 ** 15, 2 ** 15 - 1),
    "positive": st.integers(0, 2 ** 31 - 1),
    "positive_big": st.integers(0, 2 ** 63 - 1),
    "positive_small": st.integers(0, 2 ** 15 - 1),
    "float": st.floats(allow_nan=False) | st.integers(-10 ** 6, 10 ** 6),
    "decimal": st.decimals(min_value=-99999, max_value=99999, places=5,
                           allow_nan=False, allow_infinity=False),
    "wide_decimal": st.decimals(min_value=-10 ** 19, max_value=10 ** 19, places=10,
                                allow_nan=False, allow_infinity=False),
    "date": st.dates(),
    "datetime": st.datetimes(min_value=datetime.datetime(1900, 1, 2),
                             max_value=datetime.datetime(9999, 12, 30),
                             timezones=st.sampled_from([datetime.timezone.utc, MONROVIA,
                                                        zoneinfo.ZoneInfo("Asia/Kolkata")]))
    | st.datetimes(min_value=datetime.datetime(1900, 1, 2)).map(_aware),
    "time": st.times(),
    "duration": st.timedeltas(min_value=datetime.timedelta(days=-10 ** 6),
                              max_value=datetime.timedelta(days=10 ** 6)),
    "uuid": st.uuids(),
    "json": _JSON,
    "binary": st.binary(max_size=20),
    "ip": st.ip_addresses().map(str),
}
#: A FileField is not given None: replay's save() stores an empty FieldFile as "" (Django).
ROW = st.fixed_dictionaries({}, optional={
    name: values if name == "file" else st.none() | values for name, values in VALUES.items()})


@given(rows=st.lists(st.tuples(st.sampled_from(["save", "bulk_create", "update"]), ROW),
                     min_size=1, max_size=4))
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_every_field_type_arrives_as_the_client_stores_it(nodes, rows):
    codes = []
    for how, values in rows:
        code = f"P{uuid.uuid4().hex[:12]}"
        codes.append(code)
        if how == "bulk_create":
            EveryField.objects.using(nodes.client).bulk_create([EveryField(code=code, **values)])
            continue
        obj = EveryField.objects.using(nodes.client).create(code=code)
        if how == "save":
            for name, value in values.items():
                setattr(obj, name, value)
            obj.save()
        else:
            EveryField.objects.using(nodes.client).filter(code=code).update(**values)
    synced(nodes)
    for code in codes:
        assert_same_rows(EveryField, nodes, code)
