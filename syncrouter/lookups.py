"""``AnyOf``: the rows whose value is one of many, cheap to send with thousands of values.

Replay and transfer look rows up by whole batches of keys. ``field__in=values``
compiles to one placeholder per value, and with Django's default client-side
binding on PostgreSQL, psycopg parses and quotes a query of thousands of
placeholders in Python: for a 5,000-row batch that took longer than running
the queries. On PostgreSQL ``AnyOf`` sends the values as one array parameter
(``= ANY(%s)``); elsewhere it is the same ``IN`` list as ``__in``.

Use it as an expression in ``filter()``: ``queryset.filter(AnyOf(F("id"), ids))``.
Not in ``exclude()``: unlike ``__in`` there, it leaves out rows whose value is
NULL (Django adds the ``IS NOT NULL`` only for its own lookups).
"""
from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models import Lookup


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
