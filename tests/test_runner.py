"""runner.py in-process: real `sh -c` jobs, no database and no worker. Exit codes,
the output tail, timeouts and the grace before SIGKILL, the process group (nothing
left behind), and when on_start, on_end and tick are called.

Timing is checked only as generous upper bounds (a loaded 2-core machine must pass),
or as lower bounds the runner guarantees (SIGKILL never comes before KILL_GRACE)."""

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from conftest import wait_until
from queuectl.worker import jobgroup, runner

# A job that should end at once must end within this (a loaded machine is slow, never this slow).
QUICK = 10.0
# Every job runs with a timeout, so a broken runner fails a test instead of hanging it.
SAFETY_TIMEOUT = 20.0
BASE_ENV = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}


@dataclass
class Run:
    """What one runner.run call returned and which callbacks it made."""

    outcome: runner.Outcome
    seconds: float
    starts: list[int] = field(default_factory=list)
    ends: int = 0
    born: list[tuple[int, int]] = field(default_factory=list)


def run_job(command: str, cwd: Path, *, env=None, timeout=SAFETY_TIMEOUT, output_limit=65536,
            on_start=None, on_end=None, tick=None, tick_interval=0.05) -> Run:
    starts: list[int] = []
    born: list[tuple[int, int]] = []
    ends = 0

    def started(pgid: int, birth: tuple[int, int]) -> None:
        starts.append(pgid)
        born.append(birth)
        if on_start:
            on_start(pgid)

    def ended() -> None:
        nonlocal ends
        ends += 1
        if on_end:
            on_end()

    began = time.monotonic()
    outcome = runner.run(
        command,
        cwd=str(cwd),
        env=BASE_ENV if env is None else env,
        timeout=timeout,
        output_limit=output_limit,
        on_start=started,
        on_end=ended,
        tick=tick or (lambda: False),
        tick_interval=tick_interval,
    )
    return Run(outcome, time.monotonic() - began, starts, ends, born)


