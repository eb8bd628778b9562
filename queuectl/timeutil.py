"""UTC time, ISO 8601 formatting and the DURATION / TIMESTAMP syntaxes."""

import math
import re
from datetime import UTC, datetime, timedelta

from queuectl.errors import ValidationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE | re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Far enough for any schedule, small enough that datetime arithmetic never overflows.
MAX_SECONDS = 10 * 365 * 86400


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """Format as ISO 8601 UTC with a Z suffix (None stays None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from `90`, `90s`, `5m`, `2h`, `1d` (non-negative, at most ten years)."""
    if isinstance(text, bool):
        raise ValidationError(f"invalid {what} {text!r}")
    if isinstance(text, (int, float)):
        try:
            seconds = float(text)
        except OverflowError:  # a JSON integer beyond any float
            seconds = math.inf
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValidationError(f"invalid {what} {text!r} (use e.g. 90, 90s, 5m, 2h, 1d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_SECONDS:
        raise ValidationError(f"invalid {what} {text!r} (must be between 0 and {MAX_SECONDS} seconds)")
    return seconds


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
