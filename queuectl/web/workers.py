"""Workers (`/workers`, `/api/workers`): host, pid, state, current job, heartbeat age,
processed/failed, queues. A live worker silent for longer than heartbeat-timeout is
marked stale (a reaper will soon declare it dead); dead and stopped ones stay listed
for status.RECENT_SECONDS, as in `queuectl status`."""

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl import status
from queuectl.states import LIVE_WORKER_STATES
from queuectl.timeutil import utcnow
from queuectl.web import common


def workers_data(store, now: datetime | None = None) -> dict:
    """The worker processes as `status` lists them, each with `stale`, and the timeout used."""
    report = status.report(store, now=now or utcnow())
    timeout = store.config()["heartbeat-timeout"]
    for worker in report["workers"]:
        worker["stale"] = worker["state"] in LIVE_WORKER_STATES and worker["heartbeat_age"] > timeout
    return {"heartbeat_timeout": timeout, "workers": report["workers"]}


def page(request: Request) -> Response:
    return common.render(request, "workers.html", recent=status.RECENT_SECONDS, **workers_data(common.store(request)))


def api_workers(request: Request) -> Response:
    return common.api(workers_data(common.store(request)))


routes = [
    Route("/workers", page, methods=["GET"]),
    Route("/api/workers", api_workers, methods=["GET"]),
]
