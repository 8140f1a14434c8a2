"""The hook's decision, session trust, ab-status, completion values and the printed hooks."""

import json
import os
import shlex
import shutil
import subprocess

import pytest

from agentsh.app import hooks
from agentsh.base.errors import AgentshError
from agentsh.base.state import Store
from agentsh.cli import completion
from agentsh.host import project
from agentsh.policy import config, trust
from tests.conftest import ab

BLOCKED = "agentsh: .agentsh.toml is blocked. Run 'ab-allow' to trust its content.\n"


def make_project(path, text="# project\n"):
    path.mkdir(parents=True, exist_ok=True)
    (path / ".agentsh.toml").write_text(text)
    return path


# -- finding and deciding ----------------------------------------------------------


def test_find_project_file_walks_up_and_skips_home_and_root(tmp_path):
    proj = make_project(tmp_path / "p")
    (proj / "a" / "b").mkdir(parents=True)
    assert hooks.find_project_file(str(proj / "a" / "b"), home="/nowhere") == str(proj)
    assert hooks.find_project_file(str(tmp_path), home="/nowhere") is None
    assert hooks.find_project_file(str(proj / "a"), home=str(proj)) is None  # home is never a project
    assert hooks.find_project_file("/", home="/nowhere") is None


def test_find_project_file_walks_the_real_path(tmp_path):
    proj = make_project(tmp_path / "real" / "p")
    (proj / "sub").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "into").symlink_to(proj / "sub")
    (tmp_path / "link").symlink_to(proj)
    assert hooks.find_project_file(str(tmp_path / "plain" / "into"), home="/nowhere") == str(proj)
    assert hooks.find_project_file(str(tmp_path / "link" / "sub"), home="/nowhere") == str(proj)
    assert hooks.find_project_file(str(tmp_path / "link"), home=str(tmp_path / "link")) is None  # home, by any path


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_walks_agree_with_project_find(shell, tmp_path):
    """The hooks' walk up (through "..") finds the directory agentsh.host.project.find decides on."""
    proj = make_project(tmp_path / "real" / "p")
    (proj / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "plain" / "x").mkdir(parents=True)
    (tmp_path / "plain" / "into").symlink_to(proj / "sub")
    (tmp_path / "link").symlink_to(proj)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".agentsh.toml").write_text("")
    hook = ab("ab-hook", shell, "--no-completions", check=True).stdout.decode()
    dirs = [proj / "sub" / "deep", tmp_path / "plain" / "into", tmp_path / "link" / "sub", tmp_path / "plain" / "x",
            tmp_path / "home", tmp_path]
    script = hook + "\n" + "".join(f"cd {shlex.quote(str(d))} && _agentsh_find && print_found\n" for d in dirs)
    script = "print_found() { printf '%s\\n' \"$_agentsh_found\"; }\n" + script
    proc = subprocess.run([shutil.which(shell), "-f" if shell == "zsh" else "--norc", "-c", script],
                          capture_output=True, text=True, env={"HOME": str(tmp_path / "home"), "PATH": os.defpath})
    assert proc.stderr == ""
    found = proc.stdout.split("\n")[:-1]
    assert [os.path.realpath(f) if f else None for f in found] == [str(proj)] * 3 + [None] * 3
    assert found[0] == str(proj) and found[2] == str(tmp_path / "link")  # no ".." where the logical path serves


def test_recheck_file_is_per_session_and_only_for_plain_ids(tmp_path):
    assert hooks.recheck_file("ab12cd34ef", str(tmp_path)) == str(tmp_path / "hook" / "ab12cd34ef.allowed")
    for bad in (None, "", "../../etc", "a/b", "x" * 65):
        assert hooks.recheck_file(bad, str(tmp_path)) is None


