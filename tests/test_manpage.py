"""The parser module stays importable on its own (standard library only, no side effects),
which is what lets argparse-manpage build the man page from it."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, env_for

PARSER = REPO / "queuectl" / "cli" / "parser.py"

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


def test_argparse_manpage_builds_a_page_from_build_parser(tmp_path):
    tool = Path(sys.executable).with_name("argparse-manpage")
    out = tmp_path / "queuectl.1"
    # --pyfile loads parser.py as a lone file (no package around it), as the build does.
    result = subprocess.run(
        [tool, "--pyfile", PARSER, "--function", "build_parser", "--prog", "queuectl", "--manual-section", "1",
         "--output", out],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.startswith(".TH QUEUECTL")
    for word in ("enqueue", "dlq", "config", "worker", "\\-\\-max\\-retries", "Exit status"):
        assert word in page, word
