"""The pages' fixed queries, compiled to SQL once per process instead of on every request.

Django turns a QuerySet into SQL anew for every evaluation (``SQLCompiler.as_sql``: the select
list, column quoting, joins of ``select_related``, the ORDER BY), and for the small queries of a
page that compilation costs more CPU than the round trip: cProfile of the run history, in one
process, put it at half of the page. The SQL of a query whose *shape* never changes (only the
values compared: a session key, a user id, a job id) is the same text every time, so
:class:`CompiledQuery` builds the QuerySet once with sentinel values, compiles it once, finds
where each sentinel landed among the SQL parameters, and on each call runs that SQL with the
call's values through Django's own iterables: the rows become model instances (or values) by
the same code as an ordinary query, ``select_related``/``defer`` included, and the query is
executed on the calling thread's connection like any other (pool, ``CaptureQueriesContext``).

Nothing but the SQL text is kept: every call runs the query, so what the page shows is as fresh
as with the ORM. The SQL depends only on the models (code) and the database vendor; a change of
either means a new process, so there is nothing to invalidate. The cache is keyed by database
alias. A query is only eligible if its SQL cannot depend on the values (no ``__in`` lists, no
``None`` comparisons that become ``IS NULL``); :meth:`CompiledQuery.compile` refuses one whose
sentinels it cannot find exactly once each.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet


@dataclass(frozen=True)
class _Compiled:
    queryset: QuerySet
    compiler: Any  # the SQLCompiler after as_sql(): its select list, converters' inputs, klass_info
    sql: str
    params: tuple[Any, ...]
    slots: tuple[tuple[int, str, Callable[[Any], Any]], ...]  # (index in params, name, adapter)


def _adapter(sentinel: Any, connection: Any) -> Callable[[Any], Any]:
    """How a value of the sentinel's type becomes a parameter: an int or a string, as the fields'
    ``get_prep_value`` would; a datetime as the backend adapts a DateTimeField's value."""
    if isinstance(sentinel, datetime):
        return connection.ops.adapt_datetimefield_value
    if isinstance(sentinel, bool) or not isinstance(sentinel, int | str):
        raise ImproperlyConfigured(f"compiled query: {sentinel!r}: only ints, strings and datetimes are supported")
    return int if isinstance(sentinel, int) else str  # as the fields' get_prep_value would


class CompiledQuery:
    """A QuerySet whose SQL is compiled once per process and database alias.

    ``build(**sentinels)`` returns the QuerySet; each sentinel must be a value that appears once
    among the compiled query's parameters and nowhere else (e.g. ``user_id=-7_000_001``).
    ``run(**values)`` evaluates it with the real values and returns a list, as ``list(qs)``.
    Only the default database is used (this project has one).
    """

    def __init__(self, build: Callable[..., QuerySet], **sentinels: Any) -> None:
        self._build = build
        self._sentinels = sentinels
        self._by_alias: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def compile(self, using: str = DEFAULT_DB_ALIAS) -> _Compiled:
        compiled = self._by_alias.get(using)
        if compiled is not None:
            return compiled
        with self._lock:
            queryset = self._build(**self._sentinels).using(using)
            compiler = queryset.query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            slots = []
            for name, sentinel in self._sentinels.items():
                adapt = _adapter(sentinel, compiler.connection)
                wanted = adapt(sentinel)
                found = [i for i, p in enumerate(params) if type(p) is type(wanted) and p == wanted]
                if len(found) != 1:
                    raise ImproperlyConfigured(
                        f"compiled query {sql!r}: the value {name}={sentinel!r} is in its parameters "
                        f"{len(found)} times, expected once"
                    )
                slots.append((found[0], name, adapt))
            compiled = _Compiled(queryset, compiler, sql, tuple(params), tuple(slots))
            self._by_alias[using] = compiled
        return compiled

    def run(self, **values: Any) -> list[Any]:
        """The rows for ``values``, as ``list(queryset)`` would return them."""
        if values.keys() != self._sentinels.keys():
            raise TypeError(f"expected the values {sorted(self._sentinels)}, got {sorted(values)}")
        compiled = self.compile()
        params = list(compiled.params)
        for index, name, adapt in compiled.slots:
            params[index] = adapt(values[name])
        compiler = copy.copy(compiled.compiler)
        # The calling thread's connection (Django's are per thread), and the SQL as compiled.
        compiler.connection = connections[compiler.using]
        sql, bound = compiled.sql, tuple(params)
        compiler.as_sql = lambda *args, **kwargs: (sql, bound)
        # A fresh QuerySet (no result cache) whose query hands out that compiler. It is evaluated
        # here and never chained: a clone would carry the override to a different query.
        queryset = compiled.queryset._chain()  # type: ignore[attr-defined]
        queryset.query.get_compiler = lambda *args, **kwargs: compiler
        return list(queryset)
