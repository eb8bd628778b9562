"""The job browser at a million jobs: p95 of each filtered page, store and HTTP.

    python bench/browse_jobs.py sqlite:////tmp/browse.db [--build] [--runs 20] [--http]
    python bench/browse_jobs.py postgresql+psycopg://postgres@127.0.0.1/browse --build

--build fills an empty database (migrated here) with 1,000,000 jobs straight through
SQL (mostly completed; 1% dead in dead_jobs, some cancelled, failed, blocked, running,
the newest 1,000 pending; four queues, one of them rare; 2% from a schedule; one
job a day-ish whose command holds 'needle'; created one second apart over 11.6 days).
Then each filter's first page (and a deep page) is read `runs` times: Store.browse,
and with --http a GET of /jobs through the app (rendering included).
"""

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import p95

N = 1_000_000
T0 = datetime(2026, 11, 1, tzinfo=UTC)

_COLUMNS = (
    "id, seq, command, state, attempts, max_retries, priority, queue, run_at, timeout, cwd, created_at, updated_at, "
    "started_at, finished_at, exit_code, last_error, output, output_size, runs, worker_id, has_dependents, schedule"
)
_STATE = """CASE WHEN x > {pending_from} THEN 'pending'
    WHEN x % 5000 = 17 THEN 'blocked' WHEN x % 100000 = 1 THEN 'running'
    WHEN x % 1000 = 11 THEN 'failed' WHEN x % 200 = 3 THEN 'cancelled' ELSE 'completed' END"""
_QUEUE = """CASE WHEN x % 1000 = 999 THEN 'rare' WHEN x % 10 < 6 THEN 'default' WHEN x % 10 < 9 THEN 'emails' ELSE 'reports' END"""


def _select(ts: str, ident: str) -> str:
    return f"""{ident}, x, CASE WHEN x % 100000 = 123 THEN 'echo needle ' || x ELSE 'echo job ' || x END,
        {_STATE.format(pending_from=N - 1000)}, 0, 3, 0, {_QUEUE}, {ts}, NULL, '/tmp', {ts}, {ts},
        {ts}, {ts}, 0, NULL, 'out', 3, 1, NULL, {{false}}, CASE WHEN x % 50 = 5 THEN 'nightly' END"""


def build(url: str) -> float:
    from sqlalchemy import create_engine, text

    from queuectl.store import Store

    Store.open(url).close()  # migrated
    start = time.perf_counter()
    t0 = T0.replace(tzinfo=None)
    engine = create_engine(url)
    sqlite = url.startswith("sqlite")
    if sqlite:
        ts = "strftime('%Y-%m-%d %H:%M:%S', :t0, '+' || x || ' seconds') || '.000000'"
        series = "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) SELECT x FROM c) AS s"
        select = _select(ts, "CAST(x AS TEXT)").replace("{false}", "0")
        t0_param: object = t0.strftime("%Y-%m-%d %H:%M:%S")
    else:
        ts = "(CAST(:t0 AS timestamp) + x * interval '1 second')"
        series = "generate_series(1, :n) AS x"
        select = _select(ts, "x::text").replace("{false}", "false")
        t0_param = t0
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA synchronous = OFF")
        conn.execute(text(f"INSERT INTO jobs ({_COLUMNS}) SELECT {select} FROM {series} WHERE x % 100 <> 50"), {"n": N, "t0": t0_param})
        dead_select = select.replace(_STATE.format(pending_from=N - 1000), "'dead'")
        conn.execute(text(f"INSERT INTO dead_jobs ({_COLUMNS}, dead_at) SELECT {dead_select}, {ts} FROM {series} WHERE x % 100 = 50"),
                     {"n": N, "t0": t0_param})
        conn.execute(text("UPDATE config SET value = :n WHERE key = '_seq'"), {"n": str(N)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE" if sqlite else "VACUUM ANALYZE")
    engine.dispose()
    return time.perf_counter() - start


def cases():
    """(label, filter, before) of every page measured."""
    from queuectl.store.browse import JobFilter

    at = T0 + timedelta(seconds=N)
    mid = T0 + timedelta(seconds=N // 2)
    return [
        ("all, first page", JobFilter(), None),
        ("all, deep page (seq < 500,000)", JobFilter(), N // 2),
        ("state=completed", JobFilter(states=("completed",)), None),
        ("state=completed, deep", JobFilter(states=("completed",)), N // 2),
        ("state=pending", JobFilter(states=("pending",)), None),
        ("state=failed", JobFilter(states=("failed",)), None),
        ("state=running", JobFilter(states=("running",)), None),
        ("state=blocked", JobFilter(states=("blocked",)), None),
        ("state=cancelled", JobFilter(states=("cancelled",)), None),
        ("state=dead", JobFilter(states=("dead",)), None),
        ("state=failed,dead", JobFilter(states=("failed", "dead")), None),
        ("queue=emails (30%)", JobFilter(queue="emails"), None),
        ("queue=rare (0.1%)", JobFilter(queue="rare"), None),
        ("queue=reports, state=completed", JobFilter(states=("completed",), queue="reports"), None),
        ("queue=rare, state=completed", JobFilter(states=("completed",), queue="rare"), None),
        ("schedule=nightly", JobFilter(schedule="nightly"), None),
        ("schedule=nightly, state=completed", JobFilter(states=("completed",), schedule="nightly"), None),
        ("text='job 99' (common)", JobFilter(text="job 99"), None),
        ("text=id '500000'", JobFilter(text="500000"), None),
        ("text='needle' (10 matches: full scan)", JobFilter(text="needle"), None),
        ("created in the last hour", JobFilter(created_from=at - timedelta(hours=1)), None),
        ("created in one hour mid-history", JobFilter(created_from=mid, created_to=mid + timedelta(hours=1)), None),
        ("created before mid-history", JobFilter(created_to=mid), None),
    ]


def measure(url: str, runs: int, http: bool) -> list[tuple[str, float, float | None]]:
    from queuectl.store import Store

    store = Store.open(url)
    client = None
    if http:
        from starlette.testclient import TestClient

        from queuectl.web.app import create_app

        client = TestClient(create_app(url))
    results = []
    for label, f, before in cases():
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            rows, _cursor = store.browse(f, before=before, limit=50)
            times.append(time.perf_counter() - start)
        page_times = []
        if client is not None:
            from queuectl.web.jobs import filter_params

            params = filter_params(f)
            if before is not None:
                params["before"] = str(before)
            for _ in range(runs):
                start = time.perf_counter()
                response = client.get("/jobs", params=params)
                page_times.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text[:300]
        results.append((label, p95(times), p95(page_times) if page_times else None))
        print(f"{label:45} store p95 {p95(times) * 1000:8.1f} ms" + (f"   GET /jobs p95 {p95(page_times) * 1000:8.1f} ms" if page_times else "")
              + f"   ({len(rows)} rows)", flush=True)
    store.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--http", action="store_true")
    args = parser.parse_args()
    if args.build:
        print(f"built {N:,} jobs in {build(args.url):.1f} s", flush=True)
    measure(args.url, args.runs, args.http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
