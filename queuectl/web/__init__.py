"""`queuectl web`: the dashboard, its JSON API under /api/, and /metrics (optional
extra [web]: Starlette, Jinja2, uvicorn)."""
