"""What every page module shares: the store, template rendering, flash messages,
and the one shape of a state-changing action (`@action`).

A page module (overview.py, workers.py, jobs.py...) exposes `routes`, a list of
Starlette routes, which app.py concatenates. Its GET endpoints are plain (sync)
functions calling `store(request)` and returning `render(...)` or `api(...)`;
Starlette runs sync endpoints in its threadpool (the Store is synchronous). Its POST
endpoints are decorated with `@action`, which checks the CSRF token, runs the
change, and redirects back with a flash message (or answers JSON under /api/).
"""

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from queuectl.cli.render import escape as visible
from queuectl.errors import DatabaseError, NotFound, QueuectlError, ValidationError
from queuectl.timeutil import iso, short_age
from queuectl.web import security

HERE = Path(__file__).resolve().parent
FLASH_COOKIE = "queuectl_flash"

# The navigation bar, in order: (path, label). Every page module's main page is here.
NAV = (
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/dlq", "DLQ"),
    ("/workers", "Workers"),
    ("/queues", "Queues"),
    ("/schedules", "Schedules"),
)


def store(request: Request):
    """The app's one queuectl.store.Store (opened by create_app, closed on shutdown)."""
    return request.app.state.store


def read_only(request: Request) -> bool:
    return request.app.state.read_only


# --- templates ------------------------------------------------------------------------


def _finalize(value):
    """Every {{ value }} of every template passes here before autoescaping: None shows
    as '-', and text has its terminal controls written visibly (ESC as \\x1b, CR as
    \\r...), newlines and tabs kept. Markup (a macro's output, the chart) is ours."""
    if value is None:
        return "-"
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value, keep="\n\t")
    return value


def age(seconds: float | None) -> str:
    """A wait or an age, short (45s, 12m, 5h, 3d), with a tenth under ten seconds."""
    return short_age(seconds, tenths=True)


