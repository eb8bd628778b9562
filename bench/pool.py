"""What a pool costs while it waits and per job slot (run.py's `pool` section),
beside task-spooler in the same run: the CPU and SQL statements of an idle
`worker start -c 8` (and the statements of -c 64, which should be the same) with an
idle `tsp -S 8` server measured over the same window (bench/idle_cost.py), then the
PSS of queuectl's own processes with 1..64 `sleep` jobs running beside `tsp -S N`
running the same jobs (bench/slot_cost.py). Every pool gets a fresh database.
"""

import os

import idle_cost
import slot_cost
from spooler import TSP

IDLE_WIDTHS = (8, 64)
SETTLE_S = 1.0  # after every worker is up: their first heartbeats and claims are past


def measure(ctx, backend, idle_seconds: float, widths) -> dict:
    run_dir = ctx.tmp / "pool-run"  # the pools' XDG_RUNTIME_DIR and the tsp sockets
    run_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(run_dir, 0o700)
    result: dict = {"tsp": bool(TSP), "idle_seconds": idle_seconds, "idle": {}, "slots": {}}
    for width in IDLE_WIDTHS:
        url = backend.fresh(f"idle{width}")
        try:
            result["idle"][str(width)] = idle_cost.measure(
                url, width, idle_seconds, SETTLE_S, run_dir, env=ctx.env, cwd=ctx.work, python=ctx.py, tsp=width == IDLE_WIDTHS[0],
            )
        finally:
            backend.drop(url)
    for width in widths:
        url = backend.fresh(f"slots{width}")
        try:
            queuectl = slot_cost.queuectl_pss(url, width, run_dir, env=ctx.env, cwd=ctx.work, python=ctx.py)
        finally:
            backend.drop(url)
        result["slots"][str(width)] = {"queuectl": queuectl, "tsp": slot_cost.tsp_pss(width, run_dir, env=ctx.env)}
    result["per_slot"] = per_slot(result["slots"])
    return result


def per_slot(slots: dict) -> dict:
    """PSS per additional slot, (PSS(widest) - PSS(narrowest)) / (widest - narrowest),
    for queuectl and tsp; absent when one of them was not measured at both widths."""
    widths = sorted(int(w) for w in slots)
    if len(widths) < 2:
        return {}
    low, high = widths[0], widths[-1]
    first, last = slots[str(low)], slots[str(high)]
    out = {"from": low, "to": high}
    for side in ("queuectl", "tsp"):
        if first[side] and last[side]:
            out[f"{side}_kb"] = round((last[side]["pss_kb"] - first[side]["pss_kb"]) / (high - low), 1)
    return out
