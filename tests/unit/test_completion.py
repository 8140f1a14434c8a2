"""Completion reads each command's options table: flags, choices, and the value kind on the option itself."""

import argparse
import subprocess
import sys

from agentsh.base.state import Store
from agentsh.cli import completion
from agentsh.cli.options import CREDENTIAL, DIR, FILE, FLAG, Arg, Command, Option
from tests.unit.test_options import REPO

TOY = Command("ab-toy", options=(
    Option("--where", value=DIR), Option("--key", value=FILE), Option("--secret", value=CREDENTIAL),
    Option("--mode", choices=("a", "b")), Option("--quiet", kind=FLAG), Option("--internal", hidden=True),
    Option("--free")),
    args=(Arg("name", value=CREDENTIAL), Arg("target", nargs="?", value=DIR)))


def toy(monkeypatch):
    monkeypatch.setattr(completion, "commands", lambda: {"ab-toy": "x:main"})
    monkeypatch.setattr(completion, "table", lambda name: TOY if name == "ab-toy" else None)


def test_value_kinds_come_from_the_option(monkeypatch, isolated_dirs):
    toy(monkeypatch)
    creds = isolated_dirs["XDG_DATA_HOME"] / "agentsh" / "creds" / "global"
    creds.mkdir(parents=True)
    (creds / "GH_TOKEN.json").write_text("{}")
    assert completion.candidates(["ab-toy", "--where", ""], 2) == [completion.DIRS]
    assert completion.candidates(["ab-toy", "--key", "x"], 2) == [completion.FILES]
    assert completion.candidates(["ab-toy", "--secret", "G"], 2) == ["GH_TOKEN"]
    assert completion.candidates(["ab-toy", "--mode", ""], 2) == ["a", "b"]
    assert completion.candidates(["ab-toy", "--free", ""], 2) == []
    assert completion.candidates(["ab-toy", ""], 1) == ["GH_TOKEN"]
    assert completion.candidates(["ab-toy", "--quiet", "--free", "v", "N", ""], 5) == [completion.DIRS]


def test_hidden_options_are_not_offered(monkeypatch):
    toy(monkeypatch)
    assert completion.candidates(["ab-toy", "--"], 1) == ["--free", "--help", "--key", "--mode", "--quiet",
                                                           "--secret", "--where"]
    assert "--enter" not in completion.candidates(["ab-hook", "--"], 1)


def test_subcommands_and_their_options():
    assert completion.candidates(["ab-creds", ""], 1)[:3] == ["set", "get", "ls"]
    assert completion.candidates(["ab-creds", "set", "X", "--from-file", ""], 4) == [completion.FILES]
    assert completion.candidates(["ab-creds", "import", ""], 2)[:2] == ["claude", "codex"]
    assert completion.candidates(["ab-wt", "--"], 1) == ["--help"]  # ab-wt dispatches by hand: still a table
    assert "--delete-branch" in completion.candidates(["ab", "wt", "rm", "--"], 3)
    assert completion.candidates(["ab-net", "allow", "h", ""], 3) == [completion.DIRS]


def worktree_records(*names, repo_dir):
    from agentsh.app import worktree

    repo = worktree.find_repo(str(repo_dir))
    for name in names:
        Store().write(repo.record_rel(name), {"name": name})
    return repo


def test_new_names_are_not_completed_with_existing_ones(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path / "app")], check=True)
    worktree_records("fix-login", repo_dir=tmp_path / "app")
    monkeypatch.chdir(tmp_path / "app")
    assert completion.candidates(["ab-wt", "rm", ""], 2) == ["fix-login"]
    assert completion.candidates(["ab-wt", "new", ""], 2) == []
    assert completion.candidates(["ab-exec", "--wt", ""], 2) == ["fix-login"]


def test_worktrees_are_those_of_the_repo_holding_the_directory(tmp_path, monkeypatch):
    for name in ("app", "other"):
        subprocess.run(["git", "init", "-q", str(tmp_path / name)], check=True)
    (tmp_path / "app" / "src").mkdir()
    worktree_records("fix-login", "feat/search", repo_dir=tmp_path / "app")
    worktree_records("elsewhere", repo_dir=tmp_path / "other")
    monkeypatch.chdir(tmp_path / "app" / "src")
    assert completion.worktrees() == ["feat/search", "fix-login"]
    assert completion.candidates(["ab", "wt", "path", ""], 3) == ["feat/search", "fix-login"]
    assert completion.candidates(["ab-wt", "rm", "--dir", str(tmp_path / "other"), ""], 4) == ["elsewhere"]
    assert completion.candidates(["ab-exec", f"--dir={tmp_path / 'other'}", "--wt", ""], 3) == ["elsewhere"]
    monkeypatch.chdir(tmp_path)  # in no repository: none
    assert completion.candidates(["ab-wt", "rm", ""], 2) == []
    assert completion.candidates(["ab-agent", "--wt", ""], 2) == []


def test_option_equals_value_words():
    Store().write("images/x.json", {"image": "localhost/x:1"})
    assert completion.candidates(["ab-exec", "--image=localhost/x"], 1) == ["--image=localhost/x:1"]
    assert completion.candidates(["ab", "exec", "--network="], 2) == [f"--network={m}" for m in
                                                                        ("full", "none", "allow", "learn")]
    assert completion.candidates(["ab-exec", "--dir=sr"], 1) == [completion.DIRS]
    assert completion.candidates(["ab-creds", "set", "X", "--from-file=./en"], 3) == [completion.FILES]
    assert completion.candidates(["ab-exec", "--nosuch="], 1) == []


def test_agent_profiles_are_completed():
    assert {"claude", "codex", "shell"} <= set(completion.candidates(["ab-agent", ""], 1))
    assert completion.candidates(["ab-agent", "cl"], 1) == ["claude"]


def test_the_command_line_after_ab_exec_is_another_programs():
    # "@rest N": words[N:] are that program's, for the shell to complete as such (zsh: _normal)
    assert completion.candidates(["ab-exec", "--dir", "x", "make", ""], 4) == ["@rest 3"]
    assert completion.candidates(["ab-exec", "--", ""], 2) == ["@rest 2"]
    assert completion.candidates(["ab", "exec", "--", "ls", "--al"], 4) == ["@rest 3"]
    assert completion.candidates(["ab-exec", "-e", "X", "--", "ls", "/tm"], 5) == ["@rest 4"]
    assert completion.candidates(["ab-exec", ""], 1) == ["@rest 1"]
    assert "--dir" in completion.candidates(["ab-exec", "--"], 1)  # an option being typed is still ours
    assert completion.candidates(["ab-exec", "--dir", ""], 2) == [completion.DIRS]
    assert completion.candidates(["ab-agent", "claude", "--", "--"], 3) == []  # the agent's own flags


def test_completion_leaves_argparse_alone():
    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    completion.candidates(["ab-creds", "set", "--"], 2)
    assert (argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args) == saved
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from agentsh.cli import completion\n"
            "completion.candidates(['ab-exec', '--'], 1); completion.candidates(['ab', 'up', '--j'], 2)\n"
            "print('argparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-S", "-c", code, REPO], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"
