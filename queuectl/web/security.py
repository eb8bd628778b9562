"""Who may use the dashboard, and what every response says to the browser.

The model (README, "Web dashboard"):

- Without a token the server listens on a loopback address only (the CLI refuses a
  non-loopback --host without one), asks no one to log in, and answers only requests
  whose Host is a loopback name or address (421 otherwise: DNS rebinding).
- With a token every request but /login and /static/ must carry it: the session
  cookie set by the login form, or `Authorization: Bearer <token>` (API clients,
  Prometheus). The cookie holds its expiry, a random nonce and an HMAC of both keyed
  by the token, never the token itself: stateless, so it outlives a restart, and it
  is valid until it expires (SESSION_SECONDS) or the token changes. Logging out
  deletes it from this browser; changing the token ends every session.
- Every POST is refused unless it carries the CSRF token (a hidden form field, or
  the X-CSRF-Token header) derived from a random secret drawn when the app was
  created, and its Origin (or Referer) names this host when the browser sent one.
  A request authenticated by a bearer header needs no CSRF token: a browser never
  adds that header to a forged request by itself.
- --read-only: every POST but logging in and out is refused with 403 (the pages hide
  the buttons too, see templates).
- Headers on every response: no sniffing, no framing, a CSP that allows only this
  origin's files (so no inline script can run), and no Referer to other sites.
"""

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "queuectl_session"
# How long a login lasts (the cookie's Max-Age and the expiry signed into it): a
# working day, after which the login form asks for the token again.
SESSION_SECONDS = 12 * 3600
# The shortest token `queuectl web` accepts: one that can be guessed over the network
# is no guard (`openssl rand -hex 16` gives 32 characters).
MIN_TOKEN_LENGTH = 16
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
# Paths open without the token: the login form and the static files (CSS, scripts,
# icon: public, the same in every install, they hold no data).
OPEN_PATHS = ("/login", "/static/")
# POSTs allowed in --read-only mode: they change nothing in the database.
READ_ONLY_POSTS = ("/login", "/logout")

# The session cookie's attributes, the same when it is set and when it is deleted.
SESSION_COOKIE_ATTRIBUTES: dict = {"path": "/", "httponly": True, "samesite": "strict"}

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine: localhost or a
    loopback address (0.0.0.0 and :: listen on every interface: not loopback)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def new_secret() -> bytes:
    """The per-app secret CSRF tokens derive from (a restart invalidates open forms)."""
    return secrets.token_bytes(32)


def csrf_token(secret: bytes) -> str:
    """The token each form carries as a hidden field."""
    return hmac.new(secret, b"queuectl-web-csrf", hashlib.sha256).hexdigest()


def session_value(token: str, expires: int | None = None, nonce: str | None = None) -> str:
    """A new session cookie's value, `<expiry unix time>.<nonce>.<hmac>`: the HMAC,
    keyed by the token, covers the expiry and a random nonce (so two logins differ,
    and the cookie never holds the token). expires defaults to SESSION_SECONDS from now."""
    if expires is None:
        expires = int(time.time()) + SESSION_SECONDS
    nonce = nonce if nonce is not None else secrets.token_hex(8)
    return f"{expires}.{nonce}.{_session_mac(token, expires, nonce)}"


def _session_mac(token: str, expires: int, nonce: str) -> str:
    message = f"queuectl-web-session.{expires}.{nonce}".encode("utf-8", "surrogateescape")
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def session_ok(value: str | None, token: str) -> bool:
    """Whether a session cookie was made with this token and has not expired (nor
    claims to last longer than SESSION_SECONDS from now: a cookie is never extended)."""
    if not value:
        return False
    expires, _, rest = value.partition(".")
    nonce, _, mac = rest.partition(".")
    if not expires.isascii() or not expires.isdigit() or not nonce or not mac:
        return False
    now = time.time()
    if not now < int(expires) <= now + SESSION_SECONDS + 60:
        return False
    return same(mac, _session_mac(token, int(expires), nonce))


