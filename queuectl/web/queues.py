"""Queues (`/queues`, `/api/queues`): the figures per queue and their controls, with
pause, resume and limit (Store.pause_queue / limit_queue, as `queuectl queue ...`).

Actions name a listed queue (one with jobs, or paused or limited): any other name is
refused as unknown, so a typo in a hand-made request changes nothing.
"""

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl import jobspec, status
from queuectl.errors import NotFound
from queuectl.timeutil import utcnow
from queuectl.web import common


def queue_entries(store) -> list[dict]:
    """Per queue: ready, scheduled, running, failed, dead, cancelled, the oldest ready
    job's age, paused, max_running (as `queue list --json`)."""
    now = utcnow()
    return status.queue_entries(store.queues(now), now)


def _known_queue(request: Request, form: FormData) -> str:
    name = jobspec.check_queue(common.form_text(form, "name", "the queue's name"))
    if name not in common.store(request).queues(utcnow()):
        raise NotFound(f"no queue named {name!r} (a queue is listed while it has jobs, or is paused or limited)")
    return name


def pause(request: Request, form: FormData) -> str:
    name = _known_queue(request, form)
    before = common.store(request).pause_queue(name, True)
    return f"queue {name} {'was already' if before else 'is now'} paused: no worker claims its jobs (running ones finish)"


def resume(request: Request, form: FormData) -> str:
    name = _known_queue(request, form)
    before = common.store(request).pause_queue(name, False)
    return f"queue {name} {'resumed' if before else 'was not paused'}"


def limit(request: Request, form: FormData) -> str:
    name = _known_queue(request, form)
    value = jobspec.parse_queue_limit(common.form_text(form, "limit", "the limit (a whole number from 1, or none)"))
    common.store(request).limit_queue(name, value)
    if value is None:
        return f"queue {name}: no limit"
    return f"queue {name}: at most {value} running {'job' if value == 1 else 'jobs'} at once, across all hosts"


def page(request: Request) -> Response:
    return common.render(request, "queues.html", queues=queue_entries(common.store(request)))


def api_queues(request: Request) -> Response:
    return common.api(queue_entries(common.store(request)))


routes = [Route("/queues", page, methods=["GET"]), Route("/api/queues", api_queues, methods=["GET"])]
for _name, _change in (("pause", pause), ("resume", resume), ("limit", limit)):
    routes += [Route(f"/queues/{_name}", common.action(_change), methods=["POST"]),
               Route(f"/api/queues/{_name}", common.action(_change), methods=["POST"])]
