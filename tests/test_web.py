"""`queuectl web` over HTTP (Starlette's TestClient, in-process, on both backends):
every page on an empty and a populated database, every action (and its refusals:
no CSRF token, GET, read-only), the auth rules, escaping of hostile text, no
password in any answer; the throughput chart as a pure function; and the real
`queuectl web` process."""

import os
import re
import signal
import socket
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from starlette.routing import Route

from conftest import REPO, env_for
from queuectl import jobspec
from queuectl.states import Role, WorkerState
from queuectl.store import Store, resolve_url
from queuectl.web import chart, security
from queuectl.web.app import create_app
from support import enqueue, fail_once, finish

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2 (not packaged yet): httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = "\"'><img src=x onerror=alert(1)>"
ESC = "\x1b[31m"
EVIL_COMMAND = f"printf '{ESC}red{SCRIPT}{ATTRIBUTE}'"
EVIL_QUEUE = f"{SCRIPT}{ESC}"
EVIL_ID = f"{ATTRIBUTE}{ESC}"
PAGES = ("/", "/overview/live", "/workers", "/queues", "/schedules")
APIS = ("/api/overview", "/api/workers", "/api/queues", "/api/schedules")
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@pytest.fixture
def url(db_url):
    return resolve_url(db_url)


@pytest.fixture
def store(url):
    opened = Store.open(url)
    yield opened
    opened.close()


def client(url: str, **options) -> TestClient:
    """A TestClient over a new app (use as a context manager: it runs the lifespan)."""
    follow = options.pop("follow_redirects", True)
    return TestClient(create_app(url, **options), base_url="http://127.0.0.1:8080", follow_redirects=follow)


def csrf_of(http: TestClient, page: str = "/queues") -> str:
    return CSRF.search(http.get(page).text).group(1)


def populate(store: Store) -> None:
    """Jobs in most states, a busy, a stale and a dead worker, a schedule, and hostile
    text in a command, a job id, a queue name, a host, an output and an error."""
    store.enqueue([jobspec.build(EVIL_COMMAND, queue="default"), jobspec.build("echo later", queue="later", delay=3600),
                   jobspec.build("exit 3", queue="emails", max_retries=0), jobspec.build("echo ok", queue="reports")])
    cfg = store.register(id="w-busy", role=Role.WORKER, host=f"host{SCRIPT}", pid_started=1.0, queues=("default", "emails"))
    dead = store.claim("w-busy", ("emails",))
    store.record(dead.id, "w-busy", stopped=False, error=f"boom {SCRIPT}{ESC}", exit_code=3, output=f"{ESC}out{SCRIPT}", cfg=cfg,
                 claim_next=False, queues=())
    running = store.claim("w-busy", ("default",))
    store.register(id="w-stale", role=Role.WORKER, host="elsewhere", pid_started=1.0)
    store.register(id="w-dead", role=Role.WORKER, host="gone", pid_started=1.0)
    store.end("w-dead", WorkerState.DEAD, cfg=cfg)
    store.add_schedule("nightly", cron="0 3 * * *", tz="UTC", catch_up="one", overlap="skip", spec=jobspec.build(EVIL_COMMAND),
                       next_run=datetime.now(UTC) + timedelta(hours=5))
    store.pause_queue("reports", True)
    # Ids and queue names are validated on the way in; a hand-edited (or older) row is not.
    with store.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET id = :new, queue = :queue, output = :out WHERE id = :old"),
                     {"new": EVIL_ID, "queue": EVIL_QUEUE, "out": f"{ESC}{SCRIPT}", "old": running.id})
        conn.execute(sa.text("UPDATE attempts SET job_id = :new WHERE job_id = :old"), {"new": EVIL_ID, "old": running.id})
        conn.execute(sa.text("UPDATE workers SET job_id = :new WHERE id = 'w-busy'"), {"new": EVIL_ID})
        conn.execute(sa.text("UPDATE workers SET last_heartbeat = :old WHERE id = 'w-stale'"),
                     {"old": datetime.now(UTC) - timedelta(hours=1)})


def assert_escaped(text: str) -> None:
    """No hostile markup or raw control character made it through as such."""
    assert SCRIPT not in text and "<img" not in text and "onerror=alert(1)>" not in text
    assert "\x1b" not in text


# --- pages ------------------------------------------------------------------------------


