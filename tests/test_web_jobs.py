"""The dashboard's job browser, job page and DLQ over HTTP (queuectl/web/jobs.py,
dlq.py), on SQLite and PostgreSQL: every filter, keyset page links, each action on
one job, a selection and a filter's matches, the CLI's refusals of wrong states,
escaping, read-only mode and CSRF."""

import re
import warnings
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from queuectl.cli.parser import STATES
from queuectl.states import STATE_NAMES
from queuectl.store import Store
from queuectl.store.models import JOBS
from queuectl.web import security
from tests.support import T0, enqueue, finish, kill, seconds

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's TestClient warns about httpx
    from starlette.testclient import TestClient

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = "\"'><img src=x onerror=alert(1)>"
ESCAPE = "\x1b[31m"


def make_client(db, **options) -> TestClient:
    from queuectl.web.app import create_app

    return TestClient(create_app(db.url, **options), base_url="http://127.0.0.1")


@pytest.fixture
def client(db):
    with make_client(db) as client:
        yield client


def csrf(client) -> str:
    return security.csrf_token(client.app.state.secret)


def post(client, path, **fields):
    data = dict(fields, csrf=csrf(client))
    return client.post(path, data=data)


def flash(response) -> str:
    found = re.search(r'<div class="flash (ok|error)" role="status">(.*?)</div>', response.text, re.S)
    assert found, response.text[:2000]
    return found.group(2)


def ids_on(response) -> list[str]:
    return re.findall(r'name="id" value="([^"]*)"', response.text)


@pytest.fixture
def jobs(db):
    """1, 2 completed; 3 dead; 4 pending in queue emails; 5 pending, its command full of markup."""
    ids = [enqueue(db, f"echo {n}", now=T0 + seconds(n), queue="emails" if n == 4 else "default") for n in range(1, 5)]
    ids.append(enqueue(db, f"echo {SCRIPT} {ATTRIBUTE} {ESCAPE}red", now=T0 + seconds(5)))
    finish(db, ids[0], output=f"out {SCRIPT}\n{ESCAPE}red\n")
    finish(db, ids[1])
    kill(db, ids[2], error=f"exit code 3 {SCRIPT}")
    return ids


def test_filters(client, jobs):
    assert ids_on(client.get("/jobs")) == ["5", "4", "3", "2", "1"]
    assert ids_on(client.get("/jobs?state=completed")) == ["2", "1"]
    assert ids_on(client.get("/jobs?state=completed&state=dead")) == ["3", "2", "1"]
    assert ids_on(client.get("/jobs?state=dead,pending")) == ["5", "4", "3"]
    assert ids_on(client.get("/jobs?queue=emails")) == ["4"]
    assert ids_on(client.get("/jobs?text=ECHO 2")) == ["2"]
    assert ids_on(client.get("/jobs?text=echo 3")) == ["3"]
    assert ids_on(client.get("/jobs?from=2030-01-01T12:00:03&to=2030-01-01T12:00:05")) == ["4", "3"]
    assert ids_on(client.get("/jobs?schedule=nightly")) == []
    page = client.get("/jobs?state=completed&queue=default&text=echo")
    assert 'value="completed" checked' in page.text and 'name="text" value="echo"' in page.text
    for bad, words in (("state=nope", "unknown state &#39;nope&#39;"), ("queue=a b", "invalid queue name"), ("from=yesterday", "invalid timestamp"),
                       ("before=x", "invalid page cursor"),
                       ("before=99999999999999999999", "invalid page cursor"), ("text=a%00b", "NUL"), ("schedule=a/b", "invalid schedule name")):
        response = client.get(f"/jobs?{bad}")
        assert response.status_code == 400 and words in response.text and "Traceback" not in response.text


