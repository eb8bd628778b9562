"""Statements that bind one parameter per id, in slices the databases accept."""

# Ids per statement: SQLite allows 32766 bound parameters, PostgreSQL 65535.
ID_CHUNK = 500


def chunks(ids: list[str]):
    """`ids` in slices of ID_CHUNK, for statements that bind one parameter per id."""
    for start in range(0, len(ids), ID_CHUNK):
        yield ids[start : start + ID_CHUNK]
