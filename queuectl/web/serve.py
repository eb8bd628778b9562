"""Running the dashboard: the app under uvicorn, in the foreground, until Ctrl-C."""

import socket
from collections.abc import Callable

import uvicorn

from queuectl.errors import QueuectlError
from queuectl.web.app import create_app


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port. Bound here rather than by uvicorn, so that a
    port in use or an unknown host is one line and exit 1 (uvicorn logs and exits 3),
    and listening here too, so that the URL is printed only once it takes connections:
    bound but not listening, it refused them until uvicorn had started (a script that
    fetched the URL as soon as it was printed failed; so did a browser test in CI).
    Connections that arrive before uvicorn serves wait in the backlog."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise QueuectlError(f"cannot listen on {host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
        sock.bind(address)
        sock.listen(2048)  # uvicorn's default backlog; it calls listen again with its own
    except OSError as err:
        sock.close()
        raise QueuectlError(f"cannot listen on {url_of(host, port)}: {err.strerror or err}") from None
    return sock


def run(url: str, *, host: str, port: int, read_only: bool, token: str | None, refresh: float,
        announce: Callable[[str], None]) -> int:
    """Serve until interrupted (0); `announce` is given the line that says where, once
    the socket is bound (the CLI prints it)."""
    sock = listen(host, port)
    try:
        app = create_app(url, read_only=read_only, token=token, refresh=refresh)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", server_header=False))
        announce(f"queuectl web: {url_of(host, port)}{' (read-only)' if read_only else ''} on {app.state.store.display_url}")
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
