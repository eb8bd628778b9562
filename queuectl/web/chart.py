"""The overview's throughput chart: per-minute points as an inline SVG (no script).

A pure function of its points, so it is tested with synthetic ones. Completed and
failed (failed attempts, timeouts and deaths: what the failure rate counts) are two
stacked series of bars, one bar per minute; a <title> on each bar gives its figures
on hover.
"""

from datetime import UTC

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 190
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24  # margins around the plot (axis labels)
COMPLETED_COLOUR = "#2e9d57"
FAILED_COLOUR = "#d64545"


def failures(point: dict) -> int:
    """What the chart and the failure rate count as failed in a minute: failed and
    dead attempts (a timed-out attempt is one of those too: its own tally, timed_out,
    counts it a second time, so it is not added here)."""
    return point.get("failed", 0) + point.get("dead", 0)


def failure_rate(points: list[dict]) -> float | None:
    """failures / (completed + failures) over `points`, where failures are failed and
    dead attempts: the share of runs that failed. Cancelled jobs are not runs that
    ended well or badly, so they count on neither side (a bulk cancel of a backlog
    would otherwise make the rate look healthy); None if no run ended."""
    failed = sum(failures(p) for p in points)
    ended = failed + sum(p.get("completed", 0) for p in points)
    return None if ended == 0 else failed / ended


def nice_ceiling(value: int) -> int:
    """The axis top: 1, 2, 5, 10, 20, 50... at or above `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def throughput_svg(points: list[dict]) -> Markup:
    """Points (oldest first, each with "minute" an aware datetime, "completed",
    "failed", "timed_out", "dead") as one <svg> element."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((p.get("completed", 0) + failures(p) for p in points), default=0))
    slot = plot_w / max(len(points), 1)
    bar = max(slot - 1.5, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="jobs completed and failed per minute">'
    ]
    for fraction in (0, 0.5, 1):  # horizontal grid lines with their values
        y = TOP + plot_h * (1 - fraction)
        label = f"{top * fraction:g}"
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d9dee5" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#5b6472">{escape(label)}</text>')
    for index, point in enumerate(points):
        completed, failed = point.get("completed", 0), failures(point)
        x = LEFT + index * slot
        minute = point["minute"].astimezone(UTC).strftime("%H:%M")
        tip = f"{minute} UTC: {completed} completed, {failed} failed"
        y = TOP + plot_h
        for count, colour in ((completed, COMPLETED_COLOUR), (failed, FAILED_COLOUR)):
            if count:
                height = plot_h * count / top
                y -= height
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" fill="{colour}">'
                             f'<title>{escape(tip)}</title></rect>')
        if index % 15 == 0 or index == len(points) - 1:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="11" fill="#5b6472">{escape(minute)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#8a94a3" stroke-width="1"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
