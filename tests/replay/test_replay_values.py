"""``replay.values`` against the general way, on every backend.

The general way to turn a payload value into a query parameter is
``serialization.decode_value(field, value)`` then
``field.get_db_prep_save(python_value, connection)``. ``values.Columns`` takes
shortcuts for exact built-in field classes; each must give the same Python
value, the same query parameter (value *and* type) and the same warnings, and
must refuse (``Unfit``) what the general way refuses.

Standalone fields live on ``Sample``, a model declared in a private app
registry: it is never seen by the project's registry, migrations or system
checks, so it cannot disturb other tests. Foreign keys, defaults, ``base`` and
``holds()`` use the real test app models.
"""
import datetime
import decimal
import uuid
import warnings
import zoneinfo

import pytest
from django.apps.registry import Apps
from django.core.exceptions import ValidationError
from django.db import connections, models
from django.test import override_settings

from syncrouter import serialization as ser
from syncrouter.replay import conflicts, values
from tests.support import pg
from tests.testapp.models import CrfOne, CrfTwo, Household, HouseholdMember, SubjectVisit

#: SQLite and (when reachable, always in CI) PostgreSQL.
BACKENDS = [
    pytest.param("server", id="sqlite"),
    pytest.param("pgserver", id="postgres",
                 marks=pytest.mark.skipif(not pg.AVAILABLE, reason=pg.REASON or "")),
]
pytestmark = pytest.mark.django_db(databases=["server"] + (["pgserver"] if pg.AVAILABLE else []))

_ISOLATED = Apps([])  # a registry of its own: Sample never reaches django.apps.apps


class UpperCharField(models.CharField):
    """A subclass that changes what is stored: no shortcut may skip its ``get_prep_value``."""

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else value.upper()


class Sample(models.Model):
    char = models.CharField(max_length=50, null=True)
    text = models.TextField(null=True)
    slug = models.SlugField(null=True)
    email = models.EmailField(null=True)
    url = models.URLField(null=True)
    boolean = models.BooleanField()
    integer = models.IntegerField(null=True)
    big = models.BigIntegerField(null=True)
    small = models.SmallIntegerField(null=True)
    positive = models.PositiveIntegerField(null=True)
    positive_big = models.PositiveBigIntegerField(null=True)
    positive_small = models.PositiveSmallIntegerField(null=True)
    float = models.FloatField(null=True)
    decimal = models.DecimalField(max_digits=7, decimal_places=2, null=True)
    date = models.DateField(null=True)
    datetime = models.DateTimeField(null=True)
    time = models.TimeField(null=True)
    duration = models.DurationField(null=True)
    uuid = models.UUIDField(null=True)
    json = models.JSONField(null=True)
    binary = models.BinaryField(null=True)
    ip = models.GenericIPAddressField(null=True)
    upper = UpperCharField(max_length=50, null=True)

    class Meta:
        apps = _ISOLATED
        app_label = "testapp"
        managed = False


