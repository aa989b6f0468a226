"""``AnyOf(F(field), values)`` selects exactly the rows ``field__in=values`` selects, and
``AnyRowOf([F(a), F(b)], tuples)`` exactly the rows an OR of ``Q(a=.., b=..)`` selects.

On PostgreSQL it compiles to ``= ANY(%s)`` with one array parameter, elsewhere to
the same ``IN (...)`` list as ``__in``; either way the rows must be the same, for
UUID, text and integer columns, through joins, inside ``update()``, for any
iterable of values and for thousands of them.
"""
import datetime
import uuid

import pytest
from django.db import connections
from django.db.models import F, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from syncrouter.lookups import AnyOf, AnyRowOf
from syncrouter.models import IncomingTransaction
from tests.support import factories, pg
from tests.testapp.models import CrfTwo, SubjectVisit

BACKENDS = [
    pytest.param("server", id="sqlite"),
    pytest.param("pgserver", id="postgres",
                 marks=pytest.mark.skipif(not pg.AVAILABLE, reason=pg.REASON or "")),
]
pytestmark = [
    pytest.mark.django_db(databases=["server"] + (["pgserver"] if pg.AVAILABLE else [])),
    pytest.mark.parametrize("alias", BACKENDS),
]

ROWS = 40


@pytest.fixture
def inbox(alias) -> list:
    """ROWS incoming transactions on ``alias``: UUID ``id``, text ``tx_pk``, int ``sequence``."""
    now = timezone.now()
    return IncomingTransaction.objects.using(alias).bulk_create(
        IncomingTransaction(tx="{}", tx_name="testapp.crftwo", tx_pk=f"pk-{n}", producer="p",
                            hostname="h", sequence=n + 1, db_transaction_id=uuid.uuid4(),
                            hlc=n, action="I", timestamp=now)
        for n in range(ROWS))


@pytest.fixture
def study(alias) -> list:
    """3 households x 2 members x 2 visits on ``alias``, a CrfTwo per visit (``cd4`` null on
    every third)."""
    crfs = []
    for h in range(3):
        household = factories.household(alias, f"H{h}")
        for m in range(2):
            member = factories.member(alias, household, f"S{h}-{m}")
            for v in range(2):
                visit = factories.visit(alias, member, f"{1000 + v + 10 * h}")
                crfs.append(CrfTwo.objects.using(alias).create(
                    subject_visit=visit, hiv_result="NEG",
                    cd4=None if len(crfs) % 3 == 0 else 300 + len(crfs)))
    return crfs


def pks(queryset) -> set:
    return set(queryset.values_list("pk", flat=True))


#: column -> a row's value in it.
COLUMNS = {
    "id": lambda row: row.id,  # UUID column, UUID values
    "tx_pk": lambda row: row.tx_pk,  # text column
    "sequence": lambda row: row.sequence,  # integer column
}
ABSENT = {"id": uuid.uuid4, "tx_pk": lambda: f"absent-{uuid.uuid4()}", "sequence": lambda: -7}


def _wanted(inbox, column: str) -> list:
    """Every third row's value, and a value no row has."""
    return [COLUMNS[column](row) for row in inbox[::3]] + [ABSENT[column]()]


def assert_same_rows(queryset, column: str, values: list, through=None):
    """``AnyOf`` and ``__in`` select the same rows, and neither none nor all of them."""
    given = through(values) if through else values
    by_any = pks(queryset.filter(AnyOf(F(column), given)))
    by_in = pks(queryset.filter(**{f"{column}__in": values}))
    assert by_any == by_in
    assert 0 < len(by_any) < queryset.count()


@pytest.mark.parametrize("column", list(COLUMNS))
def test_any_of_selects_what_in_selects(alias, inbox, column):
    assert_same_rows(IncomingTransaction.objects.using(alias), column, _wanted(inbox, column))


@pytest.mark.parametrize("column, text", [("id", str), ("id", lambda pk: pk.hex),
                                          ("sequence", str)],
                         ids=["uuid-as-str", "uuid-as-hex", "int-as-str"])
