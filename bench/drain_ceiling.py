"""Two halves of a drain, measured apart, for the drain section of `make bench`:

    python bench/drain_ceiling.py spawn JOBS_FILE W
    python bench/drain_ceiling.py writes URL W OUT

`spawn`: the ceiling of any worker written in Python with SQLAlchemy on this machine.
It imports SQLAlchemy (what every queuectl process pays before it can claim a job),
then W forked processes run the file's commands exactly as a queuectl slot starts
one (`sh -c`, its own session, stdin /dev/null, its output on a pipe of its own read
to EOF, then its exit waited for): no database, no bookkeeping. A queuectl drain
can only be slower than this, so `xargs -P W` time / this time bounds what the
drain's ratio to xargs can reach.

`writes`: queuectl's own durable writes for a drain, and nothing else. The URL's
queue holds the jobs (`queuectl enqueue --file`); W forked processes each register
like a worker slot, claim, and then end each job and claim the next with
`Store.complete_and_claim` (a worker's hot path) until none is left; no command
runs. Writes to OUT, as JSON, the jobs each process ended and its CPU seconds.
"""

import json
import os
import subprocess
import sys
import time
import traceback


def spawn(jobs_file: str, width: int) -> None:
    import sqlalchemy  # noqa: F401  (the import is what is measured)

    with open(jobs_file) as f:
        commands = f.read().splitlines()
    devnull = os.open(os.devnull, os.O_RDONLY)

    def share(index: int) -> None:
        for command in commands[index::width]:
            out, job_out = os.pipe2(os.O_CLOEXEC)
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=devnull, stdout=job_out, stderr=job_out, start_new_session=True)
            os.close(job_out)
            while os.read(out, 65536):
                pass
            os.close(out)
            proc.wait()

    _forked(width, share)


def writes(url: str, width: int, out: str) -> None:
    from queuectl.states import Role
    from queuectl.store import Store
    from queuectl.timeutil import utcnow

    read_end, write_end = os.pipe()

    def share(index: int) -> None:
        store = Store.open(url, durable=False, one_connection=True, migrate=False)
        worker_id = f"w-ceiling-{os.getpid()}"
        store.register(id=worker_id, role=Role.WORKER, host="bench", pid_started=time.time(), supervisor_id="s-ceiling",
                       supervisor_pid=os.getppid(), queues=())
        started = time.process_time()
        ended = 0
        job = store.claim(worker_id, (), utcnow())
        while job is not None:
            _, job = store.complete_and_claim(job.id, worker_id, output="", output_size=0, queues=(), now=utcnow())
            ended += 1
        cpu = time.process_time() - started
        store.close()
        os.write(write_end, (json.dumps({"jobs": ended, "cpu_s": cpu}) + "\n").encode())

    _forked(width, share)
    os.close(write_end)
    with os.fdopen(read_end) as results:
        shares = [json.loads(line) for line in results]
    with open(out, "w") as f:
        json.dump({"shares": shares}, f)


def _forked(width: int, share) -> None:
    """Run share(0..width-1) in as many forked processes; fail if any of them failed."""
    pids = []
    for index in range(width):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                share(index)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    if failed:
        sys.exit(f"drain_ceiling: {len(failed)} of {width} processes failed")


if __name__ == "__main__":
    if sys.argv[1] == "spawn":
        spawn(sys.argv[2], int(sys.argv[3]))
    else:
        writes(sys.argv[2], int(sys.argv[3]), sys.argv[4])
