"""/metrics (the Prometheus text format), and the one place the dashboard reaches
into queuectl.metrics: its exposition and Store.throughput.

Until queuectl.metrics is merged, both are absent: /metrics answers 503 and the
overview shows no chart. The two `except (ImportError, AttributeError)` below are
that fallback, and all of it.
"""

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl.web import common

MISSING = "throughput appears once metrics are available"


def throughput(store, now: datetime, minutes: int = 60) -> list[dict] | None:
    """Per minute, oldest first: completed, failed, timed_out, dead, cancelled,
    enqueued (Store.throughput); None without queuectl.metrics."""
    try:
        per_minute = store.throughput
    except AttributeError:
        return None
    return per_minute(now, minutes=minutes)


def metrics(request: Request) -> Response:
    try:
        from queuectl.metrics import CONTENT_TYPE, exposition  # type: ignore[import-not-found, unused-ignore]  # until merged
    except ImportError:
        return common.refuse(request, 503, "metrics are not available in this build of queuectl")
    return Response(exposition(common.store(request)), media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics, methods=["GET"])]