def test_ab_allow_leaves_word_for_its_sessions_hook_and_enter_takes_it(tmp_path, isolated_dirs):
    proj = make_project(tmp_path / "p", '[hook]\non_enter = "none"\n')
    env = {**os.environ, "AGENTSH_SESSION": "abcdef0123"}
    word = hooks.recheck_file("abcdef0123", str(isolated_dirs["XDG_STATE_HOME"] / "agentsh"))
    proc = ab("ab-hook", "--enter", str(proj), env=env)
    assert (proc.returncode, proc.stderr.decode()) == (hooks.ENTER_BLOCKED, BLOCKED)
    ab("ab-allow", str(make_project(tmp_path / "q")), env=env, check=True)  # another project
    assert os.path.exists(word)
    # still blocked: the recheck says nothing more, and takes the word
    proc = ab("ab-hook", "--recheck", str(proj), env=env)
    assert (proc.returncode, proc.stderr) == (hooks.ENTER_BLOCKED, b"") and not os.path.exists(word)
    ab("ab-allow", str(proj), env=env, check=True)
    assert ab("ab-hook", "--recheck", str(proj), env=env).returncode == hooks.ENTER_NOTHING
    assert not os.path.exists(word)


def test_printed_hooks_name_the_state_dir(isolated_dirs):
    for shell in ("bash", "zsh"):
        out = ab("ab-hook", shell, "--no-completions", check=True).stdout.decode()
        assert f"\n_agentsh_state={isolated_dirs['XDG_STATE_HOME'] / 'agentsh'}  #" in out


def test_bash_in_a_sandbox_says_where_it_is_when_ab_is_typed(tmp_path):
    """The interactive shell's command (sandbox.execute.wrapped), run by the host's sh, bash and dash."""
    from agentsh.policy.shell import shell_command
    from agentsh.sandbox import execute

    shrc = os.path.join(os.path.dirname(hooks.__file__), "..", "data", "sandbox", "shrc")
    text = execute.wrapped(shell_command(None, True), "tok")[-1]
    assert text.startswith("command -v bash ") and "/run/agentsh/lib/shrc" in text
    text = text.replace("/run/agentsh/lib/shrc", os.path.realpath(shrc)).replace("bash -l", "bash --norc -i")
    for sh in filter(shutil.which, ("dash", "sh")):
        proc = subprocess.run([sh, "-c", text], input="ab status\nab-exec x\nnosuchcmd\nexit\n", text=True,
                              capture_output=True, env={"PATH": os.defpath, "AGENTSH_SANDBOX": "ab-x-12345678"})
        said = proc.stderr
        assert "ab: this shell runs inside the sandbox ab-x-12345678" in said, said
        assert "ab-exec: this shell runs inside the sandbox ab-x-12345678" in said
        assert "bash: nosuchcmd: command not found" in said


def test_sh_in_a_sandbox_reads_the_startup_file_run_sets(tmp_path):
    shrc = os.path.realpath(os.path.join(os.path.dirname(hooks.__file__), "..", "data", "sandbox", "shrc"))
    for sh in filter(shutil.which, ("dash", "busybox")):
        argv = [sh, "sh", "-i"] if sh.endswith("busybox") else [sh, "-i"]
        proc = subprocess.run(argv, input="ab status; echo status=$?\nexit\n", text=True, capture_output=True,
                              env={"PATH": os.defpath, "ENV": shrc, "AGENTSH_SANDBOX": "ab-x-12345678"})
        assert "ab: this shell runs inside the sandbox ab-x-12345678" in proc.stderr and "status=127" in proc.stdout


def test_decide_follows_trust_and_on_enter(tmp_path, monkeypatch):
    store = Store()
    proj = make_project(tmp_path / "p")
    assert hooks.decide(str(tmp_path / "p"), store).action == hooks.BLOCKED
    trust.allow(store, str(proj / ".agentsh.toml"))
    decision = hooks.decide(str(proj), store)
    assert (decision.action, decision.trust, decision.project.root) == (hooks.SHELL, trust.ALLOWED, str(proj))
    for mode in ("up", "none"):
        (proj / ".agentsh.toml").write_text(f'[hook]\non_enter = "{mode}"\n')
        assert hooks.decide(str(proj), store).action == hooks.BLOCKED  # edited: blocked again
        trust.allow(store, str(proj / ".agentsh.toml"))
        assert hooks.decide(str(proj), store).action == mode
    trust.deny(store, str(proj / ".agentsh.toml"))
    assert hooks.decide(str(proj), store).action == hooks.BLOCKED
    assert hooks.decide(str(tmp_path), store).action == hooks.NONE


