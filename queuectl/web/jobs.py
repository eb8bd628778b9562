"""The job browser (`/jobs`), a job's page (`/jobs/{id}`), their actions and their
API twins (`/api/jobs`, `/api/jobs/{id}`, POST `/api/jobs/retry|cancel|delete`).

The list is Store.browse: newest first, a page per keyset cursor on seq (`before`),
so no page counts or skips rows (docs/design.md §16). The filter lives in the query
string, so links to older pages, the confirm step of a bulk action and the API share
it (parse_filter / filter_params).

Actions are those of the CLI, through the same Store methods and so with the same
refusals: retry and delete take finished jobs (completed, cancelled, dead), cancel
active ones (pending, failed, blocked, running). On a selection they are all or
nothing, as `queuectl retry ID...`. On everything matching a filter they act on the
matches in batches of BATCH ids (Store.matching_ids, narrowed to the states the
action takes), each batch one transaction, and say how many they did.
"""

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuectl import jobspec
from queuectl.errors import NotFound, QueuectlError, ValidationError
from queuectl.states import ACTIVE, TERMINAL, JobState
from queuectl.store import JobFilter
from queuectl.timeutil import parse_timestamp
from queuectl.web import common, security

# Every state, in the order the filter form offers them.
STATES = tuple(s.value for s in JobState)
# Rows per page; the API accepts up to MAX_LIMIT.
PAGE = 50
MAX_LIMIT = 500
# Ids per transaction of a bulk action on a filter's matches.
BATCH = 1000
# The confirm step counts the matches up to this many (a count of all of them could
# read the whole history); past it, it says "more than".
COUNT_CAP = 10_000
# The output shown on a job's page: its last characters (the database keeps up to
# output-limit of them).
OUTPUT_TAIL = 64 * 1024
# Longest text filter accepted.
MAX_TEXT = 1000

# What each action takes, and the Store call acting on named ids: its ids done, and
# the message (the CLI's words).
RETRYABLE = TERMINAL
CANCELLABLE = ACTIVE


def _some(ids: list[str]) -> str:
    return ": " + " ".join(ids) if 0 < len(ids) <= 20 else ""


# --- filters --------------------------------------------------------------------------


def parse_filter(values: Callable[[str], list]) -> JobFilter:
    """A JobFilter from request fields; `values(name)` gives a field's values (query
    string, form or JSON). ValidationError (one line) on a bad one."""

    def one(name: str) -> str | None:
        found = [v for v in values(name) if isinstance(v, str) and v.strip()]
        if any(not isinstance(v, str) for v in values(name)):
            raise ValidationError(f"filter field {name!r} must be text")
        return found[-1].strip() if found else None

    states: list[str] = []
    for value in values("state"):
        if not isinstance(value, str):
            raise ValidationError("filter field 'state' must be text or a list of text")
        for part in value.split(","):
            if part.strip():
                state = JobState.parse(part).value
                if state not in states:
                    states.append(state)
    queue, text, schedule = one("queue"), one("text"), one("schedule")
    if text is not None and len(text) > MAX_TEXT:
        raise ValidationError(f"the text to search is too long (at most {MAX_TEXT} characters)")
    if text is not None and ("\x00" in text or not jobspec.is_utf8(text)):
        # PostgreSQL refuses NUL in text; no command holds one (enqueue refuses them).
        raise ValidationError("the text to search holds a NUL character or undecodable bytes")
    start, end = one("from"), one("to")
    return JobFilter(
        states=tuple(s for s in STATES if s in states),
        queue=jobspec.check_queue(queue) if queue is not None else None,
        text=text,
        created_from=parse_timestamp(start) if start is not None else None,
        created_to=parse_timestamp(end) if end is not None else None,
        schedule=jobspec.check_schedule_name(schedule) if schedule is not None else None,
    )


def _form_time(value: datetime | None) -> str:
    # What an <input type="datetime-local"> shows, read back as UTC by parse_timestamp.
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value is not None else ""


def filter_params(f: JobFilter) -> dict:
    """The query-string fields of a filter (only those set): links keep the filter."""
    params: dict = {}
    if f.states:
        params["state"] = ",".join(f.states)
    for name, value in (("queue", f.queue), ("text", f.text), ("schedule", f.schedule)):
        if value is not None:
            params[name] = value
    if f.created_from is not None:
        params["from"] = _form_time(f.created_from)
    if f.created_to is not None:
        params["to"] = _form_time(f.created_to)
    return params


def _query_filter(request: Request) -> JobFilter:
    return parse_filter(request.query_params.getlist)


