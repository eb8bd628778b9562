"""UTC time, ISO 8601 formatting and the DURATION / TIMESTAMP syntaxes."""

import math
import re
from datetime import UTC, datetime, timedelta

from queuectl.errors import ValidationError

# A number of seconds, or amounts with units, largest first: 90, 90s, 5m, 1h30m, 1.5h, 2d.
_DURATION = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*|(?:\d+(?:\.\d+)?\s*[smhd]\s*)+)", re.IGNORECASE | re.ASCII)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE | re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_FORMS = "seconds, or amounts with units s, m, h, d largest first: 90, 90s, 5m, 1h30m, 1.5h, 2d"
# Far enough for any schedule, small enough that datetime arithmetic never overflows.
MAX_SECONDS = 10 * 365 * 86400


def utcnow() -> datetime:
    return datetime.now(UTC)


def short_age(seconds: float | None, *, tenths: bool = False) -> str:
    """A wait or an age, short: 45s, 12m, 5h, 3d ('-' for none); `tenths`: under ten
    seconds with a tenth (0.4s), as the dashboard shows a heartbeat's age."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.1f}s" if tenths and seconds < 10 else f"{seconds:.0f}s"


def iso(value: datetime | None) -> str | None:
    """Format as ISO 8601 UTC with a Z suffix (None stays None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from `90`, `90s`, `5m`, `1h30m`, `1.5h`, `2d` (non-negative, at most ten
    years). The one grammar of every DURATION: flags, job specs, config values."""
    if isinstance(text, bool):
        raise ValidationError(f"invalid {what} {text!r}")
    if isinstance(text, (int, float)):
        try:
            seconds = float(text)
        except OverflowError:  # a JSON integer beyond any float
            seconds = math.inf
    else:
        parsed = _duration_seconds(str(text))
        if parsed is None:
            raise ValidationError(f"invalid {what} {text!r} (use {DURATION_FORMS})")
        seconds = parsed
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_SECONDS:
        raise ValidationError(f"invalid {what} {text!r} (must be between 0 and {MAX_SECONDS} seconds)")
    return seconds


def _duration_seconds(text: str) -> float | None:
    if not _DURATION.fullmatch(text):
        return None
    parts = _PART.findall(text)
    units = [unit.lower() for _, unit in parts]
    order = [_UNIT_SECONDS[u] for u in units]
    if len(parts) > 1 and (order != sorted(order, reverse=True) or len(set(units)) != len(units)):
        return None  # "30m1h", "1h1h": a slip more likely than meant
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in zip((n for n, _ in parts), units))


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp; one without an offset is taken as UTC."""
    if not isinstance(text, str):
        raise ValidationError(f"invalid timestamp {text!r} (use ISO 8601, e.g. 2026-01-01T00:00:00Z)")
    raw = text.strip()
    if raw.endswith(("z", "Z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(f"invalid timestamp {text!r} (use ISO 8601, e.g. 2026-01-01T00:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationError(f"invalid timestamp {text!r} (out of range)") from None


def after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