def when(value) -> str | None:
    """A datetime (or the ISO text the JSON objects hold) as 'YYYY-MM-DD HH:MM:SS' UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,  # a misspelt variable is an error, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(age=age, when=when)
    return env


TEMPLATES = _environment()


def render(request: Request, template: str, status_code: int = 200, *, fragment: bool = False, **context) -> HTMLResponse:
    """A page: `template` with `context`, plus what the layout needs (nav, flash,
    the CSRF token for forms, read-only, the database shown without its password).
    fragment: a part of a page (a live refresh), which leaves the flash message to
    the next whole page."""
    state = request.app.state
    flash = None if fragment else _take_flash(request)
    html = TEMPLATES.get_template(template).render(
        request=request,
        nav=NAV,
        path=request.url.path,
        flash=flash,
        csrf=security.csrf_token(state.secret),
        csrf_field=security.CSRF_FIELD,
        read_only=state.read_only,
        login_required=state.token is not None,
        # The login form (and a 404 under /static/) is seen before logging in: no
        # navigation and no database name there.
        signed_in=security.authenticated(request, state.token),
        database=state.store.display_url,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def api(data, status_code: int = 200) -> JSONResponse:
    """A JSON answer of the API (datetimes as ISO 8601 UTC)."""
    return JSONResponse(json.loads(json.dumps(data, default=_json_default)), status_code=status_code)


def _json_default(value):
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


# --- flash messages: one message carried across the redirect after an action ----------


def _sign(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()[:32]


def set_flash(response: Response, request: Request, text: str, level: str = "ok") -> None:
    """Show `text` on the next page this browser renders (level ok or error)."""
    payload = base64.urlsafe_b64encode(json.dumps({"text": text, "level": level}).encode())
    value = payload.decode() + "." + _sign(request.app.state.secret, payload)
    response.set_cookie(FLASH_COOKIE, value, path="/", httponly=True, samesite="strict")


def _take_flash(request: Request) -> dict | None:
    value = request.cookies.get(FLASH_COOKIE)
    if not value or "." not in value:
        return None
    payload, _, signature = value.rpartition(".")
    if not hmac.compare_digest(signature, _sign(request.app.state.secret, payload.encode())):
        return None  # from an earlier run of the server, or forged
    try:
        flash = json.loads(base64.urlsafe_b64decode(payload))
    except ValueError:
        return None
    return {"text": str(flash.get("text", "")), "level": "error" if flash.get("level") == "error" else "ok"}


# --- errors ---------------------------------------------------------------------------


def error_status(err: QueuectlError) -> int:
    """The HTTP status of a domain error: 404 not found, 400 bad input, 503 database
    unusable, 409 anything else refused (a duplicate, a key taken)."""
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, ValidationError):
        return 400
    if isinstance(err, DatabaseError):
        return 503
    return 409


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


# --- actions --------------------------------------------------------------------------

Change = Callable[[Request, FormData], str]


def action(change: Change):
    """Make `change(request, form) -> message` a POST endpoint: its fields from a
    form or a JSON object body (action_fields; malformed JSON is a 400), CSRF
    checked (403 without it), run in the threadpool, then a 303 back to the form's `next` (a
    local path) with the message flashed; a QueuectlError becomes an error flash.
    Under /api/ it answers {"ok": true, "message": ...} or {"error": ...} instead.
    Read-only mode has refused the POST before (security.SecurityMiddleware)."""

    @functools.wraps(change)
    async def endpoint(request: Request) -> Response:
        state = request.app.state
        try:
            form = await action_fields(request)
        except ValidationError as err:
            return refuse(request, 400, one_line(err))
        field = form.get(security.CSRF_FIELD)
        if not security.csrf_ok(request, field if isinstance(field, str) else None, state.secret, state.token):
            return refuse(request, 403, "missing or invalid CSRF token (reload the page and try again)")
        is_api = request.url.path.startswith("/api/")
        try:
            message = await run_in_threadpool(change, request, form)
        except QueuectlError as err:
            if is_api:
                return api({"error": one_line(err)}, error_status(err))
            return back(request, form, one_line(err), "error")
        if is_api:
            return api({"ok": True, "message": message})
        return back(request, form, message)

    endpoint.queuectl_action = True  # type: ignore[attr-defined]  # tests check every POST route has it
    return endpoint


async def action_fields(request: Request) -> FormData:
    """An action's fields: the form body, or a JSON object's (Content-Type
    application/json, as API clients send), its values as the form's text would be
    (a number as its digits, a list as repeated fields). ValidationError if the JSON
    is not an object of strings, numbers, booleans or lists of them."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        return await request.form()
    shape = 'the body must be a JSON object of fields, e.g. {"name": "default"}'
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ValidationError(f"malformed JSON: {shape}") from None
    if not isinstance(body, dict):
        raise ValidationError(shape)
    fields: list[tuple[str, str | UploadFile]] = []
    for name, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                fields.append((name, "true" if item else "false"))
            elif isinstance(item, str | int | float):
                fields.append((name, str(item)))
            elif item is not None:
                raise ValidationError(f"field {name!r}: {shape}")
    return FormData(fields)


def back(request: Request, form: FormData, message: str, level: str = "ok") -> RedirectResponse:
    """Redirect (303) to the form's `next` field (a local path only), else the page it came from."""
    target = form.get("next")
    response = RedirectResponse(security.local_target(target if isinstance(target, str) else None, _referer_path(request)), status_code=303)
    set_flash(response, request, message, level)
    return response


def _referer_path(request: Request) -> str:
    from urllib.parse import urlsplit

    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc.lower() == request.headers.get("host", "").lower():
        return security.local_target(referer.path + ("?" + referer.query if referer.query else ""))
    return "/"


def refuse(request: Request, status_code: int, message: str) -> Response:
    """A refusal: one line of JSON for the API (and non-page clients), else the error page."""
    if security.wants_json(request.url.path):
        return api({"error": message}, status_code)
    return render(request, "error.html", status_code=status_code, status=status_code, message=message)


def form_text(form: FormData, name: str, what: str | None = None) -> str:
    """A form field's text; ValidationError if it is missing or not text."""
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what or name} is missing")
    return value