def test_values_in_their_travelling_form_are_taken_as_the_field_takes_them(
        alias, inbox, column, text):
    """Replay looks rows up by keys as they travel: UUIDs as text, say."""
    assert_same_rows(IncomingTransaction.objects.using(alias), column,
                     [text(value) for value in _wanted(inbox, column)])


@pytest.mark.parametrize("shape", [set, frozenset, tuple, lambda v: (x for x in v),
                                   lambda v: dict.fromkeys(v).keys(),
                                   lambda v: {n: x for n, x in enumerate(v)}.values(),
                                   lambda v: v + v],
                         ids=["set", "frozenset", "tuple", "generator", "dict_keys",
                              "dict_values", "duplicates"])
@pytest.mark.parametrize("column", list(COLUMNS))
def test_any_iterable_of_values_selects_the_same_rows(alias, inbox, column, shape):
    assert_same_rows(IncomingTransaction.objects.using(alias), column, _wanted(inbox, column),
                     through=shape)


@pytest.mark.parametrize("column", list(COLUMNS))
def test_five_thousand_values_select_the_same_rows(alias, inbox, column):
    """A whole replay batch of keys, most of them not here."""
    here = [COLUMNS[column](row) for row in inbox[::2]]
    absent = {"id": lambda n: uuid.uuid4(), "tx_pk": lambda n: f"absent-{n}",
              "sequence": lambda n: ROWS + 1 + n}[column]
    values = here + [absent(n) for n in range(5000 - len(here))]
    assert len(values) == 5000
    queryset = IncomingTransaction.objects.using(alias)
    assert_same_rows(queryset, column, values)
    assert len(pks(queryset.filter(AnyOf(F(column), values)))) == len(here)


def test_on_postgresql_the_values_travel_as_one_array_parameter(alias, inbox):
    queryset = IncomingTransaction.objects.using(alias).filter(
        AnyOf(F("sequence"), range(1, 5001)))
    sql, params = queryset.query.get_compiler(using=alias).as_sql()
    if connections[alias].vendor == "postgresql":
        assert "= ANY(%s)" in sql and len(params) == 1 and len(params[0]) == 5000
    else:
        assert " IN (" in sql and len(params) == 5000


@pytest.mark.parametrize("path, values", [
    ("subject_visit__visit_code", ["1000", "1011", "9999"]),
    ("subject_visit__household_member__subject_identifier", ["S0-0", "S2-1", "S9-9"]),
    ("subject_visit__household_member__household__household_identifier", {"H1", "H7"}),
    ("subject_visit__household_member__household__id", None),  # UUIDs, filled in below
], ids=["one-join", "two-joins", "three-joins-set", "uuid-across-joins"])
def test_any_of_follows_a_join_path(alias, study, path, values):
    if values is None:
        values = [study[0].subject_visit.household_member.household_id, uuid.uuid4()]
    assert_same_rows(CrfTwo.objects.using(alias), path, list(values))
    assert_same_rows(CrfTwo.objects.using(alias), path, list(values), through=set)


def test_any_of_reaches_a_model_from_the_reverse_side(alias, study):
    """From a visit down to its CRF: a reverse one-to-one join."""
    ids = [crf.id for crf in study[::4]]
    assert_same_rows(SubjectVisit.objects.using(alias), "crftwo__id", ids)


@pytest.mark.parametrize("empty", [list, set, tuple, lambda: (x for x in ())],
                         ids=["list", "set", "tuple", "generator"])
def test_no_values_select_no_rows_without_a_query(alias, inbox, empty):
    queryset = IncomingTransaction.objects.using(alias).filter(AnyOf(F("id"), empty()))
    with CaptureQueriesContext(connections[alias]) as queries:
        assert list(queryset) == []
    assert len(queries) == 0
    assert not IncomingTransaction.objects.using(alias).filter(AnyOf(F("id"), empty())).exists()


def test_no_values_in_one_branch_of_an_or_leave_the_other_branch(alias, inbox):
    manager = IncomingTransaction.objects.using(alias)
    by_any = pks(manager.filter(Q(AnyOf(F("id"), [])) | Q(sequence__lte=3)))
    assert by_any == pks(manager.filter(Q(id__in=[]) | Q(sequence__lte=3)))
    assert len(by_any) == 3