@pytest.mark.parametrize("environ", [{"AGENTSH_HOOK": "off"}, {"AGENTSH_HOOK": "OFF"}, {"AGENTSH_SANDBOX": "ab-x"}])
def test_decide_does_nothing_when_off_or_inside_a_sandbox(tmp_path, environ):
    make_project(tmp_path / "p")
    assert hooks.decide(str(tmp_path / "p"), Store(), environ=environ).action == hooks.OFF


# -- session trust -------------------------------------------------------------------


def test_session_trust_is_for_one_session_and_one_content(tmp_path, monkeypatch):
    store = Store()
    path = str(make_project(tmp_path / "p") / ".agentsh.toml")
    data = trust.read_file(path)
    trust.allow(store, path, session="sessionA1")
    assert trust.status(store, path, data, session="sessionA1") == trust.ALLOWED
    assert trust.status(store, path, data, session="sessionB2") == trust.BLOCKED
    assert trust.status(store, path, data, session=False) == trust.BLOCKED
    assert os.path.exists(store.path(f"trust/session/sessionA1/{trust._path_key(path)}.json"))
    # config.load (every command) honours the session of the shell it runs in
    monkeypatch.setenv("AGENTSH_SESSION", "sessionA1")
    assert config.load(project.find(str(tmp_path / "p")), store).project_trust == trust.ALLOWED
    monkeypatch.setenv("AGENTSH_SESSION", "../../etc")  # not an id: ignored, never a path
    assert trust.session_id() is None
    assert config.load(project.find(str(tmp_path / "p")), store).project_trust == trust.BLOCKED
    monkeypatch.setenv("AGENTSH_SESSION", "sessionA1")
    (tmp_path / "p" / ".agentsh.toml").write_text("# changed\n")
    assert config.load(project.find(str(tmp_path / "p")), store).project_trust == trust.BLOCKED


def test_session_allow_does_not_lift_a_denial(tmp_path):
    store = Store()
    path = str(make_project(tmp_path / "p") / ".agentsh.toml")
    trust.deny(store, path)
    with pytest.raises(AgentshError, match="denied"):
        trust.allow(store, path, session="sessionA1")


def test_ab_allow_session_needs_the_hooks_session(tmp_path):
    proj = make_project(tmp_path / "p")
    env = {k: v for k, v in os.environ.items() if k != "AGENTSH_SESSION"}
    proc = ab("ab-allow", "--session", str(proj), env=env)
    assert proc.returncode == 125 and b"AGENTSH_SESSION" in proc.stderr and b"ab-hook" in proc.stderr
    proc = ab("ab-allow", "--session", str(proj), env={**env, "AGENTSH_SESSION": "abcdef0123"}, check=True)
    assert proc.stdout.decode().strip() == f"allowed {proj}/.agentsh.toml for this shell session"


# -- ab-status -------------------------------------------------------------------------


def test_status_says_why(tmp_path, monkeypatch):
    store = Store()
    proj = make_project(tmp_path / "p")
    path = str(proj / ".agentsh.toml")
    report = hooks.status_report(str(proj), store, engine=False)
    assert (report["trust"], report["state"], report["on_enter"]) == ("blocked", "absent", "shell")
    assert "never allowed" in report["reason"]
    trust.allow(store, path)
    assert hooks.status_report(str(proj), store, engine=False)["trust"] == "allowed"
    (proj / ".agentsh.toml").write_text("# edited\n")
    assert "changed since" in hooks.status_report(str(proj), store, engine=False)["reason"]
    trust.allow(store, path, session="sessionA1")
    monkeypatch.setenv("AGENTSH_SESSION", "sessionA1")
    assert hooks.status_report(str(proj), store, engine=False)["trust"] == "session"
    trust.deny(store, path)
    assert hooks.status_report(str(proj), store, engine=False)["trust"] == "denied"
    plain = hooks.status_report(str(tmp_path), store, engine=False)
    assert (plain["trust"], plain["project"], plain["on_enter"]) == ("none", str(tmp_path), None)


