"""Agent profiles, their config overrides, caches, ports and devcontainer in the spec, trust coverage, doctor."""

import os

import pytest

from agentsh.app import doctor
from agentsh.base.errors import ConfigError, UsageError
from agentsh.base.state import Store
from agentsh.host import project
from agentsh.policy import agents, caches, config, trust
from agentsh.sandbox import lifecycle as sandbox
from tests.conftest import git_init
from tests.unit.fake_engine import fake_engine


@pytest.fixture
def proj(tmp_path):
    return project.find(str(git_init(tmp_path / "repo")))


def test_builtin_profiles_have_what_the_issue_asks_for():
    assert set(agents.BUILTIN) == {"claude", "codex", "gemini", "opencode", "aider", "shell"}
    claude = agents.profile("claude")
    assert claude.command == ["claude"] and claude.permissive_args == ["--dangerously-skip-permissions"]
    assert agents.profile("codex").permissive_args == ["--dangerously-bypass-approvals-and-sandbox"]
    assert agents.profile("gemini").permissive_args == ["--yolo"]
    assert claude.imports == ["claude"] and "CLAUDE_CREDENTIALS" in claude.credentials
    assert claude.network == ["anthropic"] and agents.profile("codex").network == ["openai"]
    from agentsh.policy.netsets import SETS

    for name in agents.BUILTIN:
        p = agents.profile(name)
        assert all(s in SETS for s in p.network)
        assert all(path.startswith("~") for path in p.state)  # all under the per-project home volume
    assert "pip" in agents.profile("aider").install and "break-system-packages" in agents.profile("aider").install


def test_user_override_and_new_profile(user_config):
    user_config('[agents.claude]\nargs = ["--model", "opus"]\n[agents.mine]\ncommand = ["mytool", "run"]\n')
    cfg = config.load()
    claude = agents.profile("claude", cfg)
    assert claude.args == ["--model", "opus"] and claude.permissive_args == ["--dangerously-skip-permissions"]
    assert agents.profile("mine", cfg).command == ["mytool", "run"]
    assert agents.names(cfg)[-1] == "mine"
    with pytest.raises(UsageError, match="no agent profile named 'nope'"):
        agents.profile("nope", cfg)


@pytest.mark.parametrize("toml, message", [
    ('[agents.claude]\nargs = "x"', "key 'agents.claude.args' must be a list of strings"),
    ('[agents.claude]\nbogus = 1', "key 'agents.claude.bogus': unknown key"),
    ('[agents.claude]\nnetwork = ["nowhere"]', "unknown destination set 'nowhere'"),
    ('[agents.claude]\nenv = { "1X" = "y" }', "key 'agents.claude.env' must be a table"),
    ('[agents."Bad Name"]\ncommand = ["x"]', "is not a profile name"),
    ('[agents.mine]\ncommand = []', "key 'agents.mine.command' must not be empty"),
    ('caches = ["maven"]', "key 'caches': 'maven' is not a cache"),
    ('ports = ["99999"]', "key 'ports': port 99999"),
])
def test_config_errors_name_the_file_and_key(user_config, toml, message):
    path = user_config(toml + "\n")
    with pytest.raises(ConfigError) as e:
        config.load()
    assert str(path) in e.value.message and message in e.value.message


def test_launch_script_continue_safe_new_and_args():
    claude = agents.profile("claude")
    script = agents.launch_script(claude, [])
    assert "--continue" in script and "'--dangerously-skip-permissions'" in script
    assert "ab-creds import claude" in script and "command -v 'claude'" in script
    assert "--continue" not in agents.launch_script(claude, [], new=True)
    assert "--continue" not in agents.launch_script(claude, ["-p", "hi"])  # arguments: a specific invocation
    assert "dangerously" not in agents.launch_script(claude, [], safe=True)
    assert agents.command(agents.profile("shell"), config.load(), [])[0] == "sh"
    assert agents.command(agents.profile("shell"), config.load(), ["ls"]) == ["ls"]


def test_with_credentials_adds_for_one_run_only():
    cfg = config.load()
    run_cfg = agents.with_credentials(cfg, ["CLAUDE_CREDENTIALS"])
    assert run_cfg["credentials"] == ["CLAUDE_CREDENTIALS"] and cfg["credentials"] == []
    assert run_cfg.notices == cfg.notices


def test_caches_ports_and_publish_in_the_spec(proj, user_config):
    user_config('caches = ["go", "npm"]\nports = [3000]\n')
    engine, _ = fake_engine()
    want = sandbox.spec(proj, config.load(), engine, publish=["127.0.0.1:8080:80"])
    args = want.run_args
    assert "agentsh-cache-go:/var/cache/agentsh/go" in args and "agentsh-cache-npm:/var/cache/agentsh/npm" in args
    assert "GOMODCACHE=/var/cache/agentsh/go/mod" in args
    from agentsh.policy.ports import stable_host_port

    assert f"127.0.0.1:{stable_host_port(proj.root, 3000)}:3000/tcp" in args
    assert "127.0.0.1:8080:80/tcp" in args and f"{sandbox.LABEL_PUBLISH}=127.0.0.1:8080:80" in args
    assert sandbox.spec(proj, config.load(), engine).hash != want.hash


