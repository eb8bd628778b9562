"""Cron expressions and time zones: validating them and finding the next tick.

The only user of cronsim (see docs/design.md, "Recurring schedules", for why that
library). Five fields (minute hour day-of-month month day-of-week) or one of the
@ aliases; ticks are computed in the schedule's zone and returned in UTC. DST
changes follow cronsim, which follows Debian's cron: a job at a fixed time in an
hour skipped by spring-forward runs when the clocks have jumped (02:30 runs at
03:00), a fixed time in the hour repeated at fall-back runs once; expressions
firing every hour or more often simply run at each wall-clock time that exists.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from queuectl.errors import ValidationError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Missed ticks are counted one by one (cronsim takes ~10 us a tick); past this many
# in one gap the count stops (a gap of a week of a per-minute schedule is 10,080).
COUNT_CAP = 100_000


def expand(expr: str) -> str:
    """The five fields of `expr` (an alias replaced by its fields)."""
    text = " ".join(expr.split())
    return ALIASES.get(text.lower(), text)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (Europe/Berlin, UTC); ValidationError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        if name and not available_timezones():
            raise ValidationError(
                f"unknown time zone {name!r}: this machine has no time zone database "
                "(install the tzdata package: the OS's, or `pip install tzdata`)"
            ) from None
        raise ValidationError(f"unknown time zone {name!r} (an IANA name such as UTC, Europe/Berlin, America/New_York)") from None


def check(expr: str, tz: str, now: datetime) -> tuple[str, datetime]:
    """Validate a schedule's expression and zone: (the expression as stored, its
    first tick after `now`). ValidationError naming what is wrong."""
    text = " ".join(expr.split())
    if text.startswith("@") and text.lower() not in ALIASES:
        raise ValidationError(f"invalid cron expression {expr!r}: unknown alias (valid: {', '.join(ALIASES)})")
    if not text.startswith("@") and len(text.split()) != 5:
        raise ValidationError(f"invalid cron expression {expr!r}: it needs 5 fields (minute hour day-of-month month day-of-week) or an @ alias")
    zone(tz)
    try:
        first = next_tick(text, tz, now)
    except (CronSimError, StopIteration, ValueError) as err:
        reason = str(err) or "it never fires"
        raise ValidationError(f"invalid cron expression {expr!r}: {reason}") from None
    return (text.lower() if text.startswith("@") else text), first


def next_tick(expr: str, tz: str, after: datetime) -> datetime:
    """The first tick of `expr` in zone `tz` strictly after `after` (aware), in UTC."""
    local = after.astimezone(zone(tz))
    ticks = CronSim(expand(expr), local)
    while True:
        # Strictly later in absolute time: at fall-back a wall-clock time comes twice,
        # and a start inside the repeated hour must not return the tick already passed.
        tick = next(ticks).astimezone(UTC)
        if tick > after:
            return tick


def ticks_between(expr: str, tz: str, start: datetime, end: datetime) -> int:
    """How many ticks fall in (start, end], counted up to COUNT_CAP."""
    local = start.astimezone(zone(tz))
    ticks = CronSim(expand(expr), local)
    count = 0
    while count < COUNT_CAP:
        tick = next(ticks).astimezone(UTC)
        if tick > end:
            break
        if tick > start:
            count += 1
    return count
