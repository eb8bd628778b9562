"""Store.browse and Store.matching_ids (store/browse.py): every filter, keyset pages
without duplicates or gaps while jobs are added, and both ways of reading a state
(along its own index and sorted, or along seq), on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import update

from queuectl.store import Store, browse
from queuectl.store.browse import JobFilter
from queuectl.store.models import JOBS
from tests.support import T0, enqueue, finish, kill, seconds, take


@pytest.fixture
def store(db):
    return Store(db)


@pytest.fixture
def history(db):
    """Jobs 1..12 one second apart: states, queues, a schedule and commands to find."""
    ids = {}
    for n in range(1, 13):
        queue = "emails" if n % 3 == 0 else "default"
        command = {4: "echo NeedLe here", 5: "echo 100%_done", 6: "echo 100x done"}.get(n, f"echo {n}")
        ids[n] = enqueue(db, command, now=T0 + seconds(n), queue=queue, **({"id": f"named-{n}"} if n == 7 else {}))
    for n in (1, 2, 3, 4):
        finish(db, ids[n])
    kill(db, ids[5])
    kill(db, ids[6])
    take(db, ids[8])
    Store(db).cancel([ids[9]])
    with db.begin() as conn:  # as if a schedule had enqueued them
        conn.execute(update(JOBS).where(JOBS.c.id.in_([ids[2], ids[10]])).values(schedule="nightly"))
    return ids


def browse_ids(store, limit=50, **fields):
    rows, _ = store.browse(JobFilter(**fields), limit=limit)
    return [row["id"] for row in rows]


def test_each_filter(store, history):
    ids = history
    everyone = [ids[n] for n in range(12, 0, -1)]
    assert browse_ids(store) == everyone
    assert browse_ids(store, states=("completed",)) == [ids[4], ids[3], ids[2], ids[1]]
    assert browse_ids(store, states=("dead",)) == [ids[6], ids[5]]
    assert browse_ids(store, states=("running",)) == [ids[8]]
    assert browse_ids(store, states=("cancelled",)) == [ids[9]]
    assert browse_ids(store, states=("pending",)) == [ids[12], ids[11], ids[10], ids[7]]
    assert browse_ids(store, states=("pending", "dead")) == [ids[12], ids[11], ids[10], ids[7], ids[6], ids[5]]
    assert browse_ids(store, states=("failed",)) == []
    assert browse_ids(store, queue="emails") == [ids[12], ids[9], ids[6], ids[3]]
    assert browse_ids(store, queue="emails", states=("dead",)) == [ids[6]]
    assert browse_ids(store, schedule="nightly") == [ids[10], ids[2]]
    assert browse_ids(store, schedule="nightly", states=("completed",)) == [ids[2]]
    # Text: a substring of the command, whatever its case; % and _ are plain characters.
    assert browse_ids(store, text="needle") == [ids[4]]
    assert browse_ids(store, text="100%_") == [ids[5]]
    # ...or an id, exact or its beginning.
    assert browse_ids(store, text="named-7") == [ids[7]]
    assert browse_ids(store, text="named") == [ids[7]]
    assert browse_ids(store, text="NAMED-7") == []  # ids keep their case
    assert browse_ids(store, text="1") == [ids[12], ids[11], ids[10], ids[6], ids[5], ids[1]]
    # created_at: from inclusive, to exclusive.
    assert browse_ids(store, created_from=T0 + seconds(10)) == [ids[12], ids[11], ids[10]]
    assert browse_ids(store, created_to=T0 + seconds(3)) == [ids[2], ids[1]]
    assert browse_ids(store, created_from=T0 + seconds(5), created_to=T0 + seconds(7), states=("dead",)) == [ids[6], ids[5]]


def test_both_reading_ways_agree(store, history, monkeypatch):
    """Few rows of a state: along its index, sorted; many: along seq. The same rows."""
    cases = [dict(states=("pending",)), dict(states=("running",)), dict(schedule="nightly"), dict(states=("pending",), queue="emails"),
             dict(states=("pending", "completed"), schedule="nightly")]
    few = [browse_ids(store, **case) for case in cases]
    monkeypatch.setattr(browse, "FEW", 1)
    assert [browse_ids(store, **case) for case in cases] == few
    paged = []
    before = None
    while True:
        rows, before = store.browse(JobFilter(states=("pending",)), before=before, limit=1)
        paged += [row["id"] for row in rows]
        if before is None:
            break
    assert paged == few[0]


def test_pages_have_no_duplicates_or_gaps_while_jobs_arrive(db, store):
    first = [enqueue(db, f"echo {n}", now=T0 + seconds(n)) for n in range(23)]
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        rows, before = store.browse(JobFilter(), before=before, limit=5)
        seen += [row["id"] for row in rows]
        pages += 1
        # New jobs between pages: newer than every page, they shift nothing.
        enqueue(db, "echo late", now=T0 + seconds(100 + pages))
        finish(db, first[-pages])
        if before is None:
            break
    assert pages == 5
    assert seen == first[::-1]
    assert len(set(seen)) == len(seen)


def test_the_last_page_has_no_cursor(store, history):
    rows, cursor = store.browse(JobFilter(), limit=12)
    assert len(rows) == 12 and cursor is None
    rows, cursor = store.browse(JobFilter(), limit=11)
    assert cursor is not None
    rows, cursor = store.browse(JobFilter(), before=cursor, limit=11)
    assert [row["id"] for row in rows] == [history[1]] and cursor is None
    assert "output" not in rows[0] and "seq" not in rows[0]


def test_matching_ids_walks_every_match_in_batches(store, history):
    f = JobFilter(states=("pending", "completed"))
    found: list[str] = []
    before = None
    while True:
        ids, before = store.matching_ids(f, 3, before=before)
        found += ids
        if before is None:
            break
    assert found == browse_ids(store, states=("pending", "completed"))
    assert store.matching_ids(f, 100) == (found, None)


def test_narrowing_a_filter_to_the_states_an_action_takes():
    assert JobFilter().only(("completed", "dead")).states == ("completed", "dead")
    assert JobFilter(states=("pending", "dead"), queue="q").only(("completed", "dead")) == JobFilter(states=("dead",), queue="q")
    assert JobFilter(states=("pending",)).only(("dead",)).states == ()
