"""`queuectl completion bash|zsh|fish` (#12): each script is loaded in the real shell,
and what it completes is read back from that shell. The bash checks walk the parser,
so a subcommand or an option added later is checked too."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_import_cost import imported_modules

from conftest import env_for
from queuectl.cli.parser import build_parser

# Calls the completion function the way bash does on a tab: the words so far, the
# index of the one being completed. Prints what it offers, one per line.
BASH_DRIVER = r"""
source "$1"; shift
[[ $(complete -p queuectl) =~ -F\ ([^ ]+) ]] || exit 3
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"${BASH_REMATCH[1]}" queuectl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""

# zsh completes only in its line editor: an interactive zsh on a pseudo-terminal
# (zpty) is sent each line and a tab, with compadd wrapped to print what it is given.
# The tab runs a widget that completes, then prints DONE and clears the line: the
# next line is sent only once that is read (zsh cuts a completion short when keys
# are already waiting).
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z "PROMPT=; RPROMPT=; fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi;
  local -a hits; builtin compadd -A hits "$@"; local h; for h in $hits; do print -r -- "HIT:$h"; done; builtin compadd "$@" }'
zpty -w z '_capture () { zle complete-word; print -r -- "DONE"; zle kill-whole-line }; zle -N _capture'
zpty -w z "zstyle ':completion:*' menu no; bindkey '^I' _capture; print READY"
zpty -r z line '*READY*'
shift
for words in "$@"; do
  zpty -w -n z "$words"$'\t'
  zpty -r z out '*DONE*'
  hits=()
  for chunk in ${(s:HIT:)out}; do [[ $chunk == :* ]] && hits+=(${${chunk#:}%%[[:cntrl:]]*}); done
  print -r -- ${(u)hits}
done
zpty -d z
"""


def script(shell: str, tmp_path: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "queuectl", "completion", shell], capture_output=True, text=True,
                            env=env_for(str(tmp_path / "never.db")), timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    path = tmp_path / f"queuectl.{shell}"
    path.write_text(result.stdout)
    return path


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory) -> Path:
    return script("bash", tmp_path_factory.mktemp("bash"))


def bash_complete(path: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for a tab at the end of `line` (a trailing space: a new word)."""
    words = line.split() + ([""] if line.endswith(" ") else [])
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", BASH_DRIVER, "driver", path, *words],
                            capture_output=True, text=True, cwd=cwd, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [w for w in result.stdout.splitlines() if w]


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(words after queuectl, parser, its subcommands) for every parser, depth first."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    choices = dict(subs[0].choices) if subs else {}
    yield path, parser, list(choices)
    for name, sub in choices.items():
        yield from parsers(sub, path + (name,))


def test_bash_completes_the_subcommands_at_every_depth(bash_script):
    seen = set()
    for path, _parser, subcommands in parsers(build_parser()):
        if subcommands:
            assert sorted(bash_complete(bash_script, " ".join(("queuectl",) + path) + " ")) == sorted(subcommands), path
            seen.add(" ".join(path))
    assert {"", "dlq", "config", "worker", "queue", "db"} <= seen
    assert bash_complete(bash_script, "queuectl dl") == ["dlq"]


def test_bash_completes_each_subcommands_own_options(bash_script):
    for path, parser, subcommands in parsers(build_parser()):
        if subcommands or not path:
            continue
        flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
        assert set(bash_complete(bash_script, " ".join(("queuectl",) + path) + " --")) == flags, path
    offered = bash_complete(bash_script, "queuectl enqueue --")
    assert {"--file", "--max-retries", "--delay", "--wait", "--db", "--debug"} <= set(offered)
    assert "--concurrency" not in offered


def test_bash_completes_choices(bash_script):
    assert bash_complete(bash_script, "queuectl --color ") == ["auto", "always", "never"]
    assert bash_complete(bash_script, "queuectl --color al") == ["always"]
    assert bash_complete(bash_script, "queuectl completion ") == ["bash", "zsh", "fish"]


def test_bash_completes_file_names_for_paths(bash_script, tmp_path):
    (tmp_path / "jobs.txt").write_text("true\n")
    (tmp_path / "queue.db").write_text("")
    (tmp_path / "logs").mkdir()
    assert bash_complete(bash_script, "queuectl enqueue --file jo", cwd=tmp_path) == ["jobs.txt"]
    assert bash_complete(bash_script, "queuectl --db qu", cwd=tmp_path) == ["queue.db"]
    assert bash_complete(bash_script, "queuectl status --db qu", cwd=tmp_path) == ["queue.db"]
    assert bash_complete(bash_script, "queuectl worker start --detach --log lo", cwd=tmp_path) == ["logs"]
    assert bash_complete(bash_script, "queuectl enqueue --cwd ", cwd=tmp_path) == ["logs"]  # directories only


def test_bash_copes_with_enqueues_command_words(bash_script, tmp_path):
    # The command (argparse.REMAINDER) gets no words of the script's own: bash then
    # completes file names (`complete -o bashdefault`), as for any command line.
    (tmp_path / "build.sh").write_text("")
    assert "complete -o bashdefault -F" in bash_script.read_text()
    assert bash_complete(bash_script, "queuectl enqueue ./bu", cwd=tmp_path) == []
    assert bash_complete(bash_script, "queuectl enqueue ls bu", cwd=tmp_path) == []
    # Options and their values before it, global ones included, are followed.
    assert "--priority" in bash_complete(bash_script, "queuectl --db x.db enqueue --queue q --")
    assert bash_complete(bash_script, "queuectl --db x.db enqueue --file bu", cwd=tmp_path) == ["build.sh"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (.ci/run installs it)")
def test_zsh_completes_subcommands_options_and_choices(tmp_path):
    directory = tmp_path / "functions"
    directory.mkdir()
    script("zsh", tmp_path).rename(directory / "_queuectl")
    lines = ["queuectl dl", "queuectl dlq ", "queuectl enqueue --", "queuectl --color ", "queuectl worker "]
    result = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER, "driver", directory, *lines], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    offers = [set(line.split()) for line in result.stdout.decode().splitlines()]
    assert len(offers) == len(lines), result.stdout
    assert offers[0] == {"dlq"}
    assert offers[1] == {"list", "retry", "purge"}
    assert {"--file", "--max-retries", "--wait", "--db"} <= offers[2] and "--concurrency" not in offers[2]
    assert offers[3] == {"auto", "always", "never"}
    assert offers[4] == {"start", "stop"}


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (.ci/run installs it)")
def test_fish_completes_subcommands_options_and_choices(tmp_path):
    path = script("fish", tmp_path)

    def fish_complete(line: str) -> set[str]:
        result = subprocess.run(["fish", "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", path, line],
                                capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert result.returncode == 0, result.stderr
        return {row.split("\t")[0] for row in result.stdout.splitlines()}

    assert fish_complete("queuectl dl") == {"dlq"}
    assert fish_complete("queuectl dlq ") == {"list", "retry", "purge"}
    assert fish_complete("queuectl config ") == {"list", "get", "set", "unset"}
    offered = fish_complete("queuectl enqueue --")
    assert {"--file", "--max-retries", "--wait", "--db"} <= offered and "--concurrency" not in offered
    assert fish_complete("queuectl --color ") == {"auto", "always", "never"}
    (tmp_path / "jobs.txt").write_text("")
    assert fish_complete("queuectl enqueue --file jo") == {"jobs.txt"}


def test_an_unknown_shell_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "queuectl", "completion", "powershell"], capture_output=True, text=True,
                            env=env_for(str(tmp_path / "queue.db")), timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: queuectl completion ")
    assert "invalid choice: 'powershell'" in result.stderr


def test_completion_imports_no_sqlalchemy_and_opens_no_database(tmp_path):
    db = tmp_path / "queue.db"
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "queuectl", "completion", "bash"],
                            capture_output=True, text=True, env=env_for(str(db)), cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    assert "complete -o bashdefault -F" in result.stdout
    modules = imported_modules(result.stderr)
    assert "shtab" in modules  # the parse saw the real imports
    assert [m for m in modules if m.split(".")[0] in ("sqlalchemy", "alembic", "psutil")] == []
    assert list(tmp_path.iterdir()) == []