def test_keyset_links_keep_the_filter(db, client):
    for n in range(60):
        enqueue(db, f"echo {n}", now=T0 + seconds(n))
    first = client.get("/jobs?state=pending&queue=default")
    assert len(ids_on(first)) == 50 and "← Newest" not in first.text
    older = re.search(r'href="([^"]*)" rel="next"', first.text).group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(older).query) == {"state": ["pending"], "queue": ["default"], "before": [ids_on(first)[-1]]}
    enqueue(db, "echo late")  # a new job shifts nothing
    second = client.get(older)
    assert ids_on(second) == [str(n) for n in range(10, 0, -1)]
    assert 'rel="next"' not in second.text
    newest = re.search(r'href="([^"]*)" rel="first"', second.text).group(1).replace("&amp;", "&")
    assert ids_on(client.get(newest))[0] == "61"


def test_selected_actions_and_their_refusals(db, client, jobs):
    assert flash(post(client, "/jobs/bulk", action="retry", scope="selected", id=["1", "3"])) == "retried 2 job(s): 1 3"
    store = Store(db)
    assert store.job("1")["state"] == "pending" and store.job("3")["state"] == "pending"
    # All or nothing, with the CLI's words.
    refused = post(client, "/jobs/bulk", action="retry", scope="selected", id=["2", "4"])
    assert 'class="flash error"' in refused.text
    assert flash(refused) == "job &#39;4&#39; is pending: only finished jobs (completed, dead, cancelled) qualify; cancel it first"
    assert store.job("2")["state"] == "completed"
    assert flash(post(client, "/jobs/bulk", action="cancel", scope="selected", id=["4", "5"])) == "cancelled 2 job(s): 4 5"
    assert "only pending, failed, blocked or running jobs can be cancelled" in flash(post(client, "/jobs/bulk", action="cancel", scope="selected", id=["2"]))
    assert flash(post(client, "/jobs/bulk", action="delete", scope="selected", id=["2", "4"])) == "deleted 2 job(s): 2 4"
    assert "is pending" in flash(post(client, "/jobs/bulk", action="delete", scope="selected", id=["1"]))
    assert flash(post(client, "/jobs/bulk", action="delete", scope="selected")) == "select at least one job"
    assert "unknown action" in flash(post(client, "/jobs/bulk", action="explode", scope="selected", id=["1"]))
    assert "no job with id &#39;99&#39;" in flash(post(client, "/jobs/bulk", action="retry", scope="selected", id=["99"]))


def test_actions_on_every_match_confirm_then_act_in_batches(db, client, jobs, monkeypatch):
    from queuectl.web import jobs as web_jobs

    monkeypatch.setattr(web_jobs, "BATCH", 1)  # one transaction per job: the loop is exercised
    confirm = client.get("/jobs?confirm=retry&queue=default")
    assert "Up to 3 job(s) will be retried" in confirm.text  # 1, 2 completed and 3 dead; not 5 (pending)
    assert 'name="scope" value="matching"' in confirm.text and 'name="queue" value="default"' in confirm.text
    assert "this filter selects no job that can be cancelled" in client.get("/jobs?confirm=cancel&state=completed").text
    done = post(client, "/jobs/bulk", action="retry", scope="matching", queue="default")
    assert flash(done) == "retried 3 job(s) matching the filter"
    assert flash(post(client, "/jobs/bulk", action="cancel", scope="matching", state="pending", text="echo")) == "cancelled 5 job(s) matching the filter"
    assert flash(post(client, "/jobs/bulk", action="delete", scope="matching")) == "deleted 5 job(s) matching the filter"
    assert ids_on(client.get("/jobs")) == []
    monkeypatch.setattr(web_jobs, "COUNT_CAP", 2)
    for n in range(3):
        enqueue(db, f"echo {n}")
    assert "More than 2 jobs match" in client.get("/jobs?confirm=cancel").text


