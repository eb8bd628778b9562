"""Runs a module as `python -m` does and records the peak RSS of each of its Python
processes as that process ends:

    python bench/exit_peaks.py OUT -m MODULE [ARGS...]

(the benchmark runs it through command(), which imports this module instead).

Each process (the one started here, and every child it forks) appends a line to OUT
just before it ends, by os._exit or by a normal exit: its pid, parent pid, VmHWM
(the kernel's high-water mark of its RSS), the largest VmHWM among the children it
has reaped (getrusage RUSAGE_CHILDREN: the kernel's figure, a cross-check) and its
title. Every os.fork is recorded too, by the parent, so a child that never reported
(killed by a signal) shows up as not measured instead of vanishing.

Why not sample /proc from outside: a sampler sees a worker only if it looks while
the worker lives, and reads its peak before its end. The sampler this replaces
looked for children every 0.5 s; on a 50-job PostgreSQL drain it saw no worker in
one run of three, and one of the two in another.
"""

import atexit
import os
import resource
import runpy
import sys

FORK, EXIT = "fork", "exit"


def _status_kb() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values


def _title() -> str:
    with open("/proc/self/cmdline", "rb") as f:
        raw = f.read()
    return " ".join(raw.decode(errors="replace").split("\0")).split("\n")[0].replace("\t", " ").strip()


def install(out: str) -> None:
    """Record, in `out`, this process's and every forked child's peak at its end."""
    real_exit, real_fork = os._exit, os.fork
    reported = set()  # pids that have reported: a forked child inherits the parent's set

    def append(*fields) -> None:
        line = "\t".join(map(str, fields)) + "\n"
        # Opened for each record (no descriptor that the program could close), and
        # one write of O_APPEND: lines from concurrent processes never interleave.
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def report() -> None:
        pid = os.getpid()
        if pid in reported:
            return
        reported.add(pid)
        try:
            status = _status_kb()
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux
            append(EXIT, pid, os.getppid(), status["VmHWM"], status["VmRSS"], children, _title())
        except (OSError, KeyError, ValueError):
            pass  # no line: the reader reports this process as not measured

    def fork_recorded():
        pid = real_fork()
        if pid:  # written by the parent, before it can signal the child
            try:
                append(FORK, pid, os.getpid())
            except OSError:
                pass  # the child then counts as missing (fewer workers than started)
        return pid

    def exit_after_report(code):
        report()
        real_exit(code)

    os._exit = exit_after_report  # how queuectl and multiprocessing's forked children end
    atexit.register(report)  # a normal exit
    os.fork = fork_recorded  # what multiprocessing's fork context calls


def read(path, root_pid: int) -> dict:
    """What the process started as `root_pid` recorded (None if nothing), what its
    forked children recorded, and which of them never reported. kB throughout."""
    forks, exits = [], {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        kind, *fields = line.split("\t")
        if kind == FORK:
            forks.append((int(fields[0]), int(fields[1])))
        elif kind == EXIT:
            pid, ppid, hwm, rss, children = map(int, fields[:5])
            exits[pid] = {"pid": pid, "ppid": ppid, "hwm_kb": hwm, "rss_kb": rss, "children_maxrss_kb": children, "title": fields[5]}
    children = [pid for pid, ppid in forks if ppid == root_pid]
    return {
        "root": exits.get(root_pid),
        "children": [exits[pid] for pid in children if pid in exits],
        "unreported": [pid for pid in children if pid not in exits],
    }


def command(out, argv: list[str]) -> list[str]:
    """The command line `argv` (`python -m MODULE ...`) run under this recorder.

    This module is imported, from its cached bytecode, and not run as a script: a
    script is compiled at every start, which raised the supervisor's peak by 0.25 MB
    (measured on its VmHWM; imported, no difference was measurable)."""
    python, dash_m, *rest = argv
    if dash_m != "-m":
        raise ValueError(f"not a `python -m` command: {argv}")
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path[0] = {here!r}; import exit_peaks; exit_peaks.main(sys.argv[1:])"
    return [python, "-c", code, str(out), "-m", *rest]


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "-m":
        sys.exit("usage: exit_peaks.py OUT -m MODULE [ARGS...]")
    out, module = argv[0], argv[2]
    install(out)
    sys.argv = [module, *argv[3:]]  # run_module replaces argv[0] with the module's path
    sys.path[0] = os.getcwd()  # as `python -m`: the current directory, not bench/
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
