"""Completion in real interactive bash, zsh and xonsh: what Tab puts on the command line.

No sandbox is made: completion reads agentsh's state and config on disk only.
"""

import subprocess

import pytest

from agentsh.app import worktree
from agentsh.base.state import Store
from tests.shell.conftest import SHELLS

pytestmark = pytest.mark.integration


def tab(term, text, expected, timeout=30):
    """Type `text`, press Tab, wait for `expected` on the screen; then clear the line."""
    term.type(text, enter=False)
    term.key("Tab")
    try:
        return term.wait_for(expected, timeout=timeout)
    finally:
        term.key("C-u")
        term.run("")


def git_repo(path):
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def worktree_record(repo_dir, name):
    repo = worktree.find_repo(str(repo_dir))
    Store().write(repo.record_rel(name), {"name": name, "path": str(repo_dir.parent / name)})


@pytest.mark.parametrize("shell", SHELLS)
def test_agent_names_complete_with_the_configs_own(shell, open_shell, tmp_path, user_config):
    user_config('[agents.mybot]\ncommand = ["mybot"]\n')
    term = open_shell(shell, cwd=tmp_path)
    tab(term, "ab agent cla", "ab agent claude")
    tab(term, "ab-agent myb", "ab-agent mybot")
    tab(term, "ab agent --new myb", "ab agent --new mybot")


@pytest.mark.parametrize("shell", SHELLS)
def test_file_names_and_option_equals_values(shell, open_shell, tmp_path):
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "path-file").write_text("")
    (tmp_path / "envfile").write_text("")
    (tmp_path / "subdir").mkdir()
    Store().write("images/only.json", {"image": "localhost/only:1"})
    term = open_shell(shell, cwd=tmp_path)
    # after `--`: another program's command line, completed as such (file names here)
    tab(term, "ab exec -- ls ./some/pa", "ab exec -- ls ./some/path-file")
    tab(term, "ab-exec -- cat ./env", "ab-exec -- cat ./envfile")
    # an option's FILE value, and --opt=value words
    tab(term, "ab creds set X --from-file ./en", "ab creds set X --from-file ./envfile")
    tab(term, "ab exec --image=localhost/on", "ab exec --image=localhost/only:1")
    tab(term, "ab exec --network=le", "ab exec --network=learn")
    tab(term, "ab exec --dir=./su", "ab exec --dir=./subdir/")


@pytest.mark.parametrize("shell", SHELLS)
def test_worktree_names_are_the_repo_holding_the_directorys(shell, open_shell, tmp_path):
    app = git_repo(tmp_path / "app")
    (app / "src").mkdir()
    other = git_repo(tmp_path / "other")
    worktree_record(app, "fix-login")
    worktree_record(other, "fix-other")
    term = open_shell(shell, cwd=app / "src")
    screen = tab(term, "ab wt rm fix", "ab wt rm fix-login")
    assert "fix-other" not in screen
    tab(term, "ab-wt path fi", "ab-wt path fix-login")
    tab(term, "ab exec --wt fi", "ab exec --wt fix-login")
    tab(term, f"ab wt rm --dir {other} fi", f"ab wt rm --dir {other} fix-other")


def test_bash_completes_a_directory_name_holding_a_newline(open_shell, tmp_path):
    (tmp_path / "nl\nname").mkdir()
    (tmp_path / "nlfile").write_text("")  # a file: not offered for a DIR
    term = open_shell("bash", cwd=tmp_path)
    screen = tab(term, "ab up nl", "ab up 'nl\nname'/")
    assert "nlfile" not in screen.split("ab up 'nl", 1)[1]
    # and the directory is the one word it names
    term.type("ab up nl", enter=False)
    term.key("Tab")
    term.wait_for("ab up 'nl\nname'/")
    term.key("C-a")
    term.type("printf '<%s>\\n' ", enter=False)
    term.key("C-e")
    term.key("Enter")
    term.wait_for("<ab>\n<up>\n<nl\nname/>")
