"""A worker's per-job statements, run on the database driver's own cursor.

A job that runs `true` costs the shell about 0.9 ms of CPU; the worker's writes for it
(its completion, its attempt, its tally and the next claim, in one transaction) cost
1.06 ms through SQLAlchemy's Connection, and 0.21 ms as the same SQL on the driver's
cursor (docs/design.md section 21). Most of the difference is SQLAlchemy's work per
execution: a cache key for each statement, an execution context, processing the
parameters and building the result's rows. So the hot path's statements are still
built with Core, from the models (a new column reaches them by itself), but each is
compiled once per process (`Prepared`) into the driver's SQL, its parameters put in
the driver's order through the same type processors SQLAlchemy would use, and its
rows given with the same result processing, done when a column is read (a claim
returns the whole job; a worker reads five of its columns). `DriverTransaction` runs
them inside a transaction its dialect opens (Database.begin_driver).
"""

import operator
from typing import Any

from sqlalchemy.engine import Dialect


class Prepared:
    """One Core statement compiled for one dialect: its SQL as the driver takes it, how
    to turn a dict of values into the driver's parameters, and its rows."""

    def __init__(self, statement, dialect: Dialect):
        self.statement = statement  # held: Database.prepare's cache is keyed by its id
        compiled = statement.compile(dialect=dialect)
        # Late-rendered parameters (IN lists, literal_execute states) take the values
        # the statement was built with; the execution's own values are placeholders
        # here, and go in at each run.
        required = {name: None for name, bind in compiled.binds.items() if bind.required}
        expanded = compiled.construct_expanded_state(required)
        self.sql = expanded.statement
        self.defaults = {name: value for name, value in expanded.parameters.items() if name not in required}
        processors: dict[str, Any] = {}
        for name in expanded.parameters:
            bind = compiled.binds.get(name)
            processors[name] = expanded.processors.get(name) or (
                bind.type.dialect_impl(dialect).bind_processor(dialect) if bind is not None else None)
        self.positional = compiled.positional
        names = expanded.positiontup if compiled.positional else list(expanded.parameters)
        self.binds = [(name, processors[name]) for name in names]
        # A SELECT's columns, or an UPDATE's or INSERT's RETURNING (else none).
        self.columns = list(statement.exported_columns)
        self.dialect = dialect
        self.row: Any = None  # their row type, made at the first run (see rows)

    def rows(self, result) -> list:
        """The rows of a run's result (a driver cursor), as this statement's row type.
        Made from the first result's description: a result processor may depend on the
        driver's type of the column (psycopg's of a float)."""
        if self.row is None:
            described = [column[1] for column in result.description]
            self.row = _row_class([c.key for c in self.columns], [
                c.type.dialect_impl(self.dialect).result_processor(self.dialect, coltype) for c, coltype in zip(self.columns, described)])
        return list(map(self.row, result.fetchall()))

    def parameters(self, values: dict[str, Any], memo: dict):
        """The driver's parameters for one run: a sequence (qmark) or a dict (pyformat).
        `memo`: the values this transaction has processed (a job's end time goes into
        one statement up to three times)."""
        defaults = self.defaults
        out = []
        for name, process in self.binds:
            value = values[name] if name in values else defaults[name]
            if process is not None and value is not None:
                key = (process, value)
                try:
                    value = memo[key]
                except KeyError:
                    value = memo[key] = process(value)
                except TypeError:  # unhashable (no such value on the hot path today)
                    value = process(value)
            out.append(value)
        return out if self.positional else dict(zip((name for name, _ in self.binds), out))


def _row_class(names: list[str], processors: list):
    """A row type: a tuple of the driver's values, each column read by name through its
    result processor (a parsed datetime, a bool), on access."""

    def column(index: int, process):
        get = operator.itemgetter(index)
        if process is None:
            return property(get)
        return property(lambda row: None if (value := get(row)) is None else process(value))

    namespace: dict[str, Any] = {"__slots__": (), "_fields": tuple(names)}
    namespace.update({name: column(i, p) for i, (name, p) in enumerate(zip(names, processors))})
    namespace["_asdict"] = lambda row: {name: getattr(row, name) for name in names}
    return type("Row", (tuple,), namespace)


class DriverTransaction:
    """The statements of one transaction on the driver's cursor (see Database.begin_driver)."""

    def __init__(self, cursor, prepare):
        self.cursor = cursor
        self._prepare = prepare
        self._memo: dict = {}

    def execute(self, statement, values: dict[str, Any]) -> list:
        """Run a Core statement with `values`; its rows, if it returns any."""
        prepared = self._prepare(statement)
        result = self.cursor.execute(prepared.sql, prepared.parameters(values, self._memo))
        return prepared.rows(result) if prepared.columns else []

    def first(self, statement, values: dict[str, Any]):
        rows = self.execute(statement, values)
        return rows[0] if rows else None

    def execute_sql(self, sql: str, parameters) -> None:
        """SQL already in the driver's terms (the dialect's own, e.g. its tally upsert)."""
        self.cursor.execute(sql, parameters)