@pytest.mark.parametrize("column", list(COLUMNS))
def test_an_update_changes_the_rows_in_changes(alias, inbox, column):
    values = _wanted(inbox, column)
    manager = IncomingTransaction.objects.using(alias)
    expected = pks(manager.filter(**{f"{column}__in": values}))
    when = timezone.now()
    changed = manager.filter(AnyOf(F(column), values), is_consumed=False).update(
        is_consumed=True, consumed_datetime=when)
    assert changed == len(expected) > 0
    assert pks(manager.filter(is_consumed=True)) == expected
    assert manager.filter(consumed_datetime=when).count() == len(expected)


def test_an_update_of_five_thousand_ids_changes_only_those_here(alias, inbox):
    """What ``bulk.consume`` does at the end of a batch."""
    here = [row.id for row in inbox[1::2]]
    ids = here + [uuid.uuid4() for _ in range(5000 - len(here))]
    manager = IncomingTransaction.objects.using(alias)
    assert manager.filter(AnyOf(F("id"), ids)).update(is_deferred=True) == len(here)
    assert pks(manager.filter(is_deferred=True)) == set(here)


def test_an_update_through_a_join_changes_the_rows_in_changes(alias, study):
    manager = CrfTwo.objects.using(alias)
    codes = {"1000", "1021"}
    expected = pks(manager.filter(subject_visit__visit_code__in=codes))
    changed = manager.filter(AnyOf(F("subject_visit__visit_code"), codes)).update(
        hiv_result="POS")
    assert changed == len(expected) == 4
    assert pks(manager.filter(hiv_result="POS")) == expected


@pytest.mark.parametrize("empty", [list, lambda: (x for x in ())], ids=["list", "generator"])
def test_an_update_with_no_values_changes_nothing(alias, inbox, empty):
    manager = IncomingTransaction.objects.using(alias)
    assert manager.filter(AnyOf(F("id"), empty())).update(is_ignored=True) == 0
    assert not manager.filter(is_ignored=True).exists()


def test_an_update_with_a_generator_changes_the_rows_in_changes(alias, inbox):
    values = _wanted(inbox, "tx_pk")
    manager = IncomingTransaction.objects.using(alias)
    changed = manager.filter(AnyOf(F("tx_pk"), (v for v in values))).update(is_ignored=True)
    assert changed == len(values) - 1
    assert pks(manager.filter(is_ignored=True)) == pks(manager.filter(tx_pk__in=values))


def test_excluding_selects_the_rows_not_in_a_non_null_column(alias, inbox):
    manager = IncomingTransaction.objects.using(alias)
    values = _wanted(inbox, "sequence")
    assert pks(manager.exclude(AnyOf(F("sequence"), values))) == pks(
        manager.exclude(sequence__in=values))


def test_excluding_a_nullable_column_leaves_out_its_null_rows(alias, study):
    """Documented: ``AnyOf`` is for ``filter()``; in ``exclude()`` it drops NULL rows that
    ``exclude(col__in=...)`` keeps (Django adds ``IS NOT NULL`` only for field lookups)."""
    manager = CrfTwo.objects.using(alias)
    values = [crf.cd4 for crf in study if crf.cd4 is not None][:3]
    assert manager.filter(cd4__isnull=True).exists()
    assert pks(manager.exclude(AnyOf(F("cd4"), values))) == pks(
        manager.exclude(cd4__in=values).exclude(cd4__isnull=True))


def test_a_queryset_built_with_a_generator_selects_the_same_rows_each_time(alias, inbox):
    values = _wanted(inbox, "id")
    queryset = IncomingTransaction.objects.using(alias).filter(AnyOf(F("id"), iter(values)))
    first = pks(queryset)
    assert first == pks(IncomingTransaction.objects.using(alias).filter(id__in=values))
    assert pks(queryset) == first  # values_list clones: the filter compiles again
    assert queryset.count() == len(first)