def test_up_keeps_publish_ports_until_the_next_p(proj):
    engine, runner = fake_engine()
    runner.images.add(config.DEFAULT_IMAGE)
    store = Store()
    sandbox.up(proj, config.load(), engine, store, publish=["9000"])
    runs = [c for c in runner.calls if c[0] == "run"]
    sandbox.up(proj, config.load(), engine, store)  # no -p: kept, nothing recreated
    assert [c for c in runner.calls if c[0] == "run"] == runs
    sandbox.up(proj, config.load(), engine, store, publish=["9001"])
    assert len([c for c in runner.calls if c[0] in ("run", "create")]) == 2


def test_instructions_file_is_mounted_read_only(proj, isolated_dirs):
    engine, _ = fake_engine()
    assert not any("AGENTS.md" in a for a in sandbox.spec(proj, config.load(), engine).run_args)
    path = isolated_dirs["XDG_CONFIG_HOME"] / "agentsh" / "AGENTS.md"
    path.parent.mkdir(parents=True)
    path.write_text("be brief\n")
    assert f"{path}:/run/agentsh/AGENTS.md:ro" in sandbox.spec(proj, config.load(), engine).run_args


DC = '{"image": "localhost/x:1", "containerEnv": {"A": "b", "H": "${localEnv:HOME}"}, "remoteUser": "dev",}'


def test_devcontainer_only_when_trusted_and_the_hash_covers_the_dockerfile(proj):
    root = proj.root
    os.makedirs(f"{root}/.devcontainer")
    with open(f"{root}/.devcontainer/devcontainer.json", "w") as f:
        f.write(DC)
    store = Store()
    engine, _ = fake_engine()
    cfg = config.load(proj, store)
    assert cfg.devcontainer is None and "is not trusted" in cfg.notices[0]
    anchor = trust.anchor(proj)
    trust.allow(store, anchor)
    cfg = config.load(proj, store)
    args = sandbox.spec(proj, cfg, engine).run_args
    assert "localhost/x:1" in args and "A=b" in args and "--user=dev" in args
    assert not any(a.startswith("H=") for a in args)
    assert "localhost/other:2" in sandbox.spec(proj, config.load(proj, store, {"image": "localhost/other:2"}),
                                              engine).run_args  # --image beats the devcontainer
    # a build: the Dockerfile joins what trust covers, and its tag follows its content
    with open(f"{root}/.devcontainer/devcontainer.json", "w") as f:
        f.write('{"build": {"dockerfile": "Dockerfile", "args": {"V": "1"}}}')
    with open(f"{root}/.devcontainer/Dockerfile", "w") as f:
        f.write("FROM scratch\n")
    assert trust.covered_files(anchor) == [f"{root}/.devcontainer/Dockerfile"]
    trust.allow(store, anchor)
    want = sandbox.spec(proj, config.load(proj, store), engine)
    assert want.image.startswith(f"localhost/agentsh-dc-{proj.key}:") and want.build["args"] == {"V": "1"}
    with open(f"{root}/.devcontainer/Dockerfile", "a") as f:
        f.write("RUN true\n")
    assert config.load(proj, store).devcontainer is None  # changed: untrusted again
    # with a project file, the devcontainer files are covered by its hash
    with open(f"{root}/.agentsh.toml", "w") as f:
        f.write("pids = 100\n")
    proj = project.find(root)
    assert trust.anchor(proj) == proj.config_file
    assert trust.covered_files(proj.config_file) == [f"{root}/.devcontainer/devcontainer.json",
                                                     f"{root}/.devcontainer/Dockerfile"]
    trust.allow(store, proj.config_file)
    assert config.load(proj, store)["pids"] == 100
    with open(f"{root}/.devcontainer/Dockerfile", "a") as f:
        f.write("RUN false\n")
    assert config.load(proj, store)["pids"] == 4096


def test_caches_are_user_config_only(proj, tmp_path):
    with open(f"{proj.root}/.agentsh.toml", "w") as f:
        f.write('caches = ["npm"]\n')
    proj = project.find(proj.root)
    store = Store()
    trust.allow(store, proj.config_file)
    with pytest.raises(ConfigError, match="key 'caches' can only be set in the user config"):
        config.load(proj, store)
    assert caches.spec_additions([])[0] == []


def test_doctor_hook_and_key_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert doctor.hook_check({"SHELL": "/bin/bash", "AGENTSH_SESSION": "abcdef0123456789"})["status"] == "ok"
    missing = doctor.hook_check({"SHELL": "/bin/zsh"})
    assert missing["status"] == "warn" and missing["fix"] == 'add to ~/.zshrc: eval "$(ab-hook zsh)"'
    (tmp_path / ".bashrc").write_text('eval "$(ab-hook bash)"\n')
    assert "not loaded in this shell" in doctor.hook_check({"SHELL": "/bin/bash"})["detail"]
    assert doctor.key_check()["status"] == "ok"
    from agentsh.creds import vault as creds

    creds.create_key()
    assert doctor.key_check()["status"] == "ok"
    os.chmod(creds._config_path(creds.KEY_FILE), 0o644)
    check = doctor.key_check()
    assert check["status"] == "fail" and check["fix"].startswith("run: chmod 600")
