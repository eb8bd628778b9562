"""The overview (`/`): counts by state and by queue, throughput over the last hour,
failure rate, the oldest ready job's age, workers alive; it refreshes its live part
(`/overview/live`, an HTML fragment) every few seconds, paused while the tab is
hidden (static/dashboard.js). `/api/overview` is the same as JSON.

One refresh reads: status.report (one read transaction: counts, next scheduled job,
worker rows, figures per queue, none of which scans the history), the config (for
heartbeat-timeout) and Store.throughput (see tests/test_web.py for the count).
"""

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl import status
from queuectl.states import LIVE_WORKER_STATES
from queuectl.timeutil import utcnow
from queuectl.web import chart, common

# The states in the order the overview shows them (a job's life, then its ends).
STATE_ORDER = ("blocked", "pending", "running", "failed", "completed", "dead", "cancelled")


def overview_data(store, now: datetime | None = None) -> dict:
    """Everything the overview shows, as the JSON object /api/overview returns."""
    now = now or utcnow()
    report = status.report(store, now=now)
    timeout = store.config()["heartbeat-timeout"]
    for worker in report["workers"]:
        worker["stale"] = worker["state"] in LIVE_WORKER_STATES and worker["heartbeat_age"] > timeout
    points = store.throughput(now, minutes=60)
    ready = [q["oldest_ready_age"] for q in report["queues"] if q["oldest_ready_age"] is not None]
    live = [w for w in report["workers"] if w["state"] in LIVE_WORKER_STATES]
    return {
        "jobs": report["jobs"],
        "pending": report["pending"],
        "next_scheduled": report["next_scheduled"],
        "queues": report["queues"],
        "unserved": report["unserved"],
        "workers_alive": sum(1 for w in live if not w["stale"]),
        "workers_stale": sum(1 for w in live if w["stale"]),
        "oldest_ready_age": max(ready, default=None),
        "throughput": points,
        "failure_rate": chart.failure_rate(points),
    }


def _context(request: Request) -> dict:
    data = overview_data(common.store(request))
    points = data["throughput"]
    return {
        "data": data,
        "states": STATE_ORDER,
        "chart": chart.throughput_svg(points),
        "completed_hour": sum(p["completed"] for p in points),
        "failed_hour": sum(chart.failures(p) for p in points),
    }


def page(request: Request) -> Response:
    return common.render(request, "overview.html", refresh=request.app.state.refresh, **_context(request))


def live(request: Request) -> Response:
    """The part of the overview that refreshes itself."""
    return common.render(request, "overview_live.html", fragment=True, **_context(request))


def api_overview(request: Request) -> Response:
    return common.api(overview_data(common.store(request)))


routes = [
    Route("/", page, methods=["GET"]),
    Route("/overview/live", live, methods=["GET"]),
    Route("/api/overview", api_overview, methods=["GET"]),
]