def test_every_page_and_api_answers_on_an_empty_database(url):
    with client(url) as http:
        for path in PAGES + APIS:
            response = http.get(path)
            assert response.status_code == 200, path
        assert "no workers" in http.get("/workers").text
        assert "no schedules" in http.get("/schedules").text
        assert http.get("/api/overview").json()["jobs"]["pending"] == 0
        assert http.get("/metrics").status_code in (200, 503)


def test_every_page_escapes_hostile_text_on_a_populated_database(url, store):
    populate(store)
    with client(url) as http:
        for path in PAGES:
            response = http.get(path)
            assert response.status_code == 200, path
            assert_escaped(response.text)
        overview = http.get("/").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31m" in overview  # the queue name, ESC shown visibly
        workers = http.get("/workers").text
        assert "host&lt;script&gt;" in workers
        assert "&#34;&#39;&gt;&lt;img src=x onerror=alert(1)&gt;\\x1b[31m" in workers  # the current job's id
        assert 'href="/jobs/%22%27%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%1B%5B31m"' in workers
        schedules = http.get("/schedules").text
        assert "printf &#39;\\x1b[31mred&lt;script&gt;" in schedules
        for path in APIS:
            response = http.get(path)
            assert response.status_code == 200 and response.headers["content-type"] == "application/json", path
        assert {q["queue"] for q in http.get("/api/queues").json()} >= {EVIL_QUEUE, "emails", "later", "reports"}


def test_the_overview_counts_states_queues_and_workers(url, store):
    populate(store)
    with client(url) as http:
        data = http.get("/api/overview").json()
    assert data["jobs"]["dead"] == 1 and data["jobs"]["running"] == 1 and data["pending"] == {"ready": 1, "scheduled": 1}
    assert data["workers_alive"] == 1 and data["workers_stale"] == 1
    assert data["oldest_ready_age"] is not None
    assert {q["queue"]: q["paused"] for q in data["queues"]}["reports"] is True


def test_a_queue_no_live_worker_takes_is_one_line_on_the_overview(url, store):
    store.enqueue([jobspec.build("echo 1", queue="default"), jobspec.build("echo 2", queue="emails")])
    with client(url) as http:
        page = http.get("/overview/live").text
    banner = re.search(r'<p class="flash error">(.*?)</p>', page, re.S).group(1)
    assert banner == "no live worker takes queue <b>default</b> (1 ready), queue <b>emails</b> (1 ready)"


def test_the_workers_page_marks_stale_and_dead_workers(url, store):
    populate(store)
    with client(url) as http:
        workers = {w["id"]: w for w in http.get("/api/workers").json()["workers"]}
        page = http.get("/workers").text
    assert workers["w-stale"]["stale"] and not workers["w-busy"]["stale"]
    assert workers["w-dead"]["state"] == "dead" and not workers["w-dead"]["stale"]
    assert page.count('class="stale"') == 1 and page.count('class="dead"') == 1
    assert '<span class="badge s-stale">stale</span>' in page


# --- the throughput chart -----------------------------------------------------------------


def points(counts: list[tuple[int, int]]) -> list[dict]:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    return [{"minute": start + timedelta(minutes=i), "completed": c, "failed": f, "timed_out": 0, "dead": 0, "cancelled": 0, "enqueued": c + f}
            for i, (c, f) in enumerate(counts)]


def test_the_chart_draws_completed_and_failed_bars_with_axis_labels():
    svg = str(chart.throughput_svg(points([(0, 0)] * 58 + [(7, 2), (3, 0)])))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count(f'fill="{chart.COMPLETED_COLOUR}"') == 2 and svg.count(f'fill="{chart.FAILED_COLOUR}"') == 1
    assert "<title>12:58 UTC: 7 completed, 2 failed</title>" in svg
    assert ">12:00<" in svg and ">12:15<" in svg and ">12:59<" in svg  # the time axis
    assert ">10<" in svg and ">5<" in svg and ">0<" in svg  # the count axis, up to a round 10
    # The 7 completed sit under the 2 failed: a 9-high stack in a 10-high plot.
    plot = chart.HEIGHT - chart.TOP - chart.BOTTOM
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights == pytest.approx([plot * 0.7, plot * 0.2, plot * 0.3], abs=0.1)