class Stamped(models.Model):
    name = models.CharField(max_length=20)
    created = models.DateTimeField(auto_now_add=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        apps = _ISOLATED
        app_label = "testapp"
        managed = False


GABORONE = zoneinfo.ZoneInfo("Africa/Gaborone")
U = uuid.UUID("5b7b8e9c-3f0a-4d2e-9a51-0c6f2d8e4b17")

#: Python values as a producer's database gives them; they travel as ``wire(value)``.
CANONICAL = {
    "char": ["", "héllo wörld", "x" * 50, "line\nbreak\ttab", "😀 \x7f"],
    "text": ["lorem ipsum " * 100, ""],
    "slug": ["a-slug_1"],
    "email": ["someone@clinic.example"],
    "url": ["https://example.com/a?b=c&d=%20"],
    "boolean": [True, False],
    "integer": [0, 12, -2147483648, 2147483647],
    "big": [-2 ** 63, 2 ** 63 - 1],
    "small": [-32768, 32767],
    "positive": [0, 2147483647],
    "positive_big": [2 ** 63 - 1],
    "positive_small": [32767],
    "float": [0.0, -1.5, 0.1, 1e308, 5e-324],
    "decimal": [decimal.Decimal("12345.67"), decimal.Decimal("-0.01"), decimal.Decimal("0"),
                decimal.Decimal("0.00"), decimal.Decimal("-0"), decimal.Decimal("1E+2"),
                decimal.Decimal("1.005")],
    "date": [datetime.date(2024, 2, 29), datetime.date(1, 1, 1), datetime.date(9999, 12, 31)],
    "datetime": [
        datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.timezone.utc),
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        datetime.datetime(2024, 7, 1, 23, 59, 59, 1, tzinfo=GABORONE),
        datetime.datetime(1999, 12, 31, 23, 0, tzinfo=datetime.timezone(
            -datetime.timedelta(hours=5, minutes=30))),
        datetime.datetime(1, 1, 1, 0, 0, tzinfo=datetime.timezone.utc),
    ],
    "time": [datetime.time(0, 0), datetime.time(9, 30), datetime.time(23, 59, 59, 999999),
             datetime.time(12, 0, 0, 1)],
    "duration": [
        datetime.timedelta(0),
        datetime.timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5),
        datetime.timedelta(microseconds=1),
        datetime.timedelta(microseconds=-1),
        datetime.timedelta(days=-1),
        datetime.timedelta(days=-3, seconds=5, microseconds=7),
        datetime.timedelta(hours=-25, minutes=-1),
        datetime.timedelta(seconds=59, microseconds=999999),
        datetime.timedelta.max,
        datetime.timedelta.min,
    ],
    "uuid": [U, uuid.UUID(int=0), uuid.UUID(int=2 ** 128 - 1)],
    "json": [{"bp": [120, 80], "note": "ok", "x": None}, [], "text", 12, 0.5, True, False,
             {"nested": {"deep": [{"k": "v"}]}}],
    "binary": [b"", b"\x00\xff", bytes(range(256))],
    "ip": ["10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"],
    "upper": ["abc", "", "MiXeD"],
}

#: Payload values that are not what the serializer writes, but that the general way takes.
ACCEPTED = {
    "char": [12, 1.5, True],
    "text": [12],
    "slug": [7],
    "boolean": [1, 0, "t", "True", "1", "f", "False", "0"],
    "integer": ["12", " -7 ", 12.0, 12.7, True],
    "big": ["9223372036854775807"],
    "small": ["-3"],
    "positive": [False],
    "positive_big": ["42"],
    "positive_small": [3.0],
    "float": [12, "1.5", "1e3", True, "-inf", "inf"],
    "decimal": [1.1, 0.1, 12345.678, 12, True, "1.5e2", " 3.14 ", "1_000"],
    "date": ["20240229", "2024-2-9", "2024-W09-4"],
    "datetime": ["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123+02:00",
                 "2024-01-02 03:04:05+00:00", "2024-01-02T03:04:05+0200",
                 "2024-1-2T3:04:05+02:00", "2024-01-02T03:04:05.1234567+00:00",
                 "2024-01-02T03:04:05-00:00"],
    "time": ["09:30:00+02:00", "09:30:00Z", "9:30", "09:30:00.5", "0930"],
    "duration": ["P1D", "PT1H", "-PT1M", "+P1DT00H00M00S", "P0DT00H00M01.5S",
                 "P0DT24H00M00S", "P0DT00H00M75S", "P1DT02H03M04.000005S\n",
                 "1 02:03:04", "3 days 04:05:06", "-1 day", "12", "-00:00:01.5",
                 "", "PT"],  # both zero: Django's PostgreSQL-interval and ISO patterns match
    "uuid": [U.hex, str(U).upper(), f"{{{U}}}", f"urn:uuid:{U}", 12, 2 ** 128 - 1],
    "binary": ["AA\nE=", "////"],
    "ip": [" 10.0.0.1 ", "2001:0DB8:0000::0001"],
    "upper": [12],
}