def test_job_page(db, client, jobs):
    after = enqueue(db, "echo after", after=("1",))
    page = client.get("/jobs/1")
    assert page.status_code == 200
    assert f'href="/jobs/{after}"' in page.text  # its dependent
    assert "exit_code" in page.text and 'class="grid attempts"' in page.text
    # The output: escaped, in a <pre>, the escape sequence written visibly.
    output = re.search(r'<pre class="output">(.*?)</pre>', page.text, re.S).group(1)
    assert output == "out &lt;script&gt;alert(1)&lt;/script&gt;\n\\x1b[31mred\n"
    assert 'action="/jobs/bulk"' in page.text and ">Retry<" in page.text and ">Cancel<" not in page.text
    blocked = client.get(f"/jobs/{after}")
    assert "/jobs/1" in blocked.text and ">Cancel<" in blocked.text and ">Retry<" not in blocked.text
    dead = client.get("/jobs/3")
    assert dead.text.count("<tr><td class=\"num\">") == 0 or "exit code 3 &lt;script&gt;" in dead.text
    assert "exit code 3 &lt;script&gt;" in dead.text
    # Ids that look like the pages' own words are jobs' pages all the same.
    for job_id in ("confirm", "bulk"):
        enqueue(db, "true", id=job_id)
        assert f"<h1>Job <span class=\"mono\">{job_id}</span>" in client.get(f"/jobs/{job_id}").text
    missing = client.get("/jobs/404")
    assert missing.status_code == 404 and "no job with id &#39;404&#39;" in missing.text


def test_dlq_page_and_its_actions(db, client, jobs):
    more = [enqueue(db, f"echo more {n}") for n in range(3)]
    for job_id in more:
        kill(db, job_id)
    page = client.get("/dlq")
    assert ids_on(page) == [*more[::-1], "3"]
    assert "exit code 3 &lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert ids_on(client.get("/dlq?state=dead")) == ids_on(page)  # the DLQ's state is fixed
    assert flash(post(client, "/dlq/bulk", one="retry:3")) == "retried 1 job(s): 3"
    assert flash(post(client, "/dlq/bulk", one=f"purge:{more[0]}")) == f"purged 1 job(s): {more[0]}"
    assert flash(post(client, "/dlq/bulk", one="purge:1")) == "no dead job with id &#39;1&#39; (it is completed)"
    assert flash(post(client, "/dlq/bulk", action="retry", scope="selected", id=[more[1]])) == f"retried 1 job(s): {more[1]}"
    assert "Up to 1 job(s) will be purged" in client.get("/dlq?confirm=purge").text
    assert flash(post(client, "/dlq/bulk", action="purge", scope="matching", text="more")) == "purged 1 job(s) matching the filter"
    assert "The dead-letter queue is empty" in client.get("/dlq").text
    assert Store(db).job("3")["state"] == "pending"


def test_api(db, client, jobs):
    listed = client.get("/api/jobs?state=completed&limit=1").json()
    assert [j["id"] for j in listed["jobs"]] == ["2"] and listed["next"] is not None
    rest = client.get(f"/api/jobs?state=completed&limit=1&before={listed['next']}").json()
    assert [j["id"] for j in rest["jobs"]] == ["1"] and rest["next"] is None
    assert [j["id"] for j in client.get("/api/dlq").json()["jobs"]] == ["3"]
    detail = client.get("/api/jobs/1").json()
    assert detail["job"]["state"] == "completed" and detail["attempts"][0]["exit_code"] == 0 and detail["output_tail"].startswith("out <script>")
    assert client.get("/api/jobs/nope").json() == {"error": "no job with id 'nope'"}
    assert client.get("/api/jobs?limit=0").status_code == 400
    headers = {"X-CSRF-Token": csrf(client)}
    answer = client.post("/api/jobs/retry", json={"ids": ["1"]}, headers=headers)
    assert answer.status_code == 200 and answer.json() == {"ok": True, "message": "retried 1 job(s): 1", "count": 1, "ids": ["1"]}
    refused = client.post("/api/jobs/retry", json={"ids": ["4"]}, headers=headers)
    assert refused.status_code == 404 and "is pending" in refused.json()["error"]
    answer = client.post("/api/jobs/cancel", json={"filter": {"state": ["pending"], "queue": "default"}}, headers=headers)
    assert answer.json()["count"] == 2  # 1 (retried) and 5
    assert client.post("/api/dlq/retry", json={"filter": {}, "all": True}, headers=headers).json()["message"] == "retried 1 job(s) matching the filter"
    assert client.post("/api/dlq/purge", json={"ids": ["3"]}, headers=headers).status_code == 404
    for body, words in (({"ids": "1"}, '"ids" must be a list'), ({}, "the body must be JSON"), ({"filter": {"colour": "red"}}, "unknown filter field"),
                        ({"filter": {"state": "nope"}}, "unknown state")):
        response = client.post("/api/jobs/delete", json=body, headers=headers)
        assert response.status_code == 400 and words in response.json()["error"], response.text
    assert client.post("/api/jobs/delete", content=b"{", headers=headers).status_code == 400
    assert client.post("/api/jobs/explode", json={"ids": ["1"]}, headers=headers).status_code == 400


