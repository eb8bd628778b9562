"""The parser module stays importable on its own (standard library only, no side effects),
which is what lets argparse-manpage build the man page from it; the page's own
sections (cli/manual.py) are built from the code's tables, loaded the same way."""

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, env_for
from queuectl import config
from queuectl.states import JobState

PARSER = REPO / "queuectl" / "cli" / "parser.py"
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "EXAMPLES", "JOB STATES", "CONFIG KEYS", "DURATIONS AND SIZES",
            "ENVIRONMENT", "FILES", "EXIT STATUS")

CHECK = r"""
import json, os, sys
before = set(sys.modules)
cwd_before = sorted(os.listdir("."))
import queuectl.cli.parser as parser
p = parser.build_parser()
p.parse_args(["enqueue", "true"])
new = sorted(set(sys.modules) - before)
print(json.dumps({"new": new, "files_changed": sorted(os.listdir(".")) != cwd_before}))
"""


def test_the_parser_imports_only_the_standard_library_and_touches_nothing(tmp_path):
    db = tmp_path / "never-created" / "queue.db"
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path,
                            env=env_for(str(db)), timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    report = json.loads(result.stdout)
    ours = {"queuectl", "queuectl.cli", "queuectl.cli.parser"}
    foreign = [m for m in report["new"] if m not in ours and m.split(".")[0] not in sys.stdlib_module_names]
    assert foreign == []
    assert not report["files_changed"]
    assert not db.parent.exists()


def build_page(tmp_path: Path) -> str:
    """The page as the package build makes it: setup.cfg's [build_manpages] spec, run
    through argparse-manpage with the file loaded on its own, outside the source tree."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    _, *options = cfg["build_manpages"]["manpages"].strip().split(":")
    spec = dict(option.split("=", 1) for option in options)
    tool = Path(sys.executable).with_name("argparse-manpage")
    out = tmp_path / "queuectl.1"
    result = subprocess.run(
        [tool, "--pyfile", REPO / spec["pyfile"], "--function", spec["function"], "--prog", spec["prog"],
         "--manual-section", spec["manual_section"], "--manual-title", spec["manual_title"], "--output", out],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return out.read_text()


def section(page: str, heading: str) -> str:
    """The roff text of one .SH section."""
    match = re.search(rf"^\.SH {re.escape(heading)}\n(.*?)(?=^\.SH |\Z)", page, re.MULTILINE | re.DOTALL)
    assert match, heading
    return match.group(1)


def plain(roff: str) -> str:
    return roff.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\e", "\\")


def test_argparse_manpage_builds_a_page_from_build_parser(tmp_path):
    page = build_page(tmp_path)
    assert page.startswith(".TH QUEUECTL")
    for word in ("enqueue", "dlq", "config", "worker", "completion", "\\-\\-max\\-retries", "Exit status"):
        assert word in page, word
    assert [h for h in re.findall(r"^\.SH (.+)$", page, re.MULTILINE) if h in SECTIONS] == list(SECTIONS)
    assert plain(section(page, "NAME")).strip() == "queuectl - a durable background job queue for shell commands"


def test_the_page_has_every_config_key_state_exit_status_and_variable(tmp_path):
    page = build_page(tmp_path)
    keys = plain(section(page, "CONFIG KEYS"))
    for key in config.KEYS.values():
        assert f"{key.name} (default {key.default})" in keys and key.help in keys, key.name
    states = plain(section(page, "JOB STATES"))
    assert re.findall(r"^\.TP\n(\w+)$", states, re.MULTILINE) == [s.value for s in JobState]
    codes = re.findall(r"^\.TP\n(\d+)$", plain(section(page, "EXIT STATUS")), re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "124", "130"]
    grammar = plain(section(page, "DURATIONS AND SIZES"))
    for example in ("90", "90s", "5m", "1h30m", "2d", "64KiB", "10MB"):
        assert re.search(rf"\b{example}\b", grammar), example
    # Every variable the code reads or sets for a job, but the one a supervisor hands its workers.
    read = set()
    for path in (REPO / "queuectl").rglob("*.py"):
        read |= set(re.findall(r"\b(QUEUECTL_[A-Z_]+|NO_COLOR|XDG_[A-Z_]+)\b", path.read_text()))
    environment = plain(section(page, "ENVIRONMENT"))
    assert {"QUEUECTL_DB", "QUEUECTL_BUSY_TIMEOUT", "NO_COLOR", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"} <= read
    assert sorted(v for v in read - {"QUEUECTL_POOL_OPTIONS"} if v not in environment) == []
    files = plain(section(page, "FILES"))
    for path in ("queuectl/queue.db", "DB.lock", "DB.worker.log", "worker-HOST", "$XDG_RUNTIME_DIR/queuectl/"):
        assert path in files, path


MANUAL_CHECK = r"""
import json, runpy, sys
before = set(sys.modules)
loaded = runpy.run_path(sys.argv[1])  # as argparse-manpage loads it
loaded["manual_parser"]()
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_man_page_sections_need_only_the_standard_library(tmp_path):
    # Outside the source tree and with no PYTHONPATH, as in the package build's isolated environment.
    env = {k: v for k, v in env_for(str(tmp_path / "queue.db")).items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-I", "-c", MANUAL_CHECK, REPO / "queuectl" / "cli" / "manual.py"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    new = json.loads(result.stdout)
    assert "queuectl.config" in new
    assert [m for m in new if m.split(".")[0] not in sys.stdlib_module_names and m != "queuectl" and not m.startswith("queuectl.")] == []