def test_ab_status_json_keys_and_prompt(tmp_path):
    proj = make_project(tmp_path / "p")
    out = json.loads(ab("ab-status", "--json", "--no-engine", str(proj), check=True).stdout)
    assert set(out) == {"directory", "project", "project_file", "trust", "reason", "on_enter", "sandbox", "state",
                        "credentials", "hook", "inside_sandbox", "ports", "error", "widens", "stale", "apply",
                        "exec", "devcontainers", "devcontainer", "siblings"}
    assert out["sandbox"] == project.find(str(proj)).sandbox
    assert ab("ab-status", "--prompt", str(proj), check=True).stdout == b"ab:blocked\n"
    assert ab("ab-status", "--prompt", str(tmp_path), check=True).stdout == b""
    text = ab("ab-status", "--no-engine", str(proj), check=True).stdout.decode()
    assert "trust        blocked: never allowed" in text


def test_status_reports_a_broken_project_file_instead_of_failing(tmp_path):
    store = Store()
    proj = make_project(tmp_path / "p", "pids = [\n")
    trust.allow(store, str(proj / ".agentsh.toml"))
    report = hooks.status_report(str(proj), store, engine=False)
    assert report["trust"] == "allowed" and "invalid TOML" in report["error"]


# -- ab-hook ----------------------------------------------------------------------------


def test_enter_answers_with_exit_statuses(tmp_path):
    proj = make_project(tmp_path / "p")
    proc = ab("ab-hook", "--enter", str(proj))
    assert (proc.returncode, proc.stderr.decode(), proc.stdout) == (hooks.ENTER_BLOCKED, BLOCKED, b"")
    assert ab("ab-hook", "--enter", str(tmp_path)).returncode == hooks.ENTER_NOTHING
    ab("ab-allow", str(proj), check=True)
    # "shell" with no terminal to hand over: nothing happens, nothing is started
    proc = ab("ab-hook", "--enter", str(proj))
    assert (proc.returncode, proc.stderr) == (hooks.ENTER_NOTHING, b"")
    assert ab("ab-hook", "--decide", str(proj), check=True).stdout == b"shell\n"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_printed_hooks_parse_and_name_this_install(shell):
    out = ab("ab-hook", shell, check=True).stdout.decode()
    assert f"_agentsh_bin={shutil.which('ab-hook')}" in out
    assert "_agentsh_complete_bin=" in out
    assert subprocess.run([shutil.which(shell), "-n"], input=out.encode()).returncode == 0
    only = ab("ab-hook", shell, "--completions", check=True).stdout.decode()
    assert "_agentsh_hook" not in only and ("compdef" in only or "-F _agentsh_complete" in only)


def test_printed_xonsh_hook_names_import_paths(tmp_path):
    out = ab("ab-hook", "xonsh", check=True).stdout.decode()
    assert "_agentsh_paths = ['" in out and "xontrib load agentsh" in out and "register_xonsh" in out


def test_disable_without_the_hook_prints_code_to_eval():
    assert ab("ab-hook", "--disable", check=True).stdout == b"AGENTSH_HOOK=off; export AGENTSH_HOOK\n"


def bash_hook_trace(tmp_path, script):
    """Run the bash hook non-interactively with a stub ab-hook that logs its arguments."""
    stub = tmp_path / "stub-ab-hook"
    log = tmp_path / "calls"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {log}\nexit 0\n')
    stub.chmod(0o755)
    hook = ab("ab-hook", "bash", "--no-completions", check=True).stdout.decode()
    hook = hook.replace(f"_agentsh_bin={shutil.which('ab-hook')}", f"_agentsh_bin={stub}")
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    proc = subprocess.run(["bash", "--norc", "-c", hook + "\nPATH=" + str(empty) + "\n" + script],
                          capture_output=True, text=True, env={"HOME": str(tmp_path / "home")})
    return proc, (log.read_text().split("\n")[:-1] if log.exists() else [])


