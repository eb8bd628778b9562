"""The dashboard at a million jobs: how long `queuectl web` takes to answer its
pages and /metrics, and how many SQL statements each costs (run.py's `web` section).

The database holds `total` jobs as a queue that has run for a while holds them:
mostly completed history spread over three queues, 1% dead (in the DLQ), a few
hundred ready and failed ones, and a day of per-minute tallies. The server is the
real `queuectl web` process, asked over one keep-alive HTTP connection, as a
browser tab would; every page is asked in turn, round after round, so that all of
them see the same machine.
"""

import http.client
import json
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta

from common import median, p95
from measures import build_table

# (label, path): the overview and its live refresh, the job browser with the
# filters people use most, the DLQ and /metrics. Paths as the dashboard names them
# (queuectl/web/); a cursor page is added once the first page gives its cursor.
# The < 100 ms target is for every page but UNTARGETED: a text that matches a few
# jobs reads the whole history (docs/design.md §16), measured to show its cost.
PAGES = [
    ("overview", "/"),
    ("overview refresh (/api/overview)", "/api/overview"),
    ("jobs, no filter", "/jobs"),
    ("jobs, state=completed", "/jobs?state=completed"),
    ("jobs, queue=emails", "/jobs?queue=emails"),
    ("jobs, state=failed", "/jobs?state=failed"),
    ("jobs, text 'sleep' (10 matches in the history)", "/jobs?text=sleep"),
    ("dead letter queue", "/dlq"),
    ("/metrics", "/metrics"),
]

CURSOR_PAGE = "jobs, second page (keyset cursor)"
UNTARGETED = {"jobs, text 'sleep' (10 matches in the history)"}

_QUEUE_OF = "CASE seq % 10 WHEN 0 THEN 'emails' WHEN 1 THEN 'reports' ELSE 'default' END"


def shape(backend, url: str, total: int) -> None:
    """Spread the history built by build_table over queues and states: 1% to the
    DLQ, 0.1% failed (retrying later), ten sleep jobs for the text search to find,
    and a day of tallies if the table exists."""
    from sqlalchemy import create_engine, inspect, text

    from queuectl.store.models import JOBS

    engine = create_engine(url)
    cols = ", ".join(c.name for c in JOBS.c)  # dead_jobs has these too, and dead_at
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE jobs SET queue = {_QUEUE_OF}"))
        conn.execute(text(f"INSERT INTO dead_jobs ({cols}, dead_at) SELECT {cols}, finished_at FROM jobs "
                          "WHERE seq % 100 = 50 AND state = 'completed'"))
        conn.execute(text("UPDATE dead_jobs SET state = 'dead', exit_code = 1, last_error = 'exit code 1', attempts = 4"))
        conn.execute(text("DELETE FROM jobs WHERE seq % 100 = 50 AND state = 'completed'"))
        conn.execute(text("UPDATE jobs SET state = 'failed', attempts = 1, finished_at = NULL, exit_code = 1, last_error = 'exit code 1' "
                          "WHERE seq % 1000 = 7 AND state = 'completed'"))
        conn.execute(text("UPDATE jobs SET command = 'sleep 1' WHERE seq % (:n / 10) = 3"), {"n": total})
        if inspect(conn).has_table("job_tallies"):
            _tallies(conn)
    if backend.name == "postgresql":
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def _tallies(conn) -> None:
    """A day of per-minute tallies for three queues, as a busy queue leaves them."""
    from sqlalchemy import column, insert, table

    tallies = table("job_tallies", column("minute"), column("queue"), column("outcome"), column("shard"), column("count"))
    now = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
    rows = []
    for m in range(24 * 60):
        minute = now - timedelta(minutes=m)
        for queue in ("default", "emails", "reports"):
            for outcome, count in (("enqueued", 400), ("completed", 380), ("failed", 12), ("dead", 3)):
                rows.append({"minute": minute, "queue": queue, "outcome": outcome, "shard": 0, "count": count})
    conn.execute(insert(tallies), rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - t0
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}: {body[:300]!r}")
    return elapsed, body


def _serve(ctx, url: str):
    port = _free_port()
    log = ctx.log_file("web")
    with open(log, "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(ctx.queuectl(url, "web", "--port", port), env=ctx.env, cwd=ctx.work, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"queuectl web exited {proc.returncode}; see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("queuectl web did not listen within 60 s")


def queries_per_request(url: str, paths: list[str]) -> dict[str, int]:
    """SQL statements each request costs, counted in-process (the same app, through
    Starlette's TestClient) by SQLAlchemy's before_cursor_execute event."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from starlette.testclient import TestClient

    from queuectl.web.app import create_app

    seen = [0]

    def count(*_args):
        seen[0] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        with TestClient(create_app(url), base_url="http://127.0.0.1") as client:  # a loopback Host, as the dashboard wants
            result = {}
            for path in paths:
                client.get(path)  # the first request of a page may load config, warm caches
                seen[0] = 0
                response = client.get(path)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path}: HTTP {response.status_code}")
                result[path] = seen[0]
            return result
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def measure(ctx, backend, total: int, rounds: int) -> dict:
    url = backend.fresh("web")
    proc = None
    try:
        t0 = time.perf_counter()
        build_table(backend, url, total, 300, str(ctx.work))
        shape(backend, url, total)
        build_s = time.perf_counter() - t0
        print(f"    web: built {total:,} jobs in {build_s:.1f}s", flush=True)
        proc, port = _serve(ctx, url)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        pages = list(PAGES)
        # The second page of the unfiltered browser, by the cursor the API gives.
        _, body = _get(conn, "/api/jobs")
        cursor = json.loads(body).get("next")
        if cursor:
            pages.append((CURSOR_PAGE, f"/jobs?before={cursor}"))
        for _, path in pages:  # warm-up: caches, compiled statements, connections
            _get(conn, path)
        times: dict[str, list[float]] = {label: [] for label, _ in pages}
        for r in range(rounds):
            for label, path in (pages if r % 2 == 0 else list(reversed(pages))):
                times[label].append(_get(conn, path)[0])
        conn.close()
        queries = queries_per_request(url, [path for _, path in pages])
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        backend.drop(url)
    return {
        "total": total,
        "rounds": rounds,
        "build_s": build_s,
        "pages": {
            label: {"path": path, "median_s": median(times[label]), "p95_s": p95(times[label]), "samples_s": times[label],
                    "queries": queries.get(path)}
            for label, path in pages
        },
    }