def test_the_chart_of_an_idle_hour_has_no_bars_and_the_failure_rate_is_unknown():
    idle = points([(0, 0)] * 60)
    assert "<rect" not in str(chart.throughput_svg(idle)) and ">1<" in str(chart.throughput_svg(idle))
    assert chart.failure_rate(idle) is None
    mixed = points([(6, 1)]) + [{**points([(0, 0)])[0], "timed_out": 1, "dead": 1, "cancelled": 1}]
    # timed_out is already among failed or dead; a cancelled job is not a run
    assert chart.failure_rate(mixed) == pytest.approx(2 / 8)
    assert [chart.nice_ceiling(n) for n in (0, 1, 3, 7, 11, 51, 200)] == [1, 1, 5, 10, 20, 100, 200]


def test_the_overview_draws_the_last_hour_the_store_tallied(url, store):
    # Four jobs complete and one dies (a timed-out attempt: tallied as timed_out and
    # dead, drawn and counted once) in the current minute: the chart, the hour's
    # figures and the failure rate come from the tallies, not from a scan.
    now = datetime.now(UTC)
    for n in range(5):
        job = enqueue(store.db, f"echo {n}", now=now, max_retries=0)
        if n < 4:
            finish(store.db, job, now=now)
        else:
            assert fail_once(store.db, job, now=now, error="timed out after 5s") == "dead"
    with client(url) as http:
        page = http.get("/").text
        data = http.get("/api/overview").json()
    assert "<svg" in page and "4 completed, 1 failed" in page and "20.0%" in page
    assert data["failure_rate"] == pytest.approx(0.2) and len(data["throughput"]) == 60
    assert sum(p["timed_out"] for p in data["throughput"]) == 1


# --- actions ------------------------------------------------------------------------------


def test_queue_pause_resume_and_limit(url, store):
    populate(store)
    with client(url) as http:
        token = csrf_of(http)
        page = http.post("/queues/pause", data={"csrf": token, "name": "emails", "next": "/queues"})
        assert page.status_code == 200 and str(page.url).endswith("/queues")
        assert "queue emails is now paused" in page.text
        assert store.queues(datetime.now(UTC))["emails"]["paused"] is True
        assert "queue emails resumed" in http.post("/queues/resume", data={"csrf": token, "name": "emails"}).text
        assert "at most 3 running jobs" in http.post("/queues/limit", data={"csrf": token, "name": "emails", "limit": "3"}).text
        assert store.queues(datetime.now(UTC))["emails"]["max_running"] == 3
        assert "queue emails: no limit" in http.post("/queues/limit", data={"csrf": token, "name": "emails", "limit": "none"}).text
        # The flash is shown once.
        assert "no limit" not in http.get("/queues").text
        bad = http.post("/queues/limit", data={"csrf": token, "name": "emails", "limit": "-2"})
        assert bad.status_code == 200 and 'class="flash error"' in bad.text and "invalid limit &#39;-2&#39;" in bad.text
        unknown = http.post("/queues/pause", data={"csrf": token, "name": "nosuch"})
        assert "no queue named &#39;nosuch&#39;" in unknown.text
        hostile = http.post("/queues/pause", data={"csrf": token, "name": EVIL_QUEUE})
        assert "invalid queue name" in hostile.text
        assert_escaped(hostile.text)
        # The API's twins answer one line of JSON.
        assert http.post("/api/queues/pause", data={"csrf": token, "name": "emails"}).json() == {
            "ok": True, "message": "queue emails is now paused: no worker claims its jobs (running ones finish)"}
        refused = http.post("/api/queues/limit", data={"csrf": token, "name": "emails", "limit": "lots"})
        assert refused.status_code == 400 and refused.json() == {"error": "invalid limit 'lots' (a whole number from 1 to 1000000, or none)"}
        assert http.post("/api/queues/resume", data={"csrf": token, "name": "nosuch"}).status_code == 404
        assert http.post("/api/queues/limit", data={"csrf": token, "name": "emails"}).json()["error"].startswith("the limit")