def test_csrf_and_read_only(db, client, jobs):
    assert client.post("/jobs/bulk", data={"action": "retry", "scope": "selected", "id": "1"}).status_code == 403
    assert client.post("/api/jobs/retry", json={"ids": ["1"]}).status_code == 403
    assert client.post("/api/dlq/retry", json={"ids": ["3"]}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    foreign = client.post("/jobs/bulk", data={"action": "retry", "scope": "selected", "id": "1", "csrf": csrf(client)},
                          headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert Store(db).job("1")["state"] == "completed"
    with make_client(db, read_only=True) as ro:
        for path in ("/jobs", "/dlq", "/jobs/1"):
            page = ro.get(path)
            assert page.status_code == 200 and "/jobs/bulk" not in page.text and "/dlq/bulk" not in page.text and 'name="confirm"' not in page.text
        assert ro.get("/jobs?confirm=retry").status_code == 403
        for path, body in (("/jobs/bulk", {"action": "retry", "scope": "selected", "id": "1"}), ("/dlq/bulk", {"one": "purge:3"})):
            assert ro.post(path, data=dict(body, csrf=csrf(ro))).status_code == 403
        assert ro.post("/api/dlq/purge", json={"ids": ["3"]}, headers={"X-CSRF-Token": csrf(ro)}).status_code == 403
    assert Store(db).job("3")["state"] == "dead"


def test_markup_in_ids_commands_and_filters_is_escaped(db, client, jobs):
    # Ids like these cannot be enqueued (check_id): written straight into the table,
    # they must still never reach a page as markup.
    with db.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == "4").values(id=f"{SCRIPT}{ATTRIBUTE}{ESCAPE}"))
    for path in ("/jobs", "/jobs?state=pending", f"/jobs?text={ATTRIBUTE}", f"/jobs?queue={SCRIPT}", f"/jobs/{SCRIPT}", "/dlq", "/jobs/1", "/jobs/5"):
        page = client.get(path)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text and "\x1b" not in page.text, path
        assert "Traceback" not in page.text
    listing = client.get("/jobs").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&gt;&lt;img src=x onerror=alert(1)&gt;\\x1b[31m" in listing
    assert 'value="&#34;&#39;&gt;&lt;img src=x onerror=alert(1)&gt;"' in client.get("/jobs", params={"text": ATTRIBUTE}).text
    assert client.get("/api/jobs?state=pending").json()["jobs"][-1]["id"] == f"{SCRIPT}{ATTRIBUTE}{ESCAPE}"


def test_a_dlq_filter_naming_another_state_is_refused_and_changes_nothing(db, client, jobs):
    headers = {"X-CSRF-Token": csrf(client)}
    said = "the dead-letter queue holds dead jobs only"
    for path, body in (("/api/dlq/purge", {"filter": {"state": ["pending"], "queue": "default"}}),
                       ("/api/dlq/retry", {"filter": {"state": "completed"}})):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 400 and response.json()["error"].startswith(said), response.text
    # GET agrees with POST: the same filter lists nothing, it is refused the same way.
    for path in ("/api/dlq?state=pending", "/dlq?state=completed", "/dlq?confirm=purge&state=pending"):
        response = client.get(path)
        assert response.status_code == 400 and said in response.text, path
    refused = post(client, "/dlq/bulk", action="purge", scope="matching", state="pending", queue="default")
    assert flash(refused).startswith(said)
    assert Store(db).job("3")["state"] == "dead"
    # Naming the dead state is what the DLQ does anyway.
    assert [j["id"] for j in client.get("/api/dlq?state=dead").json()["jobs"]] == ["3"]
    assert client.post("/api/dlq/purge", json={"filter": {"state": "dead", "text": "echo 3"}}, headers=headers).json()["count"] == 1


def test_the_api_acts_on_an_empty_filter_only_with_all_true(db, client, jobs):
    headers = {"X-CSRF-Token": csrf(client)}
    store = Store(db)
    for path, body in (("/api/jobs/retry", {"filter": {}}), ("/api/jobs/delete", {"filter": {"state": []}}),
                       ("/api/jobs/cancel", {"filter": {"text": " "}}), ("/api/dlq/purge", {"filter": {}}),
                       ("/api/dlq/retry", {"filter": {"state": "dead"}}), ("/api/jobs/retry", {"filter": {}, "all": False})):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 400 and 'add "all": true' in response.json()["error"], (path, response.text)
    assert [store.job(i)["state"] for i in jobs] == ["completed", "completed", "dead", "pending", "pending"]
    assert client.post("/api/jobs/retry", json={"filter": {}, "all": "yes"}, headers=headers).status_code == 400
    answer = client.post("/api/dlq/purge", json={"filter": {}, "all": True}, headers=headers)
    assert answer.status_code == 200 and answer.json()["count"] == 1
    answer = client.post("/api/jobs/retry", json={"filter": {}, "all": True}, headers=headers)
    assert answer.status_code == 200 and answer.json()["count"] == 2


def row_of(response, job_id: str) -> str:
    found = re.search(rf'<tr>\s*<td>(?:(?!</tr>).)*?href="/jobs/{job_id}"(?:(?!</tr>).)*</tr>', response.text, re.S)
    assert found, response.text[:2000]
    return found.group(0)


def test_runs_and_failed_attempts_are_named_as_the_cli_names_them(db, client, jobs):
    # `queuectl list` says RUNS (runs of the command) and FAILED (failed attempts,
    # those counting against max_retries); job 1 ran once and completed.
    listing = client.get("/jobs")
    assert re.search(r'>Runs</th><th[^>]*>Failed</th>', listing.text) and ">Attempts<" not in listing.text
    assert re.search(r'<td class="num">1</td>\s*<td class="num">0</td>', row_of(listing, "1"))
    dead = Store(db).job("3")
    dlq = client.get("/dlq")
    assert re.search(r'>Runs</th><th[^>]*>Failed</th>', dlq.text) and ">Attempts<" not in dlq.text
    assert re.search(rf'<td class="num">{dead["runs"]}</td>\s*<td class="num">{dead["attempts"]}</td>', row_of(dlq, "3"))
    # The job's page labels them as `queuectl show` does.
    page = client.get("/jobs/1").text
    assert '<tr><th>runs</th><td class="wrap">1</td></tr>' in page
    assert '<tr><th>attempts</th><td class="wrap">0 (failed attempts that count against max_retries; a retry by hand resets them)</td></tr>' in page


def test_the_job_page_shows_a_timeout_as_the_cli_does_and_no_internal_field(db, client):
    timed = enqueue(db, "sleep 5", timeout=1.5)
    page = client.get(f"/jobs/{timed}").text
    assert '<tr><th>timeout</th><td class="wrap">1.5s</td></tr>' in page
    assert "has_dependents" not in page
    assert '<tr><th>timeout</th><td class="wrap">-</td></tr>' in client.get(f"/jobs/{enqueue(db, 'true')}").text


def test_an_unknown_state_is_answered_with_the_states_the_cli_names(client):
    # `processing` is the CLI's alias of running, not a state of its own.
    said = "unknown state &#39;nope&#39; (valid: pending, running (alias processing), failed, completed, dead, cancelled, blocked)"
    assert said in client.get("/jobs?state=nope").text
    assert ids_on(client.get("/jobs?state=processing")) == ids_on(client.get("/jobs?state=running"))
    assert STATE_NAMES == STATES  # as `--help` names them