def test_a_queryset_built_with_a_list_selects_the_same_rows_each_time(alias, inbox):
    values = _wanted(inbox, "id")
    queryset = IncomingTransaction.objects.using(alias).filter(AnyOf(F("id"), values))
    assert pks(queryset) == pks(queryset) and queryset.count() == len(values) - 1


def test_datetime_values_compare_as_the_field_prepares_them(alias, inbox):
    """Aware datetimes in another zone find the same rows as ``__in``."""
    manager = IncomingTransaction.objects.using(alias)
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    manager.filter(sequence__lte=5).update(consumed_datetime=when)
    other_zone = when.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    by_any = pks(manager.filter(AnyOf(F("consumed_datetime"), [other_zone])))
    assert by_any == pks(manager.filter(consumed_datetime__in=[other_zone]))
    assert len(by_any) == 5


# ---------------------------------------------------------------- AnyRowOf: whole tuples


def by_tuples(queryset, paths: list, rows) -> set:
    """The rows an OR of one ``Q(a=.., b=..)`` per tuple selects (none for no tuples)."""
    condition = Q(pk__in=[])
    for row in rows:
        condition |= Q(**dict(zip(paths, row)))
    return pks(queryset.filter(condition))


def assert_same_tuples(queryset, paths: list, rows: list) -> set:
    by_any = pks(queryset.filter(AnyRowOf([F(path) for path in paths], rows)))
    assert by_any == by_tuples(queryset, paths, rows)
    return by_any


