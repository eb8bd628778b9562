"""The login form (only when a token is configured) and logging out."""

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from queuectl.web import common, security


def login_form(request: Request) -> Response:
    if request.app.state.token is None:
        return RedirectResponse("/", status_code=303)
    return common.render(request, "login.html", next=security.local_target(request.query_params.get("next")), wrong=False)


async def login(request: Request) -> Response:
    """Check the token typed in; set the session cookie (security.set_session)."""
    state = request.app.state
    form = await request.form()
    target = security.local_target(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    if state.token is None:
        return RedirectResponse(target, status_code=303)
    field = form.get(security.CSRF_FIELD)
    if not security.csrf_ok(request, field if isinstance(field, str) else None, state.secret, None):
        return common.refuse(request, 403, "missing or invalid CSRF token (reload the page and try again)")
    typed = form.get("token")
    if not security.same(typed if isinstance(typed, str) else None, state.token):
        return common.render(request, "login.html", status_code=401, next=target, wrong=True)
    response = RedirectResponse(target, status_code=303)
    security.set_session(response, state.token)
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    field = form.get(security.CSRF_FIELD)
    if not security.csrf_ok(request, field if isinstance(field, str) else None, request.app.state.secret, None):
        return common.refuse(request, 403, "missing or invalid CSRF token (reload the page and try again)")
    response = RedirectResponse("/login" if request.app.state.token else "/", status_code=303)
    security.end_session(response)
    return response


login.queuectl_action = True  # type: ignore[attr-defined]  # CSRF-checked like every action
logout.queuectl_action = True  # type: ignore[attr-defined]

routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