def dead_or_dying(pid: int) -> bool:
    """True once `pid` has exited (gone, or a zombie nobody reaped yet) or has a
    SIGKILL pending, which it cannot survive."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    if fields["State"][0] in "ZX":
        return True
    sigkill = 1 << (signal.SIGKILL - 1)
    return bool((int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) & sigkill)


def gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie left to an init that does not reap counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- exit codes ------------------------------------------------------------------------


def test_exit_code_zero_is_success(tmp_path):
    run = run_job("echo hello", tmp_path)
    assert run.outcome == runner.Outcome(0, "hello\n", None)


def test_a_non_zero_exit_code_is_an_error(tmp_path):
    run = run_job("echo partial; exit 3", tmp_path)
    assert run.outcome == runner.Outcome(3, "partial\n", "exit code 3")


def test_exit_code_127_suggests_a_missing_command(tmp_path):
    run = run_job("no-such-command-for-queuectl", tmp_path)
    assert run.outcome.exit_code == 127
    assert run.outcome.error == "exit code 127 (command not found?)"
    # The shell's own message, on stderr, is in the output.
    assert "no-such-command-for-queuectl" in run.outcome.output and "not found" in run.outcome.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_job_killed_by_a_signal_is_128_plus_its_number(tmp_path, sig):
    run = run_job(f"echo before; kill -{sig.name[3:]} $$; echo after", tmp_path)
    assert run.outcome == runner.Outcome(128 + sig, "before\n", f"killed by signal {sig.name}")


def test_a_job_killed_by_a_real_time_signal(tmp_path):
    """signal.Signals has no member for 32-33 and 35-63: this once crashed the worker."""
    run = run_job("kill -40 $$", tmp_path)
    assert run.outcome.exit_code == 128 + 40
    assert run.outcome.error == "killed by signal 40"


# --- output ------------------------------------------------------------------------------


def test_stdout_and_stderr_are_one_stream_in_order(tmp_path):
    run = run_job("echo out; echo err >&2; echo out again", tmp_path)
    assert run.outcome == runner.Outcome(0, "out\nerr\nout again\n", None)


def test_only_the_last_output_limit_bytes_are_kept(tmp_path):
    everything = "".join(f"{i}\n" for i in range(1, 20001))  # 108,894 bytes
    run = run_job("seq 1 20000", tmp_path, output_limit=1000)
    assert run.outcome.error is None
    assert run.outcome.output == everything[-1000:]


def test_output_limit_zero_keeps_nothing(tmp_path):
    run = run_job("seq 1 20000; echo last", tmp_path, output_limit=0)
    assert run.outcome == runner.Outcome(0, "", None)


def test_bytes_that_are_not_utf8_and_nul_are_kept_as_escapes(tmp_path):
    # \377 is never valid UTF-8; PostgreSQL text cannot hold NUL. Neither is lost.
    run = run_job(r"printf 'ok \377 \000 \303\251\n'", tmp_path)
    assert run.outcome == runner.Outcome(0, "ok \\xff \\x00 \u00e9\n", None)
    assert run.outcome.output_size == len("ok \\xff \\x00 \u00e9\n")


def test_a_limit_that_cuts_a_character_in_two(tmp_path):
    run = run_job(r"printf 'a\303\251'", tmp_path, output_limit=1)  # "aé", é is 2 bytes: it does not fit
    assert run.outcome == runner.Outcome(0, "", None)
    run = run_job(r"printf 'a\303\251'", tmp_path, output_limit=2)
    assert (run.outcome.output, run.outcome.output_size) == ("\u00e9", 2)


def test_a_character_split_across_reads_is_kept_whole():
    tail = runner.Tail(100)
    for byte in "aé€😀".encode():
        tail.add(bytes([byte]))
    tail.add(b"", final=True)
    assert tail.snapshot() == ("aé€😀", 4)
    cut = runner.Tail(100)
    cut.add("é".encode()[:1], final=True)  # the job ended in the middle of a character
    assert cut.snapshot() == ("\\xc3", 4)


def test_a_job_that_closes_its_output_is_still_waited_for(tmp_path):
    # The job closes stdout and stderr (the runner reads end of file) and goes on until
    # a tick has seen its descriptors closed: so the runner kept running and ticking
    # after the end of file, and then recorded the real exit code.
    command = "echo before; exec >&- 2>&-; while [ ! -e go ]; do sleep 0.01; done; exit 7"
    pgid = []

    def tick() -> bool:
        if pgid and not Path(f"/proc/{pgid[0]}/fd/1").exists():
            (tmp_path / "go").touch()
        return False

    run = run_job(command, tmp_path, on_start=pgid.append, tick=tick)
    assert (tmp_path / "go").exists()
    assert run.outcome == runner.Outcome(7, "before\n", "exit code 7")


def test_a_lot_of_output_never_blocks_the_job(tmp_path):
    size = 8 * 1024 * 1024
    line = "0123456789abcdef\n"
    everything = (line * (size // len(line) + 1))[:size]
    run = run_job(f"yes 0123456789abcdef | head -c {size}", tmp_path, output_limit=100)
    assert run.outcome == runner.Outcome(0, everything[-100:], None)
    assert run.seconds < QUICK


def test_tail_keeps_the_last_bytes_in_bounded_memory_and_counts_them_all():
    tail = runner.Tail(10)
    everything = b""
    for size in [1, 3, 9, 10, 11, 25, 0, 2, 40, 7]:
        # Letters that go on from chunk to chunk: a tail cut at the wrong place shows.
        chunk = bytes(ord("a") + (len(everything) + i) % 26 for i in range(size))
        tail.add(chunk)
        everything += chunk
        assert len(tail._text) <= 2 * tail.limit
        assert tail.snapshot() == (everything[-10:].decode(), len(everything))


def test_tail_with_limit_zero_stores_nothing_but_counts():
    tail = runner.Tail(0)
    tail.add(b"x" * 1000)
    assert tail._text == "" and tail.snapshot() == ("", 1000)


# --- timeouts ------------------------------------------------------------------------------


def test_a_timeout_ends_the_job(tmp_path):
    run = run_job("sleep 30", tmp_path, timeout=0.5)
    # The shell and its sleep both die of the SIGTERM sent to their group.
    assert run.outcome == runner.Outcome(128 + signal.SIGTERM, "", "timed out after 0.5s")
    assert 0.5 <= run.seconds < QUICK


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "KILL_GRACE", 0.3)
    # The timeout leaves the shell time to set its trap first, even on a loaded machine.
    run = run_job("trap '' TERM; echo ready; sleep 30", tmp_path, timeout=1)
    assert run.outcome == runner.Outcome(128 + signal.SIGKILL, "ready\n", "timed out after 1s")
    assert 1 + 0.3 <= run.seconds < QUICK


def test_a_job_that_handles_sigterm_may_clean_up_in_the_grace(tmp_path):
    command = "trap 'echo cleaning up; exit 5' TERM; echo ready; sleep 30 & wait"
    run = run_job(command, tmp_path, timeout=1)
    assert run.outcome == runner.Outcome(5, "ready\ncleaning up\n", "timed out after 1s")
    assert run.seconds < QUICK


def test_what_the_job_left_in_its_group_is_killed_when_it_exits(tmp_path):
    # The background sleep holds the output pipe open too: the runner must not wait for it.
    run = run_job("sleep 30 & echo $!", tmp_path)
    assert run.outcome.exit_code == 0 and run.outcome.error is None
    assert run.seconds < QUICK
    left = int(run.outcome.output)
    wait_until(lambda: gone(left), timeout=QUICK, message=f"background sleep {left} to be killed")


def test_a_process_that_left_the_group_does_not_keep_the_runner(tmp_path):
    # It escapes the job's group with setsid and keeps the output pipe open: the runner
    # cannot kill it, and must not wait for the end of file it will never send.
    command = (
        "setsid sh -c 'echo $$ > escaped.pid; exec sleep 30' & "
        "while [ ! -s escaped.pid ]; do sleep 0.01; done; echo done"
    )
    try:
        run = run_job(command, tmp_path)
        assert run.outcome == runner.Outcome(0, "done\n", None)
        assert run.seconds < QUICK
    finally:
        pid_file = tmp_path / "escaped.pid"
        if pid_file.exists() and pid_file.read_text().strip():
            runner.kill_group(int(pid_file.read_text()))


# --- callbacks -------------------------------------------------------------------------------


def test_on_start_gets_the_group_leader_before_the_job_ends(tmp_path):
    seen = {}

    def on_start(pgid: int) -> None:
        seen["group of the leader"] = os.getpgid(pgid)  # raises if the shell were gone
        (tmp_path / "started").touch()

    # The job cannot end before on_start has run: it waits for the file on_start writes.
    run = run_job("while [ ! -e started ]; do sleep 0.01; done; echo $$", tmp_path, on_start=on_start)
    assert run.outcome.error is None
    [pgid] = run.starts
    assert run.outcome.output == f"{pgid}\n"  # the shell's pid
    assert seen["group of the leader"] == pgid  # it leads its own group
    assert pgid != os.getpgrp()


def test_on_start_gets_when_the_leader_was_born(tmp_path):
    """`born` brackets the leader's start time as the kernel shows it in /proc (what
    the published job group is checked against before anyone kills it)."""
    seen = {}

    def on_start(pgid: int) -> None:
        seen["start ticks"] = jobgroup._start_ticks(pgid)
        (tmp_path / "started").touch()

    run = run_job("while [ ! -e started ]; do sleep 0.01; done", tmp_path, on_start=on_start)
    assert run.outcome.error is None
    [(before, after)] = run.born
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert before <= after
    assert before // tick <= seen["start ticks"] <= after // tick


def test_on_end_is_called_once_after_the_group_is_killed(tmp_path):
    seen = {}

    def on_end() -> None:
        [pgid] = starts
        seen["shell reaped"] = not Path(f"/proc/{pgid}").exists()
        left = int((tmp_path / "left.pid").read_text())
        seen["left behind dead or dying"] = dead_or_dying(left)

    starts = []
    run = run_job("sleep 30 & echo $! > left.pid", tmp_path, on_start=starts.append, on_end=on_end)
    assert run.outcome == runner.Outcome(0, "", None)
    assert run.ends == 1
    assert seen == {"shell reaped": True, "left behind dead or dying": True}


def test_tick_returning_true_kills_the_job_at_once(tmp_path):
    ticks = 0

    def tick() -> bool:
        nonlocal ticks
        ticks += 1
        return ticks == 3

    run = run_job("echo working; sleep 30", tmp_path, tick=tick, tick_interval=0.05)
    assert run.outcome == runner.Outcome(None, "working\n", "stopped", stopped=True)
    assert ticks == 3  # never asked again once stopping
    assert run.ends == 1
    assert run.seconds < QUICK


# --- cwd and environment ----------------------------------------------------------------------


def test_the_job_runs_in_its_cwd(tmp_path):
    (tmp_path / "marker").write_text("here\n")
    run = run_job("cat marker; pwd", tmp_path)
    assert run.outcome.error is None
    marker, cwd = run.outcome.output.splitlines()
    assert marker == "here" and os.path.realpath(cwd) == os.path.realpath(tmp_path)


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_a_cwd_that_is_not_a_directory_never_starts(tmp_path, kind):
    cwd = tmp_path / "nowhere"
    if kind == "a file":
        cwd.write_text("")
    run = run_job("echo never", cwd)
    assert run.outcome.exit_code is None and run.outcome.output == ""
    assert run.outcome.error.startswith(f"cannot start the job in {str(cwd)!r}: ")
    assert run.starts == []


def test_the_environment_is_passed_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("QUEUECTL_TEST_WORKER_ONLY", "leaked")  # the worker's, not the job's
    value = "two  spaces, $dollar, 'quotes'\nand a second line"
    run = run_job(
        "printf '%s|%s' \"$GREETING\" \"${QUEUECTL_TEST_WORKER_ONLY-unset}\"",
        tmp_path, env=dict(BASE_ENV, GREETING=value),
    )
    assert run.outcome == runner.Outcome(0, f"{value}|unset", None)


def test_commands_are_found_on_the_jobs_own_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "queuectl-test-hello"
    script.write_text("#!/bin/sh\necho hello from bin\n")
    script.chmod(0o755)
    found = run_job("queuectl-test-hello", tmp_path, env={"PATH": str(bin_dir)})
    assert found.outcome == runner.Outcome(0, "hello from bin\n", None)
    # The worker's PATH is not searched: only the one in the job's environment.
    missing = run_job("queuectl-test-hello", tmp_path, env={"PATH": "/nonexistent-dir"})
    assert missing.outcome.exit_code == 127


def test_an_empty_environment_still_starts_the_shell(tmp_path):
    # The shell is /bin/sh, never looked up on PATH.
    run = run_job("echo ok", tmp_path, env={})
    assert run.outcome == runner.Outcome(0, "ok\n", None)


# --- kill_group -------------------------------------------------------------------------------


def test_kill_group_signals_every_process_of_the_group():
    shell = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 30 & echo $!; exec sleep 30"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    with shell:
        member = int(shell.stdout.readline())
        assert runner.kill_group(shell.pid, signal.SIGTERM) is True
        assert shell.wait(timeout=QUICK) == -signal.SIGTERM
    wait_until(lambda: gone(member), timeout=QUICK, message=f"group member {member} to die")


def test_kill_group_of_a_group_that_is_gone_is_false():
    finished = subprocess.Popen(["true"], start_new_session=True)
    finished.wait(timeout=QUICK)
    assert runner.kill_group(finished.pid) is False