#: Payload values the general way refuses: ``Columns.read`` must raise ``Unfit``.
REJECTED = {
    "boolean": ["maybe", "", 2, "yes", "on"],
    "integer": ["abc", "1.5", "", [], {}],
    "big": ["12e3"],
    "small": [[1]],
    "float": ["abc", [], {}],
    "decimal": ["abc", "NaN", "Infinity", "-inf", "1,5", [], {"a": 1}],
    "date": ["2024-02-30", "02/01/2024", "2024-01-02T03:04:05", 20240102, ""],
    "datetime": ["not a date", "2024-13-01T00:00:00Z", "2024-01-02T25:00:00+00:00",
                 1700000000, 1.5, ""],
    "time": ["25:00", "noon", 930, ""],
    "duration": ["P1X", "forever", 86400, "P1H", "P-1D", "1:2:3:4"],
    "uuid": ["not-a-uuid", "1234", -1, 2 ** 128, 1.5, ""],
    "binary": ["abc", 12],
    "ip": ["1::2::3", "12345::"],
}

def wire(value):
    """``value`` exactly as it travels: through the serializer and back."""
    return ser.loads(ser.dumps({"v": value}))["v"]


def exact(value):
    """What two values must share to be the same: type and repr, through driver wrappers."""
    if isinstance(value, memoryview):
        return memoryview, value.tobytes()
    if type(value).__module__.startswith("psycopg") and hasattr(value, "obj"):
        return type(value), exact(value.obj)  # Jsonb, Binary: compare what they wrap
    if isinstance(value, (list, tuple)):
        return type(value), [exact(item) for item in value]
    if isinstance(value, dict):
        return dict, {key: exact(item) for key, item in value.items()}
    return type(value), repr(value)


def _recorded(convert):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert()
    return result, [(w.category, str(w.message)) for w in caught]


def general_way(field, value, connection):
    """(Python value, query parameter, warnings) the row-by-row path gives."""
    def convert():
        python = ser.decode_value(field, value)
        return python, field.get_db_prep_save(python, connection)
    (python, param), caught = _recorded(convert)
    return exact(python), exact(param), caught


def fast_way(model, name, value, connection):
    """(Python value, query parameter, warnings) ``Columns`` gives for a payload of one field."""
    columns = values.columns(model, connection.vendor)
    i = columns.fields.index(model._meta.get_field(name))

    def convert():
        row = columns.read({name: value}, {})
        python = row[i]
        return python, columns.prepare(row, connection)[i]
    (python, param), caught = _recorded(convert)
    return exact(python), exact(param), caught