def test_schedule_pause_resume_and_run_now(url, store):
    populate(store)
    with client(url) as http:
        token = csrf_of(http, "/schedules")
        assert "paused schedule nightly" in http.post("/schedules/pause", data={"csrf": token, "name": "nightly"}).text
        assert store.schedule("nightly")["paused"] is True
        assert "resumed schedule nightly, next run" in http.post("/schedules/resume", data={"csrf": token, "name": "nightly"}).text
        page = http.post("/schedules/run", data={"csrf": token, "name": "nightly", "next": "/schedules"})
        job_id = re.search(r"enqueued job (\w+) for schedule nightly", page.text).group(1)
        assert store.job(job_id)["schedule"] == "nightly"
        assert_escaped(http.get("/schedules").text)
        unknown = http.post("/schedules/pause", data={"csrf": token, "name": "nosuch"})
        assert "no schedule named &#39;nosuch&#39;" in unknown.text
        assert http.post("/api/schedules/run", data={"csrf": token, "name": "nosuch"}).json() == {"error": "no schedule named 'nosuch'"}
        assert http.post("/api/schedules/run", data={"csrf": token, "name": "nosuch"}).status_code == 404


def test_every_api_action_takes_a_json_body(url, store):
    populate(store)
    with client(url) as http:
        headers = {"X-CSRF-Token": csrf_of(http)}
        for path, body, said in [("/api/queues/pause", {"name": "emails"}, "queue emails is now paused"),
                                 ("/api/queues/limit", {"name": "emails", "limit": 3}, "at most 3 running jobs"),
                                 ("/api/queues/resume", {"name": "emails"}, "queue emails resumed"),
                                 ("/api/schedules/pause", {"name": "nightly"}, "paused schedule nightly"),
                                 ("/api/schedules/resume", {"name": "nightly"}, "resumed schedule nightly"),
                                 ("/api/schedules/run", {"name": "nightly"}, "enqueued job")]:
            response = http.post(path, json=body, headers=headers)
            assert response.status_code == 200 and said in response.json()["message"], (path, response.text)
        assert store.queues(datetime.now(UTC))["emails"]["max_running"] == 3
        # The CSRF token may be a field of the object too; a bad body is one line, 400.
        assert http.post("/api/queues/pause", json={"name": "emails", "csrf": headers["X-CSRF-Token"]}).json()["ok"]
        for bad in (b'{"name": "emails"', b'["emails"]', b'{"name": {"x": 1}}'):
            refused = http.post("/api/queues/pause", content=bad, headers={**headers, "Content-Type": "application/json"})
            assert refused.status_code == 400 and list(refused.json()) == ["error"] and "JSON object" in refused.json()["error"], bad
        assert http.post("/api/queues/pause", json={}, headers=headers).json() == {"error": "the queue's name is missing"}


ACTIONS = [("/queues/pause", {"name": "emails"}), ("/queues/resume", {"name": "emails"}), ("/queues/limit", {"name": "emails", "limit": "2"}),
           ("/schedules/pause", {"name": "nightly"}), ("/schedules/resume", {"name": "nightly"}), ("/schedules/run", {"name": "nightly"}),
           ("/api/queues/pause", {"name": "emails"}), ("/api/schedules/run", {"name": "nightly"})]


def test_every_action_is_refused_without_the_csrf_token_across_origins_and_by_get(url, store):
    populate(store)
    before = (store.queues(datetime.now(UTC)), store.schedules(), store.job_total())
    with client(url) as http:
        token = csrf_of(http)
        for path, fields in ACTIONS:
            assert http.post(path, data=fields).status_code == 403, path
            assert http.post(path, data={**fields, "csrf": "0" * 64}).status_code == 403, path
            assert http.post(path, data={**fields, "csrf": token}, headers={"Origin": "http://evil.example"}).status_code == 403, path
            assert http.post(path, data={**fields, "csrf": token}, headers={"Referer": "http://evil.example/x"}).status_code == 403, path
            assert http.post(path, data={**fields, "csrf": token}, headers={"Origin": "null"}).status_code == 403, path
            assert http.get(path, params={**fields, "csrf": token}).status_code == 405, path
        assert "missing or invalid CSRF token" in http.post("/queues/pause", data={"name": "emails"}).text
    assert (store.queues(datetime.now(UTC)), store.schedules(), store.job_total()) == before
    with client(url) as http:  # the same origin, or the token in a header, passes
        token = csrf_of(http)
        assert http.post("/api/queues/pause", data={"name": "emails"}, headers={"X-CSRF-Token": token, "Origin": "http://127.0.0.1:8080"}).json()["ok"]


