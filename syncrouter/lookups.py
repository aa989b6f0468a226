"""``AnyOf`` and ``AnyRowOf``: the rows whose value, or tuple of values, is one of many,
cheap to send with thousands of values.

Replay and transfer look rows up by whole batches of keys. ``field__in=values``
compiles to one placeholder per value, and with Django's default client-side
binding on PostgreSQL, psycopg parses and quotes a query of thousands of
placeholders in Python: for a 5,000-row batch that took longer than running
the queries. On PostgreSQL ``AnyOf`` sends the values as one array parameter
(``= ANY(%s)``); elsewhere it is the same ``IN`` list as ``__in``.

Use it as an expression in ``filter()``: ``queryset.filter(AnyOf(F("id"), ids))``.
Not in ``exclude()``: unlike ``__in`` there, it leaves out rows whose value is
NULL (Django adds the ``IS NOT NULL`` only for its own lookups).

``AnyRowOf([F("a"), F("b")], rows)`` matches whole tuples, as a natural key of
several parts needs: ``(a, b) IN (...)``. On PostgreSQL the tuples travel as
one array per column, unnested into a relation; the planner then probes the
index of ``(a, b)`` once per tuple. With one ``= ANY`` per column instead it
cannot tell how many rows match and reads the whole table once the table has
a few tens of thousands of rows (30 ms a query at 100,000 visits, against 5 ms
by index). Elsewhere it is a list of row values, which MySQL, MariaDB and
SQLite take but SQLite answers by reading the whole table: there, filter on
each column with ``AnyOf`` and check the tuples after.
"""
from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models import BooleanField, Expression, Lookup


class AnyOf(Lookup):
    lookup_name = "any_of"  # used as an expression, never registered on a field
    prepare_rhs = False

    def __init__(self, lhs, values):
        super().__init__(lhs, list(values))  # a generator would be spent by the first query

    def _values(self, connection) -> list:
        field = self.lhs.output_field
        values = [field.get_db_prep_value(value, connection) for value in self.rhs]
        if not values:
            raise EmptyResultSet
        return values

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        values = self._values(connection)
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", (*params, *values)

    def as_postgresql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", (*params, self._values(connection))


class AnyRowOf(Expression):
    """True for the rows whose ``columns`` hold, together, one of the tuples ``rows``."""

    output_field = BooleanField()

    def __init__(self, columns, rows):
        super().__init__()
        self.columns = list(columns)
        self.rows = [tuple(row) for row in rows]
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"AnyRowOf: {row!r} has {len(row)} values for "
                                 f"{len(self.columns)} columns")

    def get_source_expressions(self) -> list:
        return self.columns

    def set_source_expressions(self, exprs) -> None:
        self.columns = list(exprs)

    def _columns(self, compiler) -> tuple[str, list]:
        sqls, params = [], []
        for column in self.columns:
            sql, column_params = compiler.compile(column)
            sqls.append(sql)
            params.extend(column_params)
        return f"({', '.join(sqls)})", params

    def _values(self, connection) -> list[list]:
        """One list of query parameters per column."""
        if not self.rows:
            raise EmptyResultSet
        return [[column.output_field.get_db_prep_value(row[i], connection) for row in self.rows]
                for i, column in enumerate(self.columns)]

    def as_sql(self, compiler, connection):
        lhs, params = self._columns(compiler)
        one = f"({', '.join(['%s'] * len(self.columns))})"
        values = [value for row in zip(*self._values(connection)) for value in row]
        return f"{lhs} IN ({', '.join([one] * len(self.rows))})", (*params, *values)

    def as_postgresql(self, compiler, connection):
        lhs, params = self._columns(compiler)
        # Typed arrays: an array of NULLs alone would leave unnest() no type to take.
        types = [column.output_field.cast_db_type(connection) for column in self.columns]
        arrays = [f"%s::{kind}[]" if kind else "%s" for kind in types]
        return (f"{lhs} IN (SELECT * FROM unnest({', '.join(arrays)}))",
                (*params, *self._values(connection)))
