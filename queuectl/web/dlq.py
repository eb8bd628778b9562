"""The dead-letter queue (`/dlq`): dead jobs with their last error; retry and purge,
one by one, the selection, or every dead job matching the filter (after a confirm
step); and its API twins (`/api/dlq`, POST `/api/dlq/retry|purge`).

The same browser as /jobs (store/browse.py: dead jobs are read from dead_jobs along
its seq index), always filtered on the dead state; the actions are Store.dlq_retry
and Store.dlq_purge, as `queuectl dlq retry|purge`.
"""

from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl.store import JobFilter
from queuectl.web import common, jobs

DEAD_ONLY = JobFilter(states=jobs.DEAD)


def dlq_page(request: Request) -> Response:
    """The DLQ; with ?confirm=ACTION, the confirm step of ACTION on every match."""
    if "confirm" in request.query_params:
        return jobs.confirm_page(request, jobs.DLQ_ACTIONS, "/dlq", fixed=DEAD_ONLY)
    f = jobs.within(jobs.parse_filter(request.query_params.getlist), DEAD_ONLY)
    before = jobs.cursor(request.query_params.get("before"))
    rows, next_cursor = common.store(request).browse(f, before=before, limit=jobs.PAGE)
    # The links carry no state: the page fixes it.
    links = jobs.page_links(request, replace(f, states=()), before, next_cursor, "/dlq")
    return common.render(request, "dlq.html", rows=rows, filter=f, **links)


def _api_dlq(request: Request) -> Response:
    return jobs.api_jobs(request, fixed=DEAD_ONLY)


routes = [
    Route("/dlq", dlq_page, methods=["GET"]),
    Route("/dlq/bulk", common.action(jobs.bulk_change(jobs.DLQ_ACTIONS, fixed=DEAD_ONLY)), methods=["POST"]),
    Route("/api/dlq", _api_dlq, methods=["GET"]),
    Route("/api/dlq/{action}", jobs.api_action(jobs.DLQ_ACTIONS, fixed=DEAD_ONLY), methods=["POST"]),
]
