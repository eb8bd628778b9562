"""/metrics: the Prometheus text format of queuectl.metrics, the same as
`queuectl metrics` prints (docs/design.md §15)."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl.metrics import CONTENT_TYPE, exposition
from queuectl.web import common


def metrics(request: Request) -> Response:
    return Response(exposition(common.store(request)), media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics, methods=["GET"])]
