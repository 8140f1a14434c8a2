"""The cd hook's own state in real bash, zsh and xonsh: opting out, symlinks, dynamic prompts, ab-allow,
and what a user sees when the sandbox goes away or `ab` is typed inside it."""

import os

import pytest

from agentsh.host import project as project_mod
from tests.conftest import ab, podman
from tests.shell.conftest import HOST_PROMPT, SHELLS, blocked_lines
from tests.shell.test_cd_hook import SANDBOX_BANNER, cd, project

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sandbox_env")]
MARKED = "(ab) " + HOST_PROMPT
UP = '[hook]\non_enter = "up"\n'


def export_off(shell):
    return "$AGENTSH_HOOK = 'off'" if shell == "xonsh" else "export AGENTSH_HOOK=off"


def unset_off(shell):
    return "del $AGENTSH_HOOK" if shell == "xonsh" else "unset AGENTSH_HOOK"


def after(screen, command):
    """What the screen shows from the last line where `command` was typed."""
    return screen[screen.rindex(command):]


@pytest.mark.parametrize("shell", SHELLS)
def test_agentsh_hook_off_forgets_the_project_as_disable_does(shell, open_shell, tmp_path):
    proj = project(tmp_path / "p")
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))
    term.type(cd(shell, "P"))
    term.wait_for(SANDBOX_BANNER)
    term.leave_sandbox()
    term.run(export_off(shell))
    term.run("cd ..")
    term.run(unset_off(shell))
    term.type(cd(shell, "P"))  # a project left while off: entering it again enters
    term.wait_for(SANDBOX_BANNER, count=2)
    term.leave_sandbox()


@pytest.mark.parametrize("shell", SHELLS)
def test_agentsh_hook_off_takes_the_up_mark_away(shell, open_shell, tmp_path):
    proj = project(tmp_path / "up", UP)
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))
    assert MARKED in term.run(cd(shell, "P"))
    off = term.run(export_off(shell))
    assert MARKED not in off.split("\n", 1)[1]
    assert MARKED not in term.run("cd ..").split("\n", 1)[1]
    term.run(unset_off(shell))
    assert MARKED in term.run(cd(shell, "P"))


@pytest.mark.parametrize("shell", SHELLS)
def test_a_project_reached_through_a_symlink_is_one_project(shell, open_shell, tmp_path):
    proj = project(tmp_path / "real" / "proj")
    (proj / "sub").mkdir()
    (tmp_path / "link").symlink_to(proj)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "into-sub").symlink_to(proj / "sub")  # a plain directory's link into the project's subdirectory
    term = open_shell(shell, LINK=str(tmp_path / "link"), REAL=str(proj), INTO=str(plain / "into-sub"),
                      OUT=str(tmp_path))
    term.type(cd(shell, "LINK"))
    term.wait_for(SANDBOX_BANNER)
    term.leave_sandbox()
    moved = term.run(cd(shell, "REAL"))  # the same directory by its real path: the same project
    assert SANDBOX_BANNER not in moved
    term.run(cd(shell, "OUT"))
    term.type(cd(shell, "INTO"))  # enters: the project holds the link's target
    term.wait_for(SANDBOX_BANNER, count=2)
    assert str(proj / "sub") in term.run_inside("pwd")
    term.leave_sandbox()
    assert term.screen().count(SANDBOX_BANNER) == 2


def dynamic_prompt(shell):
    """(rc lines before the hook, after it): the user's own code that rebuilds the prompt before each one."""
    if shell == "bash":
        return [f"PROMPT_COMMAND='PS1=\"{HOST_PROMPT}\"'"], []
    if shell == "zsh":
        return ["autoload -Uz add-zsh-hook", f"_rebuild() {{ PS1='{HOST_PROMPT}' }}", "add-zsh-hook precmd _rebuild",
                f"precmd() {{ PS1='{HOST_PROMPT}' }}"], []
    return [], ["@events.on_pre_prompt_format", "def _rebuild(**_):", f"    $PROMPT = {HOST_PROMPT!r}", ""]


