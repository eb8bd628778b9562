"""Schedules (`/schedules`, `/api/schedules`): every schedule with its next and last
run and its last job; pause, resume and run now (as `queuectl schedule ...`)."""

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl.web import common


def _name(form: FormData) -> str:
    return common.form_text(form, "name", "the schedule's name")


def pause(request: Request, form: FormData) -> str:
    name = _name(form)
    changed = common.store(request).pause_schedule(name)  # NotFound for an unknown name
    return f"paused schedule {name}" if changed else f"schedule {name} was already paused"


def resume(request: Request, form: FormData) -> str:
    name = _name(form)
    store = common.store(request)
    if not store.resume_schedule(name):
        return f"schedule {name} was not paused"
    return f"resumed schedule {name}, next run {common.when(store.schedule(name)['next_run'])} UTC"


def run_now(request: Request, form: FormData) -> str:
    name = _name(form)
    job_id = common.store(request).run_schedule(name)
    return f"enqueued job {job_id} for schedule {name}"


def page(request: Request) -> Response:
    return common.render(request, "schedules.html", schedules=common.store(request).schedules())


def api_schedules(request: Request) -> Response:
    return common.api(common.store(request).schedules())


routes = [Route("/schedules", page, methods=["GET"]), Route("/api/schedules", api_schedules, methods=["GET"])]
for _path, _change in (("pause", pause), ("resume", resume), ("run", run_now)):
    routes += [Route(f"/schedules/{_path}", common.action(_change), methods=["POST"]),
               Route(f"/api/schedules/{_path}", common.action(_change), methods=["POST"])]
