"""The cd hook and completions in real interactive bash, zsh and xonsh, with real sandboxes."""

import json

import pytest

from tests.conftest import ab, inspect, podman
from tests.shell.conftest import HOST_PROMPT, SHELLS, blocked_lines

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sandbox_env")]
SANDBOX_BANNER = "built-in shell (ash)"  # what the tiny image's sh prints when it starts interactively


def project(path, text="# agentsh project\n", allow=True):
    path.mkdir(parents=True, exist_ok=True)
    (path / ".agentsh.toml").write_text(text)
    if allow:
        ab("ab-allow", str(path), check=True)
    return path


def cd(shell, variable):
    """The command that changes into the directory held in a shell variable."""
    return f"cd ${variable}" if shell == "xonsh" else f'cd "${variable}"'


@pytest.mark.parametrize("shell", SHELLS)
def test_cd_into_an_allowed_repo_enters_its_sandbox_and_exit_returns(shell, open_shell, repo, tmp_path):
    project(repo)
    (repo / "sub").mkdir()
    term = open_shell(shell, P=str(repo), SUB=str(repo / "sub"), OUT=str(tmp_path))

    term.type(cd(shell, "P"))
    term.wait_for(SANDBOX_BANNER)
    inside = term.run_inside('echo "in=$AGENTSH_SANDBOX at $(pwd)"; echo written-inside > inside.txt')
    name = inspect_name(repo)
    assert f"in={name} at {repo}" in inside
    assert (repo / "inside.txt").read_text() == "written-inside\n"

    term.leave_sandbox()
    back = term.run("pwd")
    assert str(repo) in back and SANDBOX_BANNER not in back
    # Moving inside the project does not enter again; leaving and coming back does.
    moved = term.run(cd(shell, "SUB"))
    assert SANDBOX_BANNER not in moved
    term.run(cd(shell, "OUT"))
    term.type(cd(shell, "P"))
    term.wait_for(SANDBOX_BANNER, count=2)
    term.leave_sandbox()
    assert term.screen().count(SANDBOX_BANNER) == 2


def inspect_name(path):
    from agentsh.host import project as project_mod

    name = project_mod.find(str(path)).sandbox
    assert inspect(name)["State"]["Status"] == "running"
    return name


@pytest.mark.parametrize("shell", SHELLS)
def test_a_blocked_repo_prints_one_line_and_stays_on_the_host(shell, open_shell, tmp_path):
    blocked = project(tmp_path / "blocked", allow=False)
    (blocked / "deeper").mkdir()
    term = open_shell(shell, B=str(blocked), D=str(blocked / "deeper"), OUT=str(tmp_path))

    entered = term.run(cd(shell, "B"))
    assert blocked_lines(entered) == 1
    assert "agentsh" not in entered.replace("agentsh: .agentsh.toml is blocked", "")
    assert "not-in-a-sandbox" in term.run("env | grep AGENTSH_SANDBOX= || printf '%s-%s\\n' not in-a-sandbox")
    assert blocked_lines(term.run(cd(shell, "D"))) == 0  # once per entry, not per cd
    term.run(cd(shell, "OUT"))
    assert blocked_lines(term.run(cd(shell, "B"))) == 1
    assert podman("ps", "-a", "--filter", f"label=io.agentsh.project={blocked}", "--format", "json").stdout.strip() in ("", "[]")


@pytest.mark.parametrize("shell", SHELLS)
def test_up_mode_marks_the_prompt_and_an_edit_blocks_again(shell, open_shell, tmp_path):
    proj = project(tmp_path / "upmode", '[hook]\non_enter = "up"\n')
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))

    entered = term.run(cd(shell, "P"))
    assert "(ab) " + HOST_PROMPT in entered and blocked_lines(entered) == 0
    assert SANDBOX_BANNER not in entered
    name = inspect_name(proj)  # running
    status = json.loads(ab("ab-status", "--json", str(proj), check=True).stdout)
    assert (status["trust"], status["on_enter"], status["sandbox"], status["state"]) == ("allowed", "up", name, "running")
    assert "(ab) " + HOST_PROMPT in term.run("echo still-marked")
    left = term.run(cd(shell, "OUT"))
    assert "(ab) " + HOST_PROMPT not in left.split("\n", 1)[1]

    (proj / ".agentsh.toml").write_text('[hook]\non_enter = "up"\n# edited\n')
    again = term.run(cd(shell, "P"))
    assert blocked_lines(again) == 1 and "(ab) " + HOST_PROMPT not in again


@pytest.mark.parametrize("shell", SHELLS)
def test_strange_directory_names_are_data_never_code(shell, open_shell, tmp_path):
    strange = {
        "SPACE": tmp_path / "with space",
        "QUOTES": tmp_path / "it's \"quoted\"",
        "SUBST": tmp_path / "$(touch pwned-subst)",
        "BACKTICK": tmp_path / "`touch pwned-tick`",
        "NEWLINE": tmp_path / "new\nline;touch pwned-nl",
    }
    for path in strange.values():
        project(path, allow=False)
    allowed = project(tmp_path / "ok $(touch pwned-allowed) it's \"fine\"")
    term = open_shell(shell, OUT=str(tmp_path), ALLOWED=str(allowed), **{k: str(v) for k, v in strange.items()})

    for variable in strange:
        shown = term.run(cd(shell, variable))
        assert blocked_lines(shown) == 1, (variable, shown)
        term.run(cd(shell, "OUT"))
    term.type(cd(shell, "ALLOWED"))
    term.wait_for(SANDBOX_BANNER)
    assert str(allowed) in term.run_inside("pwd")
    term.leave_sandbox()
    pwned = [p for p in tmp_path.rglob("pwned*")] + [p for p in (tmp_path / "home").rglob("pwned*")]
    assert pwned == []


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_offers_a_credential_created_a_moment_before(shell, open_shell, tmp_path):
    term = open_shell(shell, cwd=tmp_path)
    stored = term.run("echo s3cret-value | ab-creds set fresh_token_42 --env FRESH_TOKEN")
    assert "fresh_token_42" in stored
    term.type("ab-creds get fresh_to", enter=False)
    term.key("Tab")
    term.wait_for("ab-creds get fresh_token_42", timeout=30)
    term.key("C-u")
    term.run("")
    term.type("ab-image bu", enter=False)
    term.key("Tab")
    term.wait_for("ab-image build", timeout=30)


@pytest.mark.parametrize("shell", SHELLS)
def test_session_trust_lasts_for_this_shell_only(shell, open_shell, tmp_path):
    proj = project(tmp_path / "sess", '[hook]\non_enter = "none"\n', allow=False)
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))
    assert blocked_lines(term.run(cd(shell, "P"))) == 1
    assert "for this shell session" in term.run("ab-allow --session")
    status = term.run("ab-status --json --no-engine")
    assert json.loads(status[status.index("{"):status.rindex("}") + 1])["trust"] == "session"
    term.run(cd(shell, "OUT"))
    assert blocked_lines(term.run(cd(shell, "P"))) == 0
    other = open_shell(shell, P=str(proj))
    assert blocked_lines(other.run(cd(shell, "P"))) == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_opt_out(shell, open_shell, tmp_path):
    proj = project(tmp_path / "optout", allow=False)
    term = open_shell(shell, P=str(proj), OUT=str(tmp_path))
    term.run("ab-hook --disable")
    assert blocked_lines(term.run(cd(shell, "P"))) == 0
    term.run(cd(shell, "OUT"))
    term.run("ab-hook --enable")
    assert blocked_lines(term.run(cd(shell, "P"))) == 1