def test_bash_fast_path_runs_no_command(tmp_path):
    plain = tmp_path / "plain" / "deep"
    plain.mkdir(parents=True)
    proj = make_project(tmp_path / "proj dir $(touch pwned)")
    (proj / "sub").mkdir()
    script = (f'cd "{plain}"; for i in 1 2 3; do _agentsh_hook; done\n'
              f"cd {proj.as_posix()!r}/sub; _agentsh_hook; _agentsh_hook; cd ..; _agentsh_hook\n")
    proc, calls = bash_hook_trace(tmp_path, script)
    assert proc.stderr == "" and proc.returncode == 0  # an external command would be "not found"
    assert calls == ["--enter", f"{proj}/sub"]  # once, on entering; the path as one argument
    assert not list(tmp_path.rglob("pwned"))


def test_hook_functions_have_no_command_substitution():
    for name in ("agentsh.bash", "agentsh.zsh"):
        text = hooks.read_resource("shellhooks", name)
        body = text[text.index("_agentsh_hook() {"):text.index("_agentsh_mark() {")]
        assert "$(" not in body and "`" not in body and "eval" not in body


# -- completion ------------------------------------------------------------------------


def test_completion_values_come_from_disk(isolated_dirs):
    store = Store()
    creds = isolated_dirs["XDG_DATA_HOME"] / "agentsh" / "creds"
    for scope, name in (("global", "GH_TOKEN"), ("0123abcd", "proj_key")):
        (creds / scope).mkdir(parents=True, exist_ok=True)
        (creds / scope / f"{name}.json").write_text("{}")
    (creds / "global" / "half.json.tmp.123").write_text("")
    store.write("sandboxes/ab-app-12345678.json", {"name": "ab-app-12345678"})
    store.write("images/localhost_mine_latest.json", {"image": "localhost/mine:latest"})
    (isolated_dirs["XDG_STATE_HOME"] / "agentsh" / "images" / "torn.json").write_text("{")
    assert completion.credentials() == ["GH_TOKEN", "proj_key"]
    assert completion.sandboxes() == ["ab-app-12345678"]
    assert completion.images() == ["localhost/agentsh:latest", "localhost/mine:latest"]


def test_completion_with_nothing_on_disk_is_empty():
    assert (completion.credentials(), completion.worktrees(), completion.sandboxes()) == ([], [], [])


def test_completion_reads_each_commands_parser(isolated_dirs):
    Store().write("images/x.json", {"image": "localhost/x:1"})
    assert "status" in completion.candidates(["ab", ""], 1) and "hook" in completion.candidates(["ab", ""], 1)
    assert completion.candidates(["ab", "st"], 1) == ["status"]
    assert {"--json", "--no-engine", "--prompt"} <= set(completion.candidates(["ab-status", "--"], 1))
    assert {"--session", "--help"} <= set(completion.candidates(["ab", "allow", "--"], 2))
    assert completion.candidates(["ab-up", ""], 1) == [completion.DIRS]
    assert completion.candidates(["ab-up", "--image", "localhost/x"], 2) == ["localhost/x:1"]
    assert completion.candidates(["ab-hook", "z"], 1) == ["zsh"]
    assert completion.candidates(["ab-no-such", ""], 1) == []


def test_completing_ab_exec_and_ab_up_never_runs_them(isolated_dirs, monkeypatch, tmp_path):
    # Both have a hand-parsed fast path that would act on plain arguments.
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine to reach, should anything try
    assert "--dir" in completion.candidates(["ab-exec", "--"], 1)
    assert "--json" in completion.candidates(["ab-up", "--j"], 1)
    assert "--json" in completion.candidates(["ab", "up", "dir", "--j"], 3)
    assert not os.path.exists(os.path.join(str(isolated_dirs["XDG_STATE_HOME"]), "agentsh", "sandboxes"))