def test_any_row_of_matches_whole_tuples_not_each_column(alias, inbox):
    """(p, 1) and (q, 2) are wanted; (p, 2) is in both columns' values but not a wanted tuple."""
    manager = IncomingTransaction.objects.using(alias)
    manager.filter(sequence__gt=ROWS // 2).update(producer="q")
    rows = [("p", 1), ("q", ROWS // 2 + 2), ("p", 7), ("nobody", 3)]
    found = assert_same_tuples(manager, ["producer", "sequence"], rows)
    assert len(found) == 3
    assert not manager.filter(pk__in=found, producer="p", sequence=ROWS // 2 + 2).exists()


def test_any_row_of_follows_join_paths(alias, study):
    """A natural key across joins: (member's subject identifier, visit code)."""
    paths = ["subject_visit__household_member__subject_identifier", "subject_visit__visit_code"]
    rows = [("S0-0", "1000"), ("S2-1", "1021"), ("S0-0", "1021"), ("S9-9", "1000")]
    assert len(assert_same_tuples(CrfTwo.objects.using(alias), paths, rows)) == 2


def test_any_row_of_takes_values_in_their_travelling_form(alias, inbox):
    """UUIDs as text and integers as text, as keys arrive in payloads."""
    manager = IncomingTransaction.objects.using(alias)
    rows = [(str(row.id), str(row.sequence)) for row in inbox[::5]]
    found = pks(manager.filter(AnyRowOf([F("id"), F("sequence")], rows)))
    assert found == {row.id for row in inbox[::5]}


def test_a_null_in_a_tuple_matches_no_row(alias, study):
    """SQL equality, as ``AnyOf``: a NULL column equals nothing, not even a None part."""
    manager = CrfTwo.objects.using(alias)
    null_crf = next(crf for crf in study if crf.cd4 is None)
    rows = [(null_crf.hiv_result, None)]
    assert not manager.filter(AnyRowOf([F("hiv_result"), F("cd4")], rows)).exists()
    assert not manager.filter(AnyRowOf([F("cd4")], [(None,)])).exists()


def test_five_thousand_tuples_select_the_same_rows(alias, inbox):
    manager = IncomingTransaction.objects.using(alias)
    rows = [("p", n) for n in range(1, 5001)]
    assert len(assert_same_tuples(manager, ["producer", "sequence"], rows[:900])) == ROWS
    assert pks(manager.filter(AnyRowOf([F("producer"), F("sequence")], rows))) == pks(manager)


def test_no_tuples_select_no_rows_without_a_query(alias, inbox):
    queryset = IncomingTransaction.objects.using(alias).filter(
        AnyRowOf([F("producer"), F("sequence")], []))
    with CaptureQueriesContext(connections[alias]) as queries:
        assert list(queryset) == []
    assert len(queries) == 0


def test_a_tuple_of_the_wrong_length_is_refused(alias):
    with pytest.raises(ValueError, match=r"\('p',\) has 1 values for 2 columns"):
        AnyRowOf([F("producer"), F("sequence")], [("p", 1), ("p",)])


def test_an_update_changes_the_rows_of_the_tuples(alias, inbox):
    manager = IncomingTransaction.objects.using(alias)
    rows = [("p", 2), ("p", 4), ("p", 999)]
    assert manager.filter(AnyRowOf([F("producer"), F("sequence")], rows)).update(
        is_ignored=True) == 2
    assert set(manager.filter(is_ignored=True).values_list("sequence", flat=True)) == {2, 4}


def test_on_postgresql_the_tuples_travel_as_one_typed_array_per_column(alias, inbox):
    queryset = IncomingTransaction.objects.using(alias).filter(
        AnyRowOf([F("producer"), F("sequence")], [("p", n) for n in range(1, 5001)]))
    sql, params = queryset.query.get_compiler(using=alias).as_sql()
    if connections[alias].vendor == "postgresql":
        assert "IN (SELECT * FROM unnest(%s::varchar(200)[], %s::bigint[]))" in sql
        assert len(params) == 2 and all(len(param) == 5000 for param in params)
    else:  # a list of row values, a parameter each
        assert "IN ((%s, %s), (%s, %s)" in sql and list(params).count("p") == 5000


def test_a_large_table_is_probed_by_index(alias):
    """The reason ``AnyRowOf`` exists: with one ``= ANY`` per column, PostgreSQL read all
    100,000 visits for each batch of replay's natural-key lookups. Here 100,000 rows,
    analyzed, and a batch of 1,000 keys, looked up as ``natural.resolve`` does on each
    backend (``AnyRowOf`` on PostgreSQL, ``AnyOf`` per column elsewhere): the plan must
    use the (tx_name, tx_pk, ...) index, not read the table. (On a small table reading it
    may be the cheaper plan.)"""
    connection = connections[alias]
    postgres = connection.vendor == "postgresql"
    table = IncomingTransaction._meta.db_table
    numbers = ("generate_series(1, 100000) AS s(n)" if postgres else
               "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
               "WHERE n < 100000) SELECT n FROM s)")
    uuid_sql = "gen_random_uuid()" if postgres else "lower(hex(randomblob(16)))"
    wanted = [("testapp.crftwo", str(n)) for n in range(5000, 6000)]
    if postgres:
        condition = [AnyRowOf([F("tx_name"), F("tx_pk")], wanted)]
    else:
        condition = [AnyOf(F("tx_name"), {"testapp.crftwo"}),
                     AnyOf(F("tx_pk"), [pk for _, pk in wanted])]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, tx, tx_name, tx_pk, producer, hostname, sequence, "
            "db_transaction_id, hlc, action, timestamp, hops, consumer, is_consumed_middleman, "
            "is_consumed_server, is_ignored, is_error, error, batch_id, is_consumed, is_deferred)"
            f" SELECT {uuid_sql}, '{{}}', 'testapp.crftwo', n, 'p', 'h', n, {uuid_sql}, n, 'I', "
            "'2026-01-01 00:00:00', '[]', '', false, false, false, false, '', '', false, false "
            f"FROM {numbers}")
        cursor.execute(f"ANALYZE {table}")
        queryset = IncomingTransaction.objects.using(alias).filter(*condition)
        sql, params = queryset.query.get_compiler(using=alias).as_sql()
        cursor.execute(f"EXPLAIN {sql}" if postgres else f"EXPLAIN QUERY PLAN {sql}", params)
        plan = "\n".join(str(row[0] if postgres else row[-1]) for row in cursor.fetchall())
    assert queryset.count() == 1000
    assert "INDEX" in plan.upper() and f"SCAN {table}" not in plan.replace("Seq ", ""), plan