@pytest.mark.parametrize("shell", SHELLS)
def test_the_up_mark_stays_on_a_prompt_the_users_code_rebuilds(shell, open_shell, tmp_path):
    proj = project(tmp_path / "up", UP)
    before, later = dynamic_prompt(shell)
    term = open_shell(shell, rc_before=before, rc_after=later, P=str(proj), OUT=str(tmp_path))
    assert MARKED not in term.run("echo first")
    assert MARKED in term.run(cd(shell, "P"))
    for word in ("one", "two"):
        assert MARKED in term.run(f"echo {word}")  # every prompt, not just the first
    assert MARKED not in term.run(cd(shell, "OUT")).split("\n", 1)[1]
    assert MARKED not in term.run("echo three").split("\n", 1)[1]


@pytest.mark.parametrize("shell", SHELLS)
def test_ab_allow_in_a_blocked_project_enters_at_the_next_prompt(shell, open_shell, tmp_path):
    proj = project(tmp_path / "p", allow=False)
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))
    assert blocked_lines(term.run(cd(shell, "P"))) == 1
    term.type("ab allow")
    term.wait_for(SANDBOX_BANNER)
    term.leave_sandbox()
    screen = term.screen()
    assert blocked_lines(screen) == 1 and screen.count(SANDBOX_BANNER) == 1
    # up mode: the mark
    up = project(tmp_path / "up", UP, allow=False)
    term.run(f"cd {up}")
    assert MARKED in term.run("ab-allow")
    # an ab-allow of another project leaves the blocked one blocked, without a second line
    other = project(tmp_path / "other", allow=False)
    blocked = project(tmp_path / "blocked", allow=False)
    term.run(f"cd {blocked}")
    shown = term.run(f"ab-allow {other}")
    assert blocked_lines(shown) == 0 and blocked_lines(term.run("echo next")) == 0
    assert blocked_lines(term.screen()) == 3  # on entering p, up and blocked


@pytest.mark.parametrize("shell", SHELLS)
def test_ab_allow_refuses_a_project_file_that_is_not_toml(shell, open_shell, tmp_path):
    proj = project(tmp_path / "p", 'pids = [\n[hook\n', allow=False)
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))
    assert blocked_lines(term.run(cd(shell, "P"))) == 1
    refused = term.run("ab allow")
    lines = [line for line in refused.split("\n")[1:] if line.strip() and HOST_PROMPT not in line]
    assert len(lines) == 1 and lines[0].startswith("ab-allow: ") and "invalid TOML" in lines[0], refused
    status = ab("ab-status", "--json", "--no-engine", str(proj), check=True).stdout.decode()
    assert '"trust": "blocked"' in status
    term.run(cd(shell, "OUT"))
    assert blocked_lines(term.run(cd(shell, "P"))) == 1  # still blocked; nothing was recorded


@pytest.mark.parametrize("shell", SHELLS)
def test_a_sandbox_stopped_from_outside_says_so_once(shell, open_shell, tmp_path):
    proj = project(tmp_path / "p")
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))
    term.type(cd(shell, "P"))
    term.wait_for(SANDBOX_BANNER)
    term.run_inside("echo inside")
    prompts = term.screen().count(HOST_PROMPT)
    podman("stop", "-t", "1", project_mod.find(str(proj)).sandbox)
    screen = term.wait_for(HOST_PROMPT, count=prompts + 1)
    said = screen[screen.rindex("echo inside"):]
    name = project_mod.find(str(proj)).sandbox
    assert len([line for line in said.split("\n") if "agentsh: " in line and name in line
                and "stopped" in line]) == 1, said
    # an ordinary exit says nothing of the kind
    term.run(cd(shell, "OUT"))
    term.type(cd(shell, "P"))
    term.wait_for(SANDBOX_BANNER, count=2)
    term.leave_sandbox()
    assert len([line for line in term.screen().split("\n") if "agentsh: " in line and "stopped" in line]) == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_ab_typed_inside_the_sandbox_says_where_it_is(shell, open_shell, tmp_path):
    proj = project(tmp_path / "p")
    term = open_shell(shell, P=str(proj))
    term.type(cd(shell, "P"))
    term.wait_for(SANDBOX_BANNER)
    said = term.run_inside("ab status; echo status=$?")
    assert "this shell runs inside the sandbox " + project_mod.find(str(proj)).sandbox in said, said
    assert "type exit (or Ctrl-D) to go back to the host shell" in said and "status=127" in said
    term.leave_sandbox()
    assert os.path.isdir(proj)
