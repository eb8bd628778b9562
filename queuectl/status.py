"""`queuectl status`: job counts, the next scheduled job, the queues and the workers."""

import time

from queuectl.states import LIVE_WORKER_STATES
from queuectl.timeutil import iso, utcnow

# Stopped or dead workers stay visible this long, then drop out of the list.
RECENT_SECONDS = 60


def report(store, now=None, hostname: str | None = None, finished: int = 0) -> dict:
    """The status as a JSON object; with `finished`, also that many of the jobs that
    ended last, newest first (under "finished")."""
    from queuectl.worker.identity import default_hostname

    clock_given = now is not None
    now = now or utcnow()
    hostname = hostname or default_hostname()
    counts, nxt, rows, per_queue, ended = store.status(now, finished)
    ready = counts.pop("ready")
    if not clock_given:
        # Ages are measured from after the read: every heartbeat it saw was committed
        # before this moment, so none looks younger than zero.
        now = utcnow()
    workers = []
    for row in rows:
        live = row.state in LIVE_WORKER_STATES
        if not live and (row.stopped_at is None or (now - row.stopped_at).total_seconds() > RECENT_SECONDS):
            continue
        entry = {
            "id": row.id,
            "host": row.host,
            "pid": row.pid,
            "supervisor_pid": row.supervisor_pid,
            "state": row.state,
            "job_id": row.job_id,
            "started_at": iso(row.started_at),
            "last_heartbeat": iso(row.last_heartbeat),
            "heartbeat_age": round((now - row.last_heartbeat).total_seconds(), 3),
            "processed": row.processed,
            "failed": row.failed,
            "queues": row.queues.split(",") if row.queues else None,
        }
        if live:
            entry.update(_local_process_stats(row, hostname))
        workers.append(entry)
    queues = queue_entries(per_queue, now)
    result = {
        "jobs": counts,
        "pending": {"ready": ready, "scheduled": counts["pending"] - ready},
        "next_scheduled": {"id": nxt.id, "run_at": iso(nxt.run_at)} if nxt else None,
        "queues": queues,
        "unserved": unserved(queues, workers),
        "workers": workers,
    }
    if finished:
        result["finished"] = [
            {
                "id": row.id,
                "state": row.state,
                "finished_at": iso(row.finished_at),
                "age": round(max(0.0, (now - row.finished_at).total_seconds()), 3),
                "exit_code": row.exit_code,
                "command": row.command,
            }
            for row in ended
        ]
    return result


def queue_entries(per_queue: dict[str, dict], now) -> list[dict]:
    """The store's figures per queue as JSON objects; the oldest ready job's wait in seconds."""
    entries = []
    for name, figures in per_queue.items():
        oldest = figures["oldest_ready"]
        entries.append({
            "queue": name,
            **{key: figures[key] for key in ("ready", "scheduled", "running", "failed", "dead", "cancelled")},
            "oldest_ready_at": iso(oldest),
            "oldest_ready_age": None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 3),
            "paused": figures["paused"],
            "max_running": figures["max_running"],
        })
    return entries


def unserved(queues: list[dict], workers: list[dict]) -> list[dict]:
    """Queues with ready jobs that no live worker takes (a worker without --queue takes
    all); a paused queue is not unserved: it waits for `queue resume`."""
    live = [w for w in workers if w["state"] in LIVE_WORKER_STATES]
    if any(w["queues"] is None for w in live):
        return []
    served = {q for w in live for q in w["queues"]}
    return [{"queue": q["queue"], "ready": q["ready"]} for q in queues if q["ready"] and not q["paused"] and q["queue"] not in served]


def _local_process_stats(row, hostname: str) -> dict:
    """CPU and RSS of a worker on this machine (psutil), when its pid is really it."""
    import psutil

    from queuectl.worker.identity import local_process

    proc = local_process(row.pid, row.pid_started) if row.host == hostname else None
    if proc is None:
        return {}
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            age = max(1e-3, time.time() - proc.create_time())
            # Average over the process's life: a one-shot command has no earlier sample.
            return {"cpu_percent": 100.0 * (times.user + times.system) / age, "rss_bytes": proc.memory_info().rss}
    except psutil.Error:  # the process exited while we looked
        return {}
