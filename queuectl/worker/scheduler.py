"""Firing recurring schedules: every running supervisor runs one Scheduler.

Each pass reads the due schedules (one indexed query, store/schedules.due) and fires
each one's tick in a transaction of its own (store/schedules.fire), which moves
next_run on only if no other supervisor did first: every tick is enqueued once,
whatever the number of supervisors and hosts.

Catch-up: a tick whose time has passed by more than GRACE, or after which a later
tick has passed too, was missed (no supervisor ran then). --catch-up one enqueues a
single run for all of them; --catch-up none enqueues nothing and waits for the next
tick. Either way next_run moves to the first tick after now, and the ticks not run
are counted (`missed`).
"""

import logging
from datetime import datetime, timedelta

from queuectl import cron
from queuectl.errors import DatabaseError, QueuectlError
from queuectl.timeutil import utcnow
from queuectl.worker import outage

log = logging.getLogger("queuectl.scheduler")
# A tick fired this late still counts as on time (a supervisor busy, a slow machine).
GRACE = timedelta(seconds=60)
# Due schedules fired per pass; more wait for the next pass (a second at most).
BATCH = 200


def plan(row, now: datetime) -> tuple[datetime, bool, int]:
    """What firing a due schedule's tick does at `now`: (the next tick after now,
    whether this tick's job is enqueued, how many ticks go unrun)."""
    next_run = cron.next_tick(row.cron, row.tz, now)
    later = cron.ticks_between(row.cron, row.tz, row.next_run, now)  # ticks passed after this one
    late = later > 0 or now - row.next_run > GRACE
    if row.catch_up == "none" and late:
        return next_run, False, later + 1
    return next_run, True, later


class Scheduler:
    """The due schedules of one database, fired from a supervisor's loop."""

    def __init__(self, store):
        self.store = store
        self.broken: set[str] = set()  # schedules whose failure was logged already

    def run_once(self, now: datetime | None = None) -> list[tuple[str, str, str | None]]:
        """Fire every due schedule: [(name, "fired"/"skipped"/"missed", job id)] of the
        ticks this supervisor fired. A database error ends the pass (the next retries)."""
        now = now or utcnow()
        done = []
        try:
            for row in self.store.due_schedules(now, BATCH):
                outcome = self._fire(row, now)
                if outcome is not None:
                    done.append((row.name, *outcome))
        except DatabaseError as err:
            outage.failed(log, "firing schedules failed", err)
        return done

    def run_due(self, longest: float, shortest: float) -> float:
        """One look at the schedules (a single indexed read while none is due), firing
        those due; seconds until the next look: until the first tick, within
        [shortest, longest]. Longest bounds how late a schedule added or changed by
        another process is seen; shortest keeps a tick that cannot be fired (a zone
        unknown here) from spinning the loop."""
        try:
            first = self.store.first_schedule_due()
        except DatabaseError as err:
            outage.failed(log, "looking at schedules failed", err)
            return longest
        if first is None:
            return longest
        now = utcnow()
        if first <= now:
            self.run_once(now)
            return shortest
        return min(longest, max(shortest, (first - now).total_seconds()))

    def _fire(self, row, now: datetime) -> tuple[str, str | None] | None:
        try:
            next_run, run, missed = plan(row, now)
        except QueuectlError as err:
            # Its zone unknown on this host (no tzdata here): another host may fire it.
            if row.name not in self.broken:
                log.error("schedule %s cannot be fired on this host: %s", row.name, err)
                self.broken.add(row.name)
            return None
        try:
            outcome = self.store.fire_schedule(row.name, tick=row.next_run, next_run=next_run, run=run, missed=missed, now=now)
        except DatabaseError:
            raise  # the database is unusable: the pass ends, the next one retries
        except Exception:  # a row edited by hand, a bug: this schedule only, never the supervisor
            if row.name not in self.broken:
                log.exception("schedule %s could not be fired", row.name)
                self.broken.add(row.name)
            return None
        if outcome is None:
            return None  # another supervisor fired it first
        what, job_id = outcome
        if what == "fired":
            log.info("schedule %s: tick %s enqueued job %s%s", row.name, row.next_run.isoformat(), job_id,
                     f" ({missed} missed tick(s) not run)" if missed else "")
        elif what == "skipped":
            log.info("schedule %s: tick %s skipped, job %s still active", row.name, row.next_run.isoformat(), job_id)
        else:
            log.info("schedule %s: %d missed tick(s) not run (--catch-up none)", row.name, missed)
        return outcome