def set_session(response: Response, token: str) -> None:
    """Log this browser in: the session cookie, HttpOnly, SameSite=Strict, for SESSION_SECONDS."""
    response.set_cookie(SESSION_COOKIE, session_value(token), max_age=SESSION_SECONDS, **SESSION_COOKIE_ATTRIBUTES)


def end_session(response: Response) -> None:
    """Log this browser out: delete the cookie, with the attributes it was set with."""
    response.delete_cookie(SESSION_COOKIE, **SESSION_COOKIE_ATTRIBUTES)


def same(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a secret someone sent with the one expected."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def authenticated(request: Request, token: str | None) -> bool:
    """Whether the request may see the dashboard: no token configured, or it carries it."""
    if token is None:
        return True
    return same(bearer(request), token) or session_ok(request.cookies.get(SESSION_COOKIE), token)


def by_bearer(request: Request, token: str | None) -> bool:
    """Whether the request proved itself with a bearer header (so it needs no CSRF token)."""
    return token is not None and same(bearer(request), token)


def same_origin(request: Request) -> bool:
    """The Origin header (or, without one, the Referer) names the host the request
    was sent to; True when the browser sent neither (curl, old browsers: the CSRF
    token still guards them)."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return True
        origin = referer
    if origin == "null":  # a sandboxed frame, a data: URL, a redirect across origins
        return False
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def csrf_ok(request: Request, form_value: str | None, secret: bytes, token: str | None) -> bool:
    """The CSRF rule for a POST (see the module docstring)."""
    if by_bearer(request, token):
        return True
    given = form_value if form_value is not None else request.headers.get(CSRF_HEADER)
    return same_origin(request) and same(given, csrf_token(secret))


def wants_json(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"


class SecurityMiddleware:
    """Refuses unauthenticated requests and read-only POSTs before any route runs, and
    adds the security headers to every response."""

    def __init__(self, app: ASGIApp, *, token: str | None, read_only: bool, refuse: Callable[[Request, int, str], Response]):
        """refuse(request, status, message): the answer to a refused action, the error
        page or the API's JSON (common.refuse, given by app.py: common imports this module)."""
        self.app = app
        self.token = token
        self.read_only = read_only
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = self.refusal(Request(scope))
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def refusal(self, request: Request) -> Response | None:
        path = request.url.path
        if self.token is None and not loopback_host(request):
            # DNS rebinding: a hostile page whose name now resolves to 127.0.0.1 reaches
            # this server, same-origin in the browser's eyes, with its own name as Host.
            return JSONResponse({"error": "without a token this dashboard answers only to a loopback host name (localhost, 127.0.0.1, [::1])"},
                                status_code=421)
        if not path.startswith(OPEN_PATHS) and not authenticated(request, self.token):
            if wants_json(path):
                return JSONResponse({"error": "authentication required: log in, or send Authorization: Bearer <token>"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            # After logging in, back to the page asked for (not to a form's POST target).
            target = "/login?next=" + _quoted_path(request) if request.method in ("GET", "HEAD") else "/login"
            return RedirectResponse(target, status_code=303)
        if self.read_only and request.method not in ("GET", "HEAD") and path not in READ_ONLY_POSTS:
            # A form posted from a page gets the error page; an API client its JSON line.
            return self.refuse(request, 403, "this dashboard is read-only (queuectl web --read-only)")
        return None


def loopback_host(request: Request) -> bool:
    """Whether the Host header names this machine by a loopback name or address."""
    name = urlsplit("//" + request.headers.get("host", "")).hostname
    return name is not None and is_loopback(name)


def _quoted_path(request: Request) -> str:
    from urllib.parse import quote

    target = request.url.path + ("?" + request.url.query if request.url.query else "")
    return quote(target, safe="")


def local_target(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site (where a form may send the browser back
    to), else `default`: never another site (//evil.example, https://..., \\\\x)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or any(c < " " for c in target):
        return default
    return target
