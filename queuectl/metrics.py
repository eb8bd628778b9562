"""`queuectl metrics` and the dashboard's /metrics: the queue in the Prometheus text format.

Everything is read from the database at each scrape, in one read transaction whose
number of statements does not depend on how many queues or workers there are
(Store.metrics); nothing is counted in process memory, so the counters survive
restarts of whatever serves them. A fresh CollectorRegistry per call: no global
state shared between scrapes or threads.

The counters come from job_tallies (store/tallies.py), which every transition writes
in its own transaction. The duration and wait summaries are windowed: their quantiles
describe the jobs completed in the last WINDOW_SECONDS (at most TIMING_LIMIT of them).
They have no _sum and _count: Prometheus takes those for cumulative counters, and a
window's would fall as it moves on, read as a counter reset by rate(); the count of
completed jobs is queuectl_jobs_finished_total{outcome="completed"}. Every queue the
scrape knows has its quantiles, NaN when none of its jobs completed in the window
(the convention of a summary without observations), so a series does not vanish
while a queue is quiet.
"""

import math
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from queuectl.states import FINISHED_OUTCOMES, LIVE_WORKER_STATES, JobState, Outcome, WorkerState
from queuectl.timeutil import utcnow

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The window of the duration and wait summaries, and how many jobs they read at most.
WINDOW_SECONDS = 900
TIMING_LIMIT = 5000
QUANTILES = (0.5, 0.9, 0.99)
# The states of queuectl_jobs: every state but completed, whose count per queue would
# mean reading the history (its total is queuectl_jobs_finished_total{outcome="completed"}).
JOB_STATES = tuple(s.value for s in JobState if s is not JobState.COMPLETED)
WORKER_STATES = tuple(s.value for s in WorkerState)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of sorted `values` (nearest rank), NaN for none."""
    if not values:
        return math.nan
    rank = min(len(values) - 1, max(0, int(round(q * len(values) + 0.5)) - 1))
    return values[rank]


def _summary(name: str, documentation: str, timings: dict[str, dict], key: str, queues: set[str]) -> Metric:
    """Quantiles only (see the module's docstring), for each of `queues` and every
    queue with timings."""
    metric = Metric(name, documentation, "summary")
    for queue in sorted(queues | set(timings)):
        values = timings.get(queue, {}).get(key, [])
        for q in QUANTILES:
            metric.add_sample(name, {"queue": queue, "quantile": str(q)}, quantile(values, q))
    return metric


class QueueCollector:
    """The metrics of one snapshot (Store.metrics), read when the registry collects."""

    def __init__(self, store, now: datetime):
        self.store = store
        self.now = now

    def collect(self):
        now = self.now
        data = self.store.metrics(now, WINDOW_SECONDS, TIMING_LIMIT)
        queues, blocked = data["queues"], data["blocked"]
        names = sorted(set(queues) | set(blocked))

        jobs = GaugeMetricFamily("queuectl_jobs", "Jobs per queue and state (completed ones are not counted: see "
                                 "queuectl_jobs_finished_total); pending includes those scheduled later.", labels=["queue", "state"])
        ready = GaugeMetricFamily("queuectl_jobs_ready", "Pending jobs due now, per queue.", labels=["queue"])
        oldest = GaugeMetricFamily("queuectl_queue_oldest_ready_age_seconds",
                                   "How long the queue's longest-waiting ready job has been due (0: none ready).", labels=["queue"])
        paused = GaugeMetricFamily("queuectl_queue_paused", "1 if the queue is paused (queue pause).", labels=["queue"])
        limit = GaugeMetricFamily("queuectl_queue_max_running", "The queue's limit of running jobs (queue limit), where set.",
                                  labels=["queue"])
        for name in names:
            figures = queues.get(name, {})
            per_state = {
                JobState.PENDING.value: figures.get("ready", 0) + figures.get("scheduled", 0),
                JobState.RUNNING.value: figures.get("running", 0),
                JobState.FAILED.value: figures.get("failed", 0),
                JobState.BLOCKED.value: blocked.get(name, 0),
                JobState.DEAD.value: figures.get("dead", 0),
                JobState.CANCELLED.value: figures.get("cancelled", 0),
            }
            for state in JOB_STATES:
                jobs.add_metric([name, state], per_state[state])
            ready.add_metric([name], figures.get("ready", 0))
            since = figures.get("oldest_ready")
            oldest.add_metric([name], max(0.0, (now - since).total_seconds()) if since is not None else 0.0)
            paused.add_metric([name], 1 if figures.get("paused") else 0)
            if figures.get("max_running") is not None:
                limit.add_metric([name], figures["max_running"])
        yield from (jobs, ready, oldest, paused, limit)

        counted = data["tallies"]
        enqueued = CounterMetricFamily("queuectl_jobs_enqueued", "Jobs enqueued (by hand or by schedules), per queue.", labels=["queue"])
        finished = CounterMetricFamily("queuectl_jobs_finished", "Jobs and attempts that ended, per queue and outcome: completed, "
                                       "failed (to be retried), timed_out (also counted in failed or dead), dead, cancelled.",
                                       labels=["queue", "outcome"])
        for name in sorted({queue for queue, _ in counted}):
            enqueued.add_metric([name], counted.get((name, Outcome.ENQUEUED.value), 0))
            for outcome in FINISHED_OUTCOMES:
                finished.add_metric([name, outcome], counted.get((name, outcome), 0))
        yield from (enqueued, finished)

        timings, known = data["timings"], set(names) | {queue for queue, _ in counted}
        yield _summary("queuectl_job_duration_seconds", f"Run time of the jobs completed in the last {WINDOW_SECONDS} s "
                       "(their last attempt), per queue: quantiles of that window (NaN: none completed).", timings, "durations", known)
        yield _summary("queuectl_job_wait_seconds", f"Time from ready (enqueued, or due if later) to started, of the jobs completed "
                       f"in the last {WINDOW_SECONDS} s, per queue: quantiles of that window (NaN: none completed).", timings, "waits", known)

        processes = GaugeMetricFamily("queuectl_workers", "Job slots (one per workers row) per host and state (stopped and dead ones for a day).",
                                      labels=["host", "state"])
        beats = GaugeMetricFamily("queuectl_worker_last_heartbeat_timestamp_seconds", "Unix time of each live worker's last heartbeat.",
                                  labels=["worker", "host"])
        per_host: dict[tuple[str, str], int] = {}
        for row in data["workers"]:
            per_host[(row.host, row.state)] = per_host.get((row.host, row.state), 0) + 1
            if row.state in LIVE_WORKER_STATES:
                beats.add_metric([row.id, row.host], row.last_heartbeat.timestamp())
        for host in sorted({host for host, _ in per_host}):
            for state in WORKER_STATES:
                processes.add_metric([host, state], per_host.get((host, state), 0))
        yield from (processes, beats)

        schedules = GaugeMetricFamily("queuectl_schedules", "Schedules per state: active or paused.", labels=["state"])
        for state, n in sorted(data["schedules"].items()):
            schedules.add_metric([state], n)
        yield schedules


def exposition(store, now: datetime | None = None) -> bytes:
    """The metrics in the Prometheus text format (serve it as CONTENT_TYPE)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(store, now or utcnow()))
    return generate_latest(registry)
