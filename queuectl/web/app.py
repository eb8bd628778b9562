"""The dashboard's ASGI application: the pages' routes, the static files, the
security middleware and the error pages, over one Store.

To add pages: a module with `routes: list[BaseRoute]` (see common.py for the
shapes of its endpoints), appended to PAGE_MODULES below, and a NAV entry in common.py.
"""

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from queuectl.errors import QueuectlError
from queuectl.web import common, dlq, jobs, login, overview, prometheus, queues, schedules, security, workers

# Every page module, in the order their routes are tried.
PAGE_MODULES = (login, overview, jobs, dlq, workers, queues, schedules, prometheus)

# How often the overview refreshes itself by default (seconds).
DEFAULT_REFRESH = 5.0


def routes() -> list[BaseRoute]:
    found: list[BaseRoute] = []
    for module in PAGE_MODULES:
        found += module.routes
    found.append(Mount("/static", StaticFiles(directory=common.HERE / "static"), name="static"))
    return found


def create_app(url: str, *, read_only: bool = False, token: str | None = None, refresh: float = DEFAULT_REFRESH) -> Starlette:
    """The dashboard over the database at `url` (its schema migrated on open, as any
    command does). token: required of every request (see security.py); read_only:
    no action; refresh: the overview's polling interval in seconds."""
    from queuectl.store import Store

    if token is not None and not token.strip():
        token = None
    opened = Store.open(url)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            opened.close()

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(security.SecurityMiddleware, token=token, read_only=read_only, refuse=common.refuse)],
        exception_handlers={QueuectlError: _domain_error, HTTPException: _http_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.store = opened
    app.state.read_only = read_only
    app.state.token = token
    app.state.secret = security.new_secret()
    app.state.refresh = refresh
    return app


async def _domain_error(request: Request, err: Exception):
    assert isinstance(err, QueuectlError)
    return common.refuse(request, common.error_status(err), common.one_line(err))


async def _http_error(request: Request, err: Exception):
    assert isinstance(err, HTTPException)
    message = {404: "no such page", 405: "method not allowed (actions are POST forms)"}.get(err.status_code, str(err.detail))
    return common.refuse(request, err.status_code, message)


async def _unexpected(request: Request, err: Exception):
    # One line, as the CLI's: a database library puts the statement and its
    # parameters on the lines after the first.
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    response = common.refuse(request, 500, f"unexpected error: {text}")
    # This handler runs outside SecurityMiddleware (in Starlette's outermost layer).
    response.headers.update(security.HEADERS)
    return response
