"""The text of `queuectl status` and `queue list`, as lines: printed once, or redrawn
every interval by `status --watch` (cli/watch.py)."""

from queuectl.cli import render
from queuectl.cli.render import escape
from queuectl.timeutil import short_age

LABELS = (("Pending", "pending"), ("Running", "running"), ("Failed", "failed"), ("Completed", "completed"),
          ("Dead (DLQ)", "dead"), ("Cancelled", "cancelled"), ("Blocked", "blocked"))


def lines(report: dict, *, colour: bool = False, width: int | None = None) -> list[str]:
    """The status report (status.report) as text. width: the terminal's, which the
    commands of the last finished jobs are cut to (the other tables are not cut)."""
    counts = report["jobs"]
    out = ["=== Queue Status ==="]
    for label, key in LABELS:
        out.append(f"{label}: {counts[key]}")
        if key == "pending":
            out.append(f"  ready now: {report['pending']['ready']}")
            out.append(f"  scheduled later: {report['pending']['scheduled']}")
    nxt = report["next_scheduled"]
    out.append(f"Next Scheduled Job: {escape(nxt['id'])} at {nxt['run_at']}" if nxt else "Next Scheduled Job: none")
    out += ["", "=== Queues ==="]
    out += queue_lines(report["queues"])
    for entry in report["unserved"]:
        jobs = "1 ready job" if entry["ready"] == 1 else f"{entry['ready']} ready jobs"
        out.append(f"queue '{escape(entry['queue'])}': {jobs} and no live worker takes it")
    out += ["", "=== Workers ==="]
    out += _worker_lines(report["workers"])
    if "finished" in report:
        out += ["", "=== Last Finished ==="]
        out += _finished_lines(report["finished"], colour, width)
    return out


def queue_lines(entries: list[dict]) -> list[str]:
    if not entries:
        return ["no pending, running, failed, dead or cancelled jobs"]
    return render.table(
        [[e["queue"], e["ready"], e["scheduled"], e["running"], e["failed"], e["dead"], e["cancelled"], short_age(e["oldest_ready_age"]),
          controls(e)]
         for e in entries],
        ["QUEUE", "READY", "SCHEDULED", "RUNNING", "FAILED", "DEAD", "CANCELLED", "OLDEST_READY", "CONTROLS"],
    )


def controls(entry: dict) -> str:
    """A queue's controls (`queue pause`, `queue limit`): PAUSED, limit=N, both, or -."""
    shown = (["PAUSED"] if entry.get("paused") else []) + ([f"limit={entry['max_running']}"] if entry.get("max_running") else [])
    return ",".join(shown) or "-"


def _worker_lines(workers: list[dict]) -> list[str]:
    if not workers:
        return ["no workers running"]
    return render.table(
        [
            [
                w["id"], w["host"], w["pid"], w["state"], w["job_id"] or "-", f"{w['heartbeat_age']:.1f}s",
                _pct(w.get("cpu_percent")), _mb(w.get("rss_bytes")), w["processed"], w["failed"],
                ",".join(w["queues"]) if w["queues"] else "all",
            ]
            for w in workers
        ],
        ["WORKER", "HOST", "PID", "STATE", "JOB", "HEARTBEAT", "CPU", "RSS", "RAN", "FAILED", "QUEUES"],
    )


def _finished_lines(jobs: list[dict], colour: bool, width: int | None) -> list[str]:
    if not jobs:
        return ["no finished jobs"]
    return render.table(
        [
            [j["id"], j["state"], j["finished_at"], short_age(j["age"]) + " ago", "-" if j["exit_code"] is None else j["exit_code"],
             render.shorten(j["command"], 200)]
            for j in jobs
        ],
        ["ID", "STATE", "FINISHED", "AGE", "EXIT", "COMMAND"],
        colour=colour,
        fit=5,
        width=width,
    )


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _mb(value) -> str:
    return "-" if value is None else f"{value / 1048576:.1f}M"