def test_read_only_hides_every_action_and_refuses_every_post(url, store):
    populate(store)
    with client(url, read_only=True) as http:
        for path in PAGES:
            text = http.get(path).text
            assert 'method="post"' not in text and "<button" not in text, path
        assert "read-only" in http.get("/").text
        token = security.csrf_token(http.app.state.secret)
        for path, fields in ACTIONS:
            refused = http.post(path, data={**fields, "csrf": token})
            assert refused.status_code == 403, path
            if path.startswith("/api/"):
                assert refused.json() == {"error": "this dashboard is read-only (queuectl web --read-only)"}, path
            else:  # a form from a page: the error page, in the layout
                assert refused.headers["content-type"].startswith("text/html") and "this dashboard is read-only" in refused.text, path
                assert 'href="/queues"' in refused.text, path
    assert store.queues(datetime.now(UTC))["emails"]["paused"] is False
    assert store.schedule("nightly")["paused"] is False


def test_every_post_route_goes_through_the_csrf_check(url):
    with client(url) as http:
        posts = [r for r in http.app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    assert len(posts) >= 8
    assert [r.path for r in posts if not getattr(r.endpoint, "queuectl_action", False)] == []


def test_a_redirect_after_an_action_stays_on_this_site(url, store):
    populate(store)
    with client(url, follow_redirects=False) as http:
        token = csrf_of(http)
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
            response = http.post("/queues/pause", data={"csrf": token, "name": "emails", "next": target})
            assert response.status_code == 303 and response.headers["location"] == "/", target
        assert http.post("/queues/pause", data={"csrf": token, "name": "emails", "next": "/queues?x=1"}).headers["location"] == "/queues?x=1"


# --- authentication and headers ------------------------------------------------------------


def test_with_a_token_every_request_needs_it(url):
    with client(url, token="s3cret-token-0123456", follow_redirects=False) as http:
        for path in PAGES:
            response = http.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
        for path in APIS + ("/metrics",):
            response = http.get(path)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
            assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
            assert http.get(path, headers={"Authorization": "Bearer s3cret-token-0123456"}).status_code in (200, 503), path
        assert http.post("/queues/pause", data={"name": "x"}).headers["location"] == "/login"
        assert http.post("/api/queues/pause", data={"name": "x"}).status_code == 401
        for static in ("/static/style.css", "/static/dashboard.js"):  # public (README): they hold no data
            assert http.get(static).status_code == 200, static
        # A bearer request needs no CSRF token (a browser never adds that header itself).
        api = http.post("/api/queues/pause", data={"name": "nosuch"}, headers={"Authorization": "Bearer s3cret-token-0123456"})
        assert api.status_code == 404
        # The login form.
        form = http.get("/login?next=/workers")
        assert form.status_code == 200 and 'name="next" value="/workers"' in form.text
        assert "sqlite:" not in form.text and "postgresql" not in form.text and "log out" not in form.text  # nothing before logging in
        token = CSRF.search(form.text).group(1)
        assert http.post("/login", data={"token": "s3cret-token-0123456", "next": "/"}).status_code == 403  # CSRF
        wrong = http.post("/login", data={"csrf": token, "token": "nope", "next": "/"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text and security.SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        good = http.post("/login", data={"csrf": token, "token": "s3cret-token-0123456", "next": "/workers"})
        assert good.status_code == 303 and good.headers["location"] == "/workers"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "s3cret-token-0123456" not in cookie
        for path in PAGES + APIS:
            assert http.get(path).status_code == 200, path
        assert http.get("/").text.count('action="/logout"') == 1
        assert http.post("/logout", data={"csrf": token}).status_code == 303
        http.cookies.clear()
        assert http.get("/").status_code == 303
        assert http.get("/login?next=//evil.example").text.count('name="next" value="/"') == 1


def test_a_login_cookie_expires_and_logging_out_deletes_it(url):
    token = "s3cret-token-0123456789"
    with client(url, token=token, follow_redirects=False) as http:
        csrf = CSRF.search(http.get("/login").text).group(1)

        def logged_in() -> str:
            response = http.post("/login", data={"csrf": csrf, "token": token, "next": "/"})
            assert response.status_code == 303
            return response.headers["set-cookie"]

        first, second = logged_in(), logged_in()
        value = re.search(rf"{security.SESSION_COOKIE}=([^;]+)", first).group(1)
        assert value != re.search(rf"{security.SESSION_COOKIE}=([^;]+)", second).group(1)  # a nonce each time
        assert f"Max-Age={security.SESSION_SECONDS}" in first and "HttpOnly" in first and "SameSite=strict" in first
        expires, nonce, mac = value.split(".")
        assert int(expires) == pytest.approx(datetime.now(UTC).timestamp() + security.SESSION_SECONDS, abs=60)
        http.cookies.clear()

        def answer(cookie: str, path: str = "/api/overview"):
            http.cookies.clear()
            http.cookies.set(security.SESSION_COOKIE, cookie)
            response = http.get(path)
            return response.status_code if path.startswith("/api/") else response.headers.get("location")

        assert answer(value) == 200
        past = int(datetime.now(UTC).timestamp()) - 1
        beyond = int(expires) + 3600  # a cookie is never extended, even signed
        for refused in (security.session_value(token, past, nonce), security.session_value(token, beyond, nonce),
                        f"{int(expires) + 1}.{nonce}.{mac}", f"{expires}.x{nonce}.{mac}", f"{expires}.{nonce}.{mac[:-1]}{'1' if mac.endswith('0') else '0'}",
                        security.session_value("another-token-0123456"), "", "...", "12.ab"):
            assert answer(refused) == 401, refused
        assert not security.session_ok("٣٣.a.b", token)  # digits, but not ASCII ones
        assert answer(security.session_value(token, past), "/").startswith("/login")
        # Logging out deletes the cookie with the attributes it was set with.
        answer(value)
        out = http.post("/logout", data={"csrf": csrf})
        gone = out.headers["set-cookie"]
        assert out.status_code == 303 and "Max-Age=0" in gone and "HttpOnly" in gone and "SameSite=strict" in gone and "Path=/" in gone
    with client(url, token=token) as http:  # a restart keeps a valid cookie valid (stateless)
        http.cookies.set(security.SESSION_COOKIE, value)
        assert http.get("/api/overview").status_code == 200


def test_without_a_token_no_login_and_only_a_loopback_host_name(url):
    with client(url, follow_redirects=False) as http:
        assert http.get("/login").headers["location"] == "/"
        assert "log out" not in http.get("/").text
        for host in ("localhost:8080", "127.0.0.2", "[::1]:8080"):
            assert http.get("/", headers={"Host": host}).status_code == 200, host
        # DNS rebinding: a hostile name resolving to 127.0.0.1, its page same-origin with this server.
        for host in ("evil.example:8080", "10.0.0.1", ""):
            assert http.get("/api/overview", headers={"Host": host}).status_code == 421, host
    with client(url, token="t0ken-of-16-chars") as http:  # a token guards it instead (a cookie is never sent to another name)
        assert http.get("/api/overview", headers={"Host": "dashboard.example", "Authorization": "Bearer t0ken-of-16-chars"}).status_code == 200


def test_security_headers_on_every_answer(url):
    bearer = {"Authorization": "Bearer t0ken-of-16-chars"}
    with client(url, token="t0ken-of-16-chars", follow_redirects=False) as http:
        answers = [http.get("/login"), http.get("/"), http.get("/api/overview"), http.get("/static/dashboard.js"),
                   http.get("/nowhere", headers=bearer), http.get("/api/queues", headers=bearer)]
    for response in answers:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["referrer-policy"] == "same-origin"


def test_no_inline_script_and_an_unknown_page_is_a_404_page(url, store):
    populate(store)
    with client(url) as http:
        for path in PAGES:
            assert re.findall(r"<script(?![^>]*\bsrc=)", http.get(path).text) == [], path
        missing = http.get("/nowhere")
        assert missing.status_code == 404 and "no such page" in missing.text and "Traceback" not in missing.text
        assert http.get("/api/nowhere").json() == {"error": "no such page"}


def test_the_database_password_never_appears(pg_databases):
    secret = "sekrit"
    url = sa.engine.make_url(pg_databases.new()).set(password=secret).render_as_string(hide_password=False)
    opened = Store.open(url)
    try:
        populate(opened)
    finally:
        opened.close()
    with client(url) as http:
        token = csrf_of(http)
        answers = [http.get(path) for path in PAGES + APIS + ("/nowhere", "/metrics")]
        answers.append(http.post("/queues/limit", data={"csrf": token, "name": "emails", "limit": "x"}))
        answers.append(http.post("/api/schedules/run", data={"csrf": token, "name": "nosuch"}))
    assert "***" in answers[0].text  # the masked URL is shown
    for response in answers:
        assert secret not in response.text, response.url


# --- the statements of one refresh ---------------------------------------------------------


def test_one_overview_refresh_costs_a_few_statements(url, store):
    populate(store)
    with client(url) as http:
        statements: list[str] = []
        engine = http.app.state.store.db.engine
        listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
        sa.event.listen(engine, "before_cursor_execute", listener)
        try:
            assert http.get("/overview/live").status_code == 200
        finally:
            sa.event.remove(engine, "before_cursor_execute", listener)
    queries = [s for s in statements if not s.strip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    print(f"one overview refresh: {len(statements)} statements, {len(queries)} queries")
    # report() 8 (counts, next scheduled, workers, 5 per queue), the config 1,
    # Store.throughput 1: the same whatever the number of jobs, queues or workers.
    assert len(queries) == 10, statements


# --- the real command -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_real_command_serves_and_refuses_a_public_host_without_a_token(sqlite_url, tmp_path):
    import httpx

    env = env_for(sqlite_url)
    env.pop("QUEUECTL_WEB_TOKEN", None)
    refused = subprocess.run([sys.executable, "-m", "queuectl", "web", "--host", "0.0.0.0"], capture_output=True, text=True, env=env, timeout=30)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == ["queuectl: error: --host 0.0.0.0 is not a loopback address: set --token (or $QUEUECTL_WEB_TOKEN) "
                                           "so that every request needs it"]
    assert subprocess.run([sys.executable, "-m", "queuectl", "web", "--host", "::"], capture_output=True, env=env, timeout=30).returncode == 2
    short = subprocess.run([sys.executable, "-m", "queuectl", "web", "--host", "0.0.0.0", "--token", "abc"], capture_output=True, text=True,
                           env=env, timeout=30)
    assert (short.returncode, short.stdout) == (2, "")
    assert short.stderr.splitlines() == ["queuectl: error: the token (--token) has 3 characters: use at least 16, e.g. $(openssl rand -hex 16)"]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "queuectl", "web", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path)
    try:
        assert server.stdout.readline().startswith(f"queuectl web: http://127.0.0.1:{port}/ on sqlite:///")
        # Served once announced: a script may connect the moment it reads the URL
        # (a socket bound but not yet listening refuses connections).
        socket.create_connection(("127.0.0.1", port), timeout=30).close()
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "Overview" in page.text
        taken = subprocess.run([sys.executable, "-m", "queuectl", "web", "--port", str(port)], capture_output=True, text=True, env=env, timeout=30)
        assert (taken.returncode, taken.stdout) == (1, "")
        assert taken.stderr.splitlines() == [f"queuectl: error: cannot listen on http://127.0.0.1:{port}/: Address already in use"]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert "Traceback" not in server.stderr.read()


def test_without_the_web_extra_one_line_and_exit_1(sqlite_url, tmp_path):
    # A directory whose `starlette` cannot be imported, first on the path.
    (tmp_path / "starlette").mkdir()
    (tmp_path / "starlette" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'starlette'\", name='starlette')\n")
    env = env_for(sqlite_url)
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{REPO}"
    result = subprocess.run([sys.executable, "-m", "queuectl", "web"], capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "queuectl web needs the [web] extra: pip install 'queuectl[web]'\n")


def test_a_failure_is_one_line_never_a_traceback(url):
    from queuectl.errors import DatabaseError

    app = create_app(url)
    with TestClient(app, base_url="http://127.0.0.1:8080", raise_server_exceptions=False) as http:
        def unreachable(now):
            raise DatabaseError("database postgresql://u:***@db/q: connection refused")

        def broken(now):
            raise RuntimeError("boom\nSELECT secret FROM somewhere")

        app.state.store.queues = unreachable
        page, api = http.get("/queues"), http.get("/api/queues")
        assert page.status_code == 503 and "connection refused" in page.text and "Traceback" not in page.text
        assert api.status_code == 503 and api.json() == {"error": "database postgresql://u:***@db/q: connection refused"}
        app.state.store.queues = broken
        page, api = http.get("/queues"), http.get("/api/queues")
        assert page.status_code == 500 and "unexpected error: boom" in page.text and "SELECT" not in page.text
        assert api.json() == {"error": "unexpected error: boom"}
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