def _label(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cases(table: dict, transform=lambda value: value) -> list:
    cases = []
    for backend in BACKENDS:
        alias = backend.values[0]
        for name, items in table.items():
            for value in items:
                payload = transform(value)
                cases.append(pytest.param(alias, name, payload, marks=backend.marks,
                                          id=f"{backend.id}-{name}-{_label(payload)}"))
    return cases


@pytest.mark.parametrize("alias", BACKENDS)
def test_nan_converts_where_the_database_stores_it_and_is_unfit_on_sqlite(alias):
    """SQLite stores NaN as NULL: the row goes the row-by-row way, which refuses it."""
    connection = connections[alias]
    if connection.vendor == "sqlite":
        with pytest.raises(values.Unfit):
            values.columns(Sample, "sqlite").read({"float": "nan"}, {})
        return
    python, param, caught = fast_way(Sample, "float", "nan", connection)
    assert python[0] is float and python[1] == "nan" and param[1] == "nan" and not caught


@pytest.mark.parametrize("alias, name, payload", _cases(CANONICAL, wire))
def test_canonical_values_convert_as_the_general_way_does(alias, name, payload):
    connection = connections[alias]
    field = Sample._meta.get_field(name)
    assert fast_way(Sample, name, payload, connection) == general_way(field, payload, connection)


@pytest.mark.parametrize("alias, name, payload", _cases(ACCEPTED))
def test_non_canonical_values_the_general_way_takes_convert_the_same(alias, name, payload):
    connection = connections[alias]
    field = Sample._meta.get_field(name)
    assert fast_way(Sample, name, payload, connection) == general_way(field, payload, connection)


@pytest.mark.parametrize("alias, name, payload",
                         _cases({name: [None] for name in CANONICAL}))
def test_null_is_null_both_ways(alias, name, payload):
    connection = connections[alias]
    field = Sample._meta.get_field(name)
    fast = fast_way(Sample, name, payload, connection)
    assert fast == general_way(field, payload, connection)
    assert fast[:2] == (exact(None), exact(None))


@pytest.mark.parametrize("alias, name, payload", _cases(REJECTED))
def test_values_the_general_way_refuses_are_unfit(alias, name, payload):
    connection = connections[alias]
    field = Sample._meta.get_field(name)
    with pytest.raises((ValidationError, ValueError, TypeError)):
        ser.decode_value(field, payload)
    with pytest.raises(values.Unfit) as refused:
        values.columns(Sample, connection.vendor).read({name: payload}, {})
    assert refused.value.args == (name,)


def test_the_tables_hold_what_they_claim():
    """Each canonical value survives the trip, and each case sits in the right table."""
    for name, items in CANONICAL.items():
        field = Sample._meta.get_field(name)
        for value in items:
            assert ser.decode_value(field, wire(value)) == value, (name, value)
    for name, items in ACCEPTED.items():
        field = Sample._meta.get_field(name)
        for value in items:
            ser.decode_value(field, value)  # does not raise
            assert exact(value) not in [exact(wire(v)) for v in CANONICAL[name]], (name, value)


@pytest.mark.parametrize("alias", BACKENDS)
@pytest.mark.parametrize("payload", [
    wire(datetime.datetime(2024, 1, 2, 3, 4, 5, 123456)),  # a producer with USE_TZ = False
    "2024-01-02T03:04:05",
    "2024-01-02 03:04",
    "2024-01-02",  # date only
    "2024-1-2 3:04:05",
])
@override_settings(USE_TZ=True, TIME_ZONE="Africa/Gaborone")
def test_naive_datetimes_take_the_current_time_zone_as_the_general_way_does(alias, payload):
    """A naive value means local time (Africa/Gaborone, UTC+2 here), with Django's warning.

    The fast way must neither read it as UTC nor skip the RuntimeWarning.
    """
    connection = connections[alias]
    field = Sample._meta.get_field("datetime")
    fast = fast_way(Sample, "datetime", payload, connection)
    assert fast == general_way(field, payload, connection)
    python, param, caught = fast
    assert python[0] is datetime.datetime and "tzinfo" not in python[1]  # read as it came
    assert [category for category, _ in caught] == [RuntimeWarning]
    assert "naive datetime" in caught[0][1]


@pytest.mark.parametrize("alias", BACKENDS)
def test_a_char_field_subclass_is_prepared_by_its_own_get_prep_value(alias):
    connection = connections[alias]
    columns = values.columns(Sample, connection.vendor)
    row = columns.read({"upper": "abc", "char": "abc"}, {})
    prepared = columns.prepare(row, connection)
    assert prepared[columns.fields.index(Sample._meta.get_field("upper"))] == "ABC"
    assert prepared[columns.fields.index(Sample._meta.get_field("char"))] == "abc"


# Foreign keys: the payload holds the parent's natural key; ``parents`` maps it to the
# parent's key value, found beforehand for the whole batch.

@pytest.mark.parametrize("alias", BACKENDS)
@pytest.mark.parametrize("name, key, target", [
    ("subject_visit", ["S001", "1000"], U),  # to a UUID primary key
    ("main_symptom", ["fever"], 7),  # to an integer (BigAutoField) primary key
], ids=["uuid-target", "int-target"])
def test_a_foreign_key_takes_its_parent_from_the_map_and_is_prepared_as_the_field_is(
        alias, name, key, target):
    connection = connections[alias]
    field = CrfOne._meta.get_field(name)
    columns = values.columns(CrfOne, connection.vendor)
    i = columns.fields.index(field)
    row = columns.read({name: key}, {(name, ser.dumps(key)): target})
    assert exact(row[i]) == exact(target)
    param = columns.prepare(row, connection)[i]
    assert exact(param) == exact(field.get_db_prep_save(target, connection))


def test_a_foreign_key_whose_parent_was_not_found_is_unfit():
    columns = values.columns(CrfOne, "sqlite")
    with pytest.raises(values.Unfit) as refused:
        columns.read({"main_symptom": ["fever"]}, {("main_symptom", '["rash"]'): 7})
    assert refused.value.args == ("main_symptom",)


def test_a_null_foreign_key_needs_no_parent():
    columns = values.columns(CrfOne, "sqlite")
    row = columns.read({"main_symptom": None}, {})
    assert row[columns.fields.index(CrfOne._meta.get_field("main_symptom"))] is None


# What ``read`` does with the payload's set of fields.

def test_a_field_this_node_does_not_have_is_unfit():
    columns = values.columns(Household, "sqlite")
    with pytest.raises(values.Unfit) as refused:
        columns.read({"household_identifier": "H001", "no_such_field": 1}, {})
    assert refused.value.args == ("no_such_field",)


def test_fields_left_out_take_their_default_as_model_gives_it():
    columns = values.columns(CrfOne, "sqlite")
    key, visit = ["S001", "1000"], uuid.uuid4()
    when = datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)
    row = columns.read({"subject_visit": key, "report_datetime": when.isoformat()},
                       {("subject_visit", ser.dumps(key)): visit})
    expected = columns.values_of(CrfOne(subject_visit_id=visit, report_datetime=when))
    pk = columns.fields.index(CrfOne._meta.pk)
    assert row[:pk] + row[pk + 1:] == expected[:pk] + expected[pk + 1:]
    by_name = dict(zip([f.name for f in columns.fields], row))
    assert (by_name["outcome"], by_name["comments"], by_name["is_smoker"]) == ("well", "", False)