def json_filter(data) -> JobFilter:
    """The {"filter": {...}} of an API call: the same fields as the query string
    (state: a string or a list)."""
    if not isinstance(data, dict):
        raise ValidationError('"filter" must be an object')
    unknown = sorted(set(data) - {"state", "queue", "text", "from", "to", "schedule"})
    if unknown:
        raise ValidationError(f"unknown filter field {unknown[0]!r} (state, queue, text, from, to, schedule)")

    def values(name: str) -> list:
        value = data.get(name)
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]

    return parse_filter(values)


def within(f: JobFilter, fixed: JobFilter | None) -> JobFilter:
    """The filter on a page that always filters on `fixed`'s states (the DLQ's dead
    state): one naming another state would match nothing there, so it is refused
    rather than widened to the fixed states (an action on it would act on jobs the
    filter does not name); GET and POST refuse it alike."""
    if fixed is None:
        return f
    other = [s for s in f.states if s not in fixed.states]
    if other:
        raise ValidationError(f"the dead-letter queue holds dead jobs only: a filter on {', '.join(other)} matches none")
    return replace(f, states=fixed.states)


def cursor(text: str | None) -> int | None:
    """The `before` of a page link: a positive integer, or none."""
    if text is None or text == "":
        return None
    # 18 digits: every cursor a BIGINT holds, and no SQLite integer overflow.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValidationError(f"invalid page cursor {text!r} (follow the page links)")
    return int(text)


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return PAGE
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise ValidationError(f"invalid limit {text!r} (1 to {MAX_LIMIT})")
    return int(text)


# --- actions, on ids or on a filter's matches -------------------------------------------


def _retry(store, ids: list[str]) -> tuple[list[str], str]:
    done = store.retry(ids)
    return done, f"retried {len(done)} job(s)" + _some(done)


def _delete(store, ids: list[str]) -> tuple[list[str], str]:
    done = store.delete(ids)
    return done, f"deleted {len(done)} job(s)" + _some(done)


def _cancel(store, ids: list[str]) -> tuple[list[str], str]:
    cancelled, asked = store.cancel(ids)
    said = f"cancelled {len(cancelled)} job(s)" + _some(cancelled)
    if asked:
        said += f"; asked {len(asked)} running job(s) to stop" + _some(asked)
    return cancelled + asked, said


def _dlq_retry(store, ids: list[str]) -> tuple[list[str], str]:
    done = store.dlq_retry(ids)
    return done, f"retried {len(done)} job(s)" + _some(done)


def _dlq_purge(store, ids: list[str]) -> tuple[list[str], str]:
    done = store.dlq_purge(ids)
    return done, f"purged {len(done)} job(s)" + _some(done)


class Action:
    """A bulk action: the states it takes and how it acts on named ids."""

    def __init__(self, name: str, verb: str, states: tuple[str, ...], act, refusal: str):
        self.name, self.verb, self.states, self.act, self.refusal = name, verb, states, act, refusal

    def on_ids(self, store, ids: list[str]) -> tuple[list[str], str]:
        if not ids:
            raise ValidationError("select at least one job")
        return self.act(store, [jobspec.lookup_id(i) for i in ids])

    def narrowed(self, f: JobFilter) -> JobFilter:
        """The filter's matches this action takes; ValidationError if none can be."""
        narrowed = f.only(self.states)
        if not narrowed.states:
            raise ValidationError(f"this filter selects no job that can be {self.verb} ({self.refusal})")
        return narrowed

    def count(self, store, f: JobFilter) -> tuple[int, bool]:
        """(matches it would act on, up to COUNT_CAP; whether there are more)."""
        ids, more = store.matching_ids(self.narrowed(f), COUNT_CAP)
        return len(ids), more is not None

    def _batch(self, store, ids: list[str]) -> list[str]:
        try:
            return self.act(store, ids)[0]
        except NotFound:
            # All or nothing per batch: a job moved on between the read and the act
            # (a worker claimed it, another action took it). Keep those still in a
            # state this action takes.
            states = store.outcomes(ids)
            still = [i for i in ids if i in states and states[i][0] in self.states]
            return self.act(store, still)[0] if still else []

    def on_filter(self, store, f: JobFilter) -> tuple[int, str]:
        """Act on every match, BATCH ids per transaction, older pages after newer; a
        job that changed state meanwhile (a worker took it) is left out of its batch."""
        narrowed = self.narrowed(f)
        done = 0
        before = None
        while True:
            ids, before = store.matching_ids(narrowed, BATCH, before=before)
            if ids:
                try:
                    done += len(self._batch(store, ids))
                except QueuectlError as err:
                    if not done:
                        raise
                    # Say what the batches before did: they are committed.
                    raise QueuectlError(f"{self.verb} {done} job(s) matching the filter, then stopped: {common.one_line(err)}") from None
            if before is None:
                return done, f"{self.verb} {done} job(s) matching the filter"


