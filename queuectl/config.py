"""Configuration keys: defaults, types and ranges. Values live in the `config` table."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from queuectl.errors import ValidationError
from queuectl.timeutil import parse_duration


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValidationError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValidationError(f"{value} is out of range ({low}..{high})")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ValidationError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also rejects nan
            raise ValidationError(f"{value} is out of range ({low}..{high})")
        return value

    return parse


def _duration_range(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = parse_duration(text)
        if not low <= value <= high:
            raise ValidationError(f"{text!r} is out of range ({low:g}s..{high:g}s)")
        return value

    return parse


# A retention of "never": finished jobs of that kind are kept until deleted by hand.
NEVER = "never"


def parse_retention(text: str, what: str = "retention") -> float | None:
    """A DURATION, or "never" (None): how long finished jobs are kept (see
    store/retention.py). Shared by the retain-* keys and the `prune` flags."""
    if str(text).strip().lower() == NEVER:
        return None
    try:
        return parse_duration(text, what)
    except ValidationError as err:
        raise ValidationError(f"{err}, or {NEVER}") from None


def display(value) -> str:
    """A typed value as `config get` and `config list` print it."""
    return NEVER if value is None else str(value)


# KiB, MiB, GiB count in 1024s, KB, MB, GB in 1000s (IEC and SI, as `ls --si` and disk
# makers mean them); no unit, or B, is bytes.
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
SIZE_FORMS = "bytes, or a number with a unit: 65536, 64KiB, 10MB, 1MiB (KiB, MiB, GiB: 1024, 1024^2, 1024^3 bytes; KB, MB, GB: 1000, 1000^2, 1000^3)"


def parse_size(text: str) -> Decimal:
    """Bytes from `65536`, `64KiB`, `10MB`, `1MiB`, `1.5KiB`."""
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise ValidationError(f"{text!r} is not a size (use {SIZE_FORMS})")
    number, unit = match.groups()
    return Decimal(number) * _SIZE_UNITS[(unit or "b").lower()]


def _size_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = parse_size(text)
        if not low <= value <= high:  # compared before int(): 5000 digits are no int
            raise ValidationError(f"{text!r} is out of range ({low}..{high} bytes)")
        if value != int(value):
            raise ValidationError(f"{text!r} is not a whole number of bytes")
        return int(value)

    return parse


@dataclass(frozen=True)
class Key:
    name: str
    default: str
    parse: Callable[[str], int | float | None]
    help: str


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("max-retries", "3", _int_range(0, 1000), "retries after the first attempt (3 = 4 attempts)"),
        Key("backoff-base", "2", _float_range(1, 1000), "retry delay is backoff-base ** (attempts - 1) seconds"),
        Key("backoff-max", "3600", _duration_range(0, 30 * 86400), "upper bound of a retry delay"),
        Key("backoff-jitter", "0", _float_range(0, 1), "random fraction (0..1) added to a retry delay"),
        Key("job-timeout", "0", _duration_range(0, 30 * 86400), "default job timeout; 0 means none"),
        Key("poll-interval", "0.05", _duration_range(0.005, 60), "how often an idle worker looks for work"),
        Key("heartbeat-interval", "1", _duration_range(0.05, 3600), "how often workers heartbeat"),
        Key("heartbeat-timeout", "30", _duration_range(0.2, 86400), "silence after which a worker is presumed dead"),
        Key("kill-grace", "10", _duration_range(0, 3600), "after SIGTERM, how long a cancelled job has before SIGKILL"),
        Key("output-limit", "65536", _size_range(0, 64 * 1024 * 1024), "bytes of output kept per job (65536, 64KiB, 10MB, 1MiB)"),
        Key("retain-completed", "7d", parse_retention, "running supervisors delete completed jobs this long after they finished; never: keep"),
        Key("retain-cancelled", "7d", parse_retention, "running supervisors delete cancelled jobs this long after they ended; never: keep"),
        Key("retain-dead", NEVER, parse_retention, "running supervisors delete dead jobs (the DLQ) this long after they died; never: keep"),
        Key("prune-interval", "60", _duration_range(0.1, 86400), "how often running supervisors delete jobs past their retention"),
    )
}


def canonical_key(name: str) -> str:
    """Accept hyphen or underscore spelling; reject unknown keys listing the valid ones."""
    key = name.strip().lower().replace("_", "-")
    if key not in KEYS:
        raise ValidationError(f"unknown config key {name!r} (valid: {', '.join(KEYS)})")
    return key


def parse_value(key: str, text: str) -> str:
    """Validate a value for key and return its canonical stored text."""
    try:
        value = KEYS[key].parse(text)
    except ValidationError as exc:
        raise ValidationError(f"invalid value for {key}: {exc}") from None
    return display(value)


def typed(key: str, stored: str | None) -> int | float | None:
    """The typed value of a key from its stored text (or its default)."""
    return KEYS[key].parse(KEYS[key].default if stored is None else stored)