def test_a_callable_default_is_called_for_each_row():
    """Two new rows read from payloads without a ``pk`` get two different uuid4 values."""
    columns = values.columns(CrfTwo, "sqlite")
    key = ["S001", "1000"]
    parents = {("subject_visit", ser.dumps(key)): uuid.uuid4()}
    pk = columns.fields.index(CrfTwo._meta.pk)
    first = columns.read({"subject_visit": key, "hiv_result": "POS"}, parents)
    second = columns.read({"subject_visit": key, "hiv_result": "POS"}, parents)
    assert isinstance(first[pk], uuid.UUID) and isinstance(second[pk], uuid.UUID)
    assert first[pk] != second[pk]


@pytest.mark.parametrize("model, payload, left_out", [
    (Household, {"household_identifier": "H001", "village": "Ramotswa"}, "modified"),
    (Stamped, {"name": "a", "modified": "2024-01-02T03:04:05+00:00"}, "created"),  # auto_now_add
    (Stamped, {"name": "a", "created": "2024-01-02T03:04:05+00:00"}, "modified"),  # auto_now
], ids=["household-auto_now", "auto_now_add", "auto_now"])
def test_a_new_row_without_its_automatic_date_is_unfit(model, payload, left_out):
    """``auto_now``/``auto_now_add`` have no default to take: the row-by-row path decides."""
    with pytest.raises(values.Unfit) as refused:
        values.columns(model, "sqlite").read(payload, {})
    assert refused.value.args == (left_out,)


def test_a_changed_row_keeps_the_base_values_of_fields_left_out():
    columns = values.columns(Household, "sqlite")
    modified = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    household = Household(household_identifier="H001", village="Ramotswa", gps_lat=-24.87,
                          gps_lon=25.87, enumerated=True, modified=modified)
    base = columns.values_of(household)
    snapshot = list(base)
    row = columns.read({"village": "Lobatse", "gps_lat": None}, {}, base)
    names = [f.name for f in columns.fields]
    assert dict(zip(names, row)) == {**dict(zip(names, snapshot)),
                                     "village": "Lobatse", "gps_lat": None}
    assert base == snapshot  # read a copy
    assert row[names.index("modified")] is modified  # auto_now left out: kept, not Unfit


# ``holds``: does the row still have the before-state the producer saw?

