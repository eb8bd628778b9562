"""Reading and changing configuration in the `config` table (shared by every process)."""

from sqlalchemy import delete, exc, select, update

from queuectl import config
from queuectl.store.models import CONFIG

# Core statements on the table, not ORM ones on the class: an ORM statement makes its
# process configure every mapper first (milliseconds, on every `queuectl enqueue`).

def _stored(conn) -> dict[str, str]:
    query = select(CONFIG.c.key, CONFIG.c.value).where(CONFIG.c.key.in_(config.KEYS))
    return dict(conn.execute(query).all())


def load(conn) -> dict[str, int | float | None]:
    """Every key's typed value: the stored one, else its default."""
    stored = _stored(conn)
    return {key: config.typed(key, stored.get(key)) for key in config.KEYS}


def describe(conn) -> list[dict]:
    stored = _stored(conn)
    return [
        {
            "key": key,
            "value": config.typed(key, stored.get(key)),
            "default": key not in stored,
            "help": spec.help,
        }
        for key, spec in config.KEYS.items()
    ]


def get(conn, name: str) -> int | float | None:
    key = config.canonical_key(name)
    return load(conn)[key]


def set_value(conn, name: str, value: str) -> tuple[str, int | float | None]:
    key = config.canonical_key(name)
    stored = config.parse_value(key, value)
    change = update(CONFIG).where(CONFIG.c.key == key).values(value=stored)
    if not conn.execute(change).rowcount:
        try:
            with conn.begin_nested():  # a savepoint: a failed INSERT must not doom the transaction
                conn.execute(CONFIG.insert().values(key=key, value=stored))
        except exc.IntegrityError:
            # Another transaction inserted the key since our UPDATE looked (PostgreSQL,
            # READ COMMITTED); the row is there now, so this UPDATE finds it.
            conn.execute(change)
    return key, config.typed(key, stored)


def unset(conn, name: str) -> str:
    key = config.canonical_key(name)
    conn.execute(delete(CONFIG).where(CONFIG.c.key == key))
    return key
