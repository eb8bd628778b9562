"""Running the dashboard: the app under uvicorn, in the foreground, until Ctrl-C."""

import uvicorn

from queuectl.web.app import create_app


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(url: str, *, host: str, port: int, read_only: bool, token: str | None, refresh: float) -> int:
    """Serve until interrupted; 0 on a clean stop, 1 if the port could not be bound."""
    app = create_app(url, read_only=read_only, token=token, refresh=refresh)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", server_header=False))
    print(f"queuectl web: {url_of(host, port)}{' (read-only)' if read_only else ''} on {app.state.store.display_url}", flush=True)
    server.run()
    if not server.started:  # uvicorn logged why (the port taken, an unknown host)
        app.state.store.close()
        return 1
    return 0