JOB_ACTIONS = {
    "retry": Action("retry", "retried", RETRYABLE, _retry, "retry takes completed, cancelled or dead jobs"),
    "cancel": Action("cancel", "cancelled", CANCELLABLE, _cancel, "cancel takes pending, failed, blocked or running jobs"),
    "delete": Action("delete", "deleted", RETRYABLE, _delete, "delete takes completed, cancelled or dead jobs"),
}
DEAD = (JobState.DEAD.value,)
DLQ_ACTIONS = {
    "retry": Action("retry", "retried", DEAD, _dlq_retry, "the DLQ holds dead jobs only"),
    "purge": Action("purge", "purged", DEAD, _dlq_purge, "the DLQ holds dead jobs only"),
}


def chosen_action(actions: dict, name) -> Action:
    if not isinstance(name, str) or name not in actions:
        raise ValidationError(f"unknown action {name!r} (one of {', '.join(actions)})")
    return actions[name]


def bulk_change(actions: dict, fixed: JobFilter | None = None):
    """The POST of a bulk form: `action`, and `scope` "selected" (the checked `id`s)
    or "matching" (every job matching the filter fields, after the confirm step).
    `fixed`: states the page always filters on (the DLQ's)."""

    def change(request: Request, form) -> str:
        store = common.store(request)
        one = form.get("one")
        if isinstance(one, str) and one:
            # A row's own button: "<action>:<id>" (ids hold no spaces; actions no colon).
            name, _, job_id = one.partition(":")
            return chosen_action(actions, name).on_ids(store, [job_id])[1]
        chosen = chosen_action(actions, form.get("action"))
        if form.get("scope") == "matching":
            f = within(parse_filter(form.getlist), fixed)
            return chosen.on_filter(store, f)[1]
        ids = [i for i in form.getlist("id") if isinstance(i, str)]
        return chosen.on_ids(store, ids)[1]

    return change


def confirm_page(request: Request, actions: dict, template_base: str, fixed: JobFilter | None = None) -> Response:
    """The confirm step of an action on every match: how many (up to COUNT_CAP)."""
    if common.read_only(request):
        return common.refuse(request, 403, "this dashboard is read-only (queuectl web --read-only)")
    chosen = chosen_action(actions, request.query_params.get("confirm"))
    f = within(_query_filter(request), fixed)
    count, more = chosen.count(common.store(request), f)
    return common.render(request, "jobs_confirm.html", chosen=chosen, count=count, more=more, cap=COUNT_CAP,
                         params=filter_params(f), back=template_base, filter=f)


# --- pages ----------------------------------------------------------------------------


def page_links(request: Request, f: JobFilter, before: int | None, next_cursor: int | None, path: str) -> dict:
    from urllib.parse import urlencode

    params = filter_params(f)
    return {
        "older": f"{path}?{urlencode(dict(params, before=next_cursor))}" if next_cursor is not None else None,
        "newest": f"{path}?{urlencode(params)}" if before is not None else None,
        "here": f"{path}?{urlencode(dict(params, **({'before': before} if before is not None else {})))}",
        "params": params,
    }


def jobs_page(request: Request) -> Response:
    """The list; with ?confirm=ACTION, the confirm step of ACTION on every match (a
    query field, not a path under /jobs/, which a job id could name)."""
    if "confirm" in request.query_params:
        return confirm_page(request, JOB_ACTIONS, "/jobs")
    f = _query_filter(request)
    before = cursor(request.query_params.get("before"))
    rows, next_cursor = common.store(request).browse(f, before=before, limit=PAGE)
    return common.render(request, "jobs.html", rows=rows, filter=f, states=STATES, **page_links(request, f, before, next_cursor, "/jobs"))


def job_detail(store, job_id: str) -> dict:
    """Everything a job's page shows (and /api/jobs/{id} returns)."""
    job = store.job(job_id)
    job_id = job["id"]
    dependencies, dependents = store.job_dependencies(job_id)
    output = job.pop("output", None) or ""
    return {
        "job": job,
        "dependencies": dependencies,
        "dependents": dependents,
        "attempts": store.history(job_id),
        "output_tail": output[-OUTPUT_TAIL:],
        "output_shown_from": max(0, len(output) - OUTPUT_TAIL),
    }