def _visit_tree():
    household = Household(household_identifier="H001", village="Ramotswa")
    member = HouseholdMember(household=household, subject_identifier="S001", first_name="Neo",
                             gender="F", dob=datetime.date(1990, 5, 17))
    when = datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)
    visit = SubjectVisit(household_member=member, visit_code="1000", report_datetime=when)
    crf = CrfOne(subject_visit=visit, report_datetime=visit.report_datetime,
                 weight_kg=decimal.Decimal("61.5"), height_cm=164.2, is_smoker=True,
                 cigarettes_per_day=4, visit_date=datetime.date(2026, 11, 2),
                 arrival_time=datetime.time(9, 30),
                 consult_duration=datetime.timedelta(minutes=25), reference=U, outcome="ill",
                 comments="seen", extra={"bp": [120, 80]})
    return household, member, visit, crf


HOLDS = [
    ({"village": "Ramotswa"}, True),
    ({"village": "Ramotswa", "enumerated": False}, True),
    ({"village": "Ramotswa", "enumerated": True}, False),
    ({"village": "Lobatse"}, False),
    ({"gps_lat": None}, True),
    ({"gps_lat": -24.87}, False),
    ({"modified": "1999-01-01T00:00:00+00:00"}, True),  # auto_now: not compared
    ({"modified": "not even a date"}, True),
]


@pytest.mark.parametrize("before, expected", HOLDS, ids=[str(b) for b, _ in HOLDS])
def test_holds_compares_the_before_state_except_automatic_dates(before, expected):
    household = _visit_tree()[0]
    assert values.columns(Household, "sqlite").holds(household, before, {}) is expected


CRF_HOLDS = [
    {"weight_kg": "61.5"}, {"weight_kg": "61.50"}, {"weight_kg": "61.6"}, {"weight_kg": None},
    {"height_cm": 164.2}, {"height_cm": 164}, {"cigarettes_per_day": 4},
    {"cigarettes_per_day": "4"}, {"cigarettes_per_day": 5}, {"is_smoker": True},
    {"is_smoker": False}, {"visit_date": "2026-11-02"}, {"visit_date": "2026-11-03"},
    {"arrival_time": "09:30:00"}, {"arrival_time": "09:30"}, {"arrival_time": "09:31:00"},
    {"consult_duration": "P0DT00H25M00S"}, {"consult_duration": "PT25M"},
    {"consult_duration": "P0DT00H25M00.000001S"}, {"reference": str(U)}, {"reference": U.hex},
    {"reference": str(uuid.UUID(int=1))}, {"outcome": "ill"}, {"outcome": "well"},
    {"extra": {"bp": [120, 80]}}, {"extra": {"bp": [120, 81]}}, {"extra": None},
    {"report_datetime": "2024-01-02T00:00:00+00:00"},
    {"report_datetime": "2024-01-02T02:00:00+02:00"},
    {"report_datetime": "2024-01-02T00:00:00.000001+00:00"},
    {"comments": "seen", "outcome": "ill", "is_smoker": True},
    {"comments": "seen", "outcome": "well", "is_smoker": True},
]


@pytest.mark.parametrize("before", CRF_HOLDS, ids=[str(b) for b in CRF_HOLDS])
def test_holds_agrees_with_the_conflict_check(before):
    """``holds`` is ``conflicts.mismatches`` for a whole batch: same answer, value by value."""
    crf = _visit_tree()[3]
    expected = not conflicts.mismatches(CrfOne, crf, before)
    assert values.columns(CrfOne, "sqlite").holds(crf, before, {}) is expected


def test_holds_compares_a_foreign_key_through_the_parents_map():
    household, member = _visit_tree()[:2]
    columns = values.columns(HouseholdMember, "sqlite")
    key = ser.dumps(["H001"])
    before = {"household": ["H001"], "first_name": "Neo"}
    assert columns.holds(member, before, {("household", key): household.pk})
    assert not conflicts.mismatches(HouseholdMember, member, before)
    assert not columns.holds(member, before, {("household", key): uuid.uuid4()})
    assert not columns.holds(member, {"household": None}, {})
    with pytest.raises(values.Unfit):  # parent not found: the row-by-row path decides
        columns.holds(member, before, {})


def test_holds_refuses_a_field_this_node_does_not_have():
    household = _visit_tree()[0]
    with pytest.raises(values.Unfit) as refused:
        values.columns(Household, "sqlite").holds(household, {"no_such_field": 1}, {})
    assert refused.value.args == ("no_such_field",)