# Fields the page's list leaves out, as `queuectl show` does: the output (its own
# panel), runs and attempts (they follow the list with what they count), and
# has_dependents (the claim's bookkeeping; the dependents are listed beside).
NOT_LISTED = ("output_size", "runs", "attempts", "has_dependents")


def _shown(name: str, value):
    if value is None:
        return None
    if name.endswith("_at"):
        return common.when(value)
    if name == "timeout":
        return f"{value:g}s"  # as the CLI writes a duration ("timed out after 1.5s")
    return value


def job_fields(job: dict) -> list[tuple[str, object]]:
    """The job page's field list: (label, value), labelled as `queuectl show` labels
    them; times as the pages show them."""
    fields: list[tuple[str, object]] = [
        (name, _shown(name, value)) for name, value in job.items() if name not in NOT_LISTED
    ]
    fields.append(("runs", job["runs"]))
    fields.append(("attempts", f"{job['attempts']} (failed attempts that count against max_retries; a retry by hand resets them)"))
    return fields


def job_page(request: Request) -> Response:
    detail = job_detail(common.store(request), request.path_params["job_id"])
    state = detail["job"]["state"]
    return common.render(request, "job.html", **detail, fields=job_fields(detail["job"]), retryable=state in RETRYABLE,
                         cancellable=state in CANCELLABLE, here=f"/jobs/{detail['job']['id']}")


# --- the API --------------------------------------------------------------------------


def api_jobs(request: Request, fixed: JobFilter | None = None) -> Response:
    f = within(_query_filter(request), fixed)
    before = cursor(request.query_params.get("before"))
    rows, next_cursor = common.store(request).browse(f, before=before, limit=_limit(request.query_params.get("limit")))
    return common.api({"jobs": rows, "next": next_cursor})


def api_job(request: Request) -> Response:
    return common.api(job_detail(common.store(request), request.path_params["job_id"]))


def _empty(f: JobFilter, fixed: JobFilter | None) -> bool:
    """Whether `f` names nothing but the states the page always filters on."""
    kept = tuple(s for s in f.states if fixed is None or s not in fixed.states)
    return replace(f, states=kept) == JobFilter()


def api_action(actions: dict, fixed: JobFilter | None = None):
    """POST /api/.../{action} with JSON {"ids": [...]} or {"filter": {...}} (an empty
    filter, every job, only with "all": true beside it): CSRF by the
    X-CSRF-Token header or a bearer token (security.csrf_ok); answers {"ok", "message",
    "count"} or {"error"}."""
    from starlette.concurrency import run_in_threadpool

    async def endpoint(request: Request) -> Response:
        state = request.app.state
        if not security.csrf_ok(request, None, state.secret, state.token):
            return common.refuse(request, 403, "missing or invalid CSRF token (send X-CSRF-Token, or Authorization: Bearer <token>)")
        chosen = chosen_action(actions, request.path_params["action"])
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise ValidationError('the body must be JSON: {"ids": [...]} or {"filter": {...}}') from None
        if not isinstance(body, dict) or ("ids" in body) == ("filter" in body):
            raise ValidationError('the body must be JSON: {"ids": [...]} or {"filter": {...}}')
        store = common.store(request)
        if "ids" in body:
            ids = body["ids"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValidationError('"ids" must be a list of job ids (strings)')
            done, message = await run_in_threadpool(chosen.on_ids, store, ids)
            return common.api({"ok": True, "message": message, "count": len(done), "ids": done})
        given = json_filter(body["filter"])
        everything = body.get("all", False)
        if not isinstance(everything, bool):
            raise ValidationError('"all" must be true or false')
        if not everything and _empty(given, fixed):
            # The HTML form asks first (the confirm page); a script's empty filter is
            # more likely a bug than a wish to retry or delete the whole history.
            raise ValidationError(f'an empty filter matches every job: add "all": true to {chosen.name} them all')
        f = within(given, fixed)
        count, message = await run_in_threadpool(chosen.on_filter, store, f)
        return common.api({"ok": True, "message": message, "count": count})

    endpoint.queuectl_action = True  # type: ignore[attr-defined]
    return endpoint


routes = [
    Route("/jobs", jobs_page, methods=["GET"]),
    Route("/jobs/bulk", common.action(bulk_change(JOB_ACTIONS)), methods=["POST"]),
    Route("/jobs/{job_id}", job_page, methods=["GET"]),
    Route("/api/jobs", api_jobs, methods=["GET"]),
    Route("/api/jobs/{action}", api_action(JOB_ACTIONS), methods=["POST"]),
    Route("/api/jobs/{job_id}", api_job, methods=["GET"]),
]
