"""What ab-exec hands a sandbox: engine calls, argv, imports, spec, importers."""

import json
import os
import socket
import subprocess
import textwrap

import pytest

from agentsh.base.state import Store
from agentsh.creds import delivery as inject
from agentsh.creds import vault as creds
from agentsh.host import project
from agentsh.policy import config
from agentsh.sandbox import lifecycle as sandbox
from tests.conftest import BIN
from tests.unit.fake_engine import fake_engine


def put(name, value, type_=creds.ENV, target=None, **kw):
    creds.put(Store(), name, creds.GLOBAL, creds.meta(type_, target or name, **kw), value)


def ab_exec(repo, *cmd):
    # A running sandbox as agentsh knows one: its init process recorded, and alive
    # (this test process stands in for it; the fake engine runs no containers).
    from agentsh.host import liveness

    liveness.remember(Store(), project.find(str(repo)).sandbox, os.getpid())
    proc = subprocess.run(["python", "-X", "importtime", str(BIN / "ab-exec"), "--", *cmd], cwd=repo,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    return proc, imported


def grant(repo, name):
    creds.grant(Store(), project.find(str(repo)), name)


def test_no_grants_means_no_crypto_import_and_one_engine_call(fake_podman, repo):
    put("UNGRANTED", b"v")  # stored, but not for this project
    proc, imported = ab_exec(repo, "true")
    assert proc.returncode == 0, proc.stderr
    assert not any(m.startswith("cryptography") for m in imported)
    assert "agentsh.creds.delivery" in imported  # the check did run
    assert [c.split()[0] for c in fake_podman.calls()] == ["exec"]


def test_env_credentials_travel_on_stdin_never_in_the_engines_env_or_argv(fake_podman, repo):
    put("GRANTED", b"env-secret-value")
    grant(repo, "GRANTED")
    proc, _ = ab_exec(repo, "true")
    assert proc.returncode == 0, proc.stderr
    write, run = fake_podman.calls()
    assert write.startswith("exec -i") and "env-secret-value" not in write
    assert " -e GRANTED " not in run and "env-secret-value" not in run
    assert b"export GRANTED='env-secret-value'" in fake_podman.stdin()
    assert fake_podman.env("GRANTED") == ["unset", "unset"]  # neither engine call saw it in its environment


def test_file_credentials_add_one_call_and_writeback_one_more(fake_podman, repo):
    put("TOKFILE", b"file-secret-value", creds.FILE, "/home/agent/.tool/token", writeback=False)
    grant(repo, "TOKFILE")
    proc, _ = ab_exec(repo, "true")
    assert proc.returncode == 0, proc.stderr
    made = fake_podman.calls()
    assert len(made) == 2 and made[0].startswith("exec -i") and "sh -c" in made[0]
    assert "file-secret-value" not in "".join(made)
    assert fake_podman.stdin() == b"file-secret-value"
    put("TOKFILE", b"file-secret-value", creds.FILE, "/home/agent/.tool/token", writeback=True)
    fake_podman.clear()
    proc, _ = ab_exec(repo, "true")
    assert len(fake_podman.calls()) == 3
    assert b"could not read back" in proc.stderr  # the fake engine answers nothing; exit status stands
    assert proc.returncode == 0


def test_missing_or_expired_grants_are_skipped_with_a_notice(fake_podman, repo):
    grant_store = Store()
    put("GONE", b"x")
    grant(repo, "GONE")
    creds.remove(grant_store, "GONE", creds.GLOBAL)
    put("OLD", b"x", ttl=1, now=1000)
    grant(repo, "OLD")
    proc, _ = ab_exec(repo, "true")
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "GONE is granted to this project but not stored" in err
    assert "OLD expired" in err and len(fake_podman.calls()) == 1


def test_write_script_round_trip_through_a_real_shell(tmp_path):
    """The injection and read-back scripts, run by sh against a stand-in tmpfs."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    home = tmp_path / "home"
    files = [inject.FileCredential("A", "global", str(home / ".a" / "token"), b"first\x00\n", True),
             inject.FileCredential("B", "global", str(home / "b.json"), b'{"b": 2}', True)]
    for f in files:
        f.stored = str(secrets / f.name)
    script = inject.write_script(files).replace(f"grep -q ' {inject.SECRETS_DIR} tmpfs ' /proc/mounts", "true")
    subprocess.run(["sh", "-c", script], input=b"first\x00\n" + b'{"b": 2}', check=True)
    assert (home / ".a" / "token").read_bytes() == b"first\x00\n" and os.path.islink(home / "b.json")
    assert oct(os.stat(secrets / "A").st_mode & 0o777) == "0o600"
    (home / "b.json").unlink()
    (home / "b.json").write_bytes(b"replaced by the agent")  # write-temp-and-rename style refresh
    out = subprocess.run(["sh", "-c", inject.read_back_script(files)], capture_output=True, check=True).stdout
    assert inject.parse_frames(out, 2) == [b"first\x00\n", b"replaced by the agent"]
    assert os.path.islink(home / "b.json") and (secrets / "B").read_bytes() == b"replaced by the agent"


def test_write_back_reseals_only_what_changed(tmp_path):
    put("T", b"v1", creds.FILE, "/home/agent/t", writeback=True)
    engine, _ = fake_engine()
    repo_proj = project.find(str(tmp_path))
    grant(tmp_path, "T")
    delivery = inject.prepare(repo_proj, config.load(), Store(), print)
    assert [f.value for f in delivery.files] == [b"v1"]
    answers = iter([(0, b"2\nv2", ""), (0, b"2\nv1", "")])
    engine.runner = lambda argv, input=None, timeout=None: next(answers)
    assert inject.write_back(engine, "sb", delivery, Store(), print) == ["T"]
    assert creds.reveal(creds.read_record("T", creds.GLOBAL)) == b"v2"
    put("T", b"v3", creds.FILE, "/home/agent/t", writeback=True)  # another sandbox refreshed meanwhile
    assert inject.write_back(engine, "sb", delivery, Store(), print) == []  # ours did not change: keep v3
    assert creds.reveal(creds.read_record("T", creds.GLOBAL)) == b"v3"


def test_spec_has_the_secrets_tmpfs_and_the_agent_socket_when_granted(tmp_path, monkeypatch):
    proj = project.find(str(tmp_path))
    engine, _ = fake_engine(rootless=True)
    args = sandbox.spec(proj, config.load(), engine).run_args
    tmpfs = args[args.index("--tmpfs") + 1]
    assert tmpfs.startswith(f"{inject.SECRETS_DIR}:") and "mode=0700" in tmpfs and tmpfs.endswith(",U")
    assert "SSH_AUTH_SOCK" not in " ".join(args)
    sock_path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock_path)
        proc = subprocess.run(["ab-creds", "ssh-agent", str(tmp_path)], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        args = sandbox.spec(proj, config.load(), engine).run_args
        assert f"{sock_path}:{inject.SSH_AGENT_SOCKET}" in args
        assert f"SSH_AUTH_SOCK={inject.SSH_AGENT_SOCKET}" in args
        assert not any(".ssh" in a for a in args)
        monkeypatch.delenv("SSH_AUTH_SOCK")  # a shell without the agent: the granted socket still serves
        assert f"{sock_path}:{inject.SSH_AGENT_SOCKET}" in sandbox.spec(proj, config.load(), engine).run_args
        subprocess.run(["ab-creds", "ssh-agent", "--revoke", str(tmp_path)], check=True, capture_output=True)
        assert "SSH_AUTH_SOCK" not in " ".join(sandbox.spec(proj, config.load(), engine).run_args)
    finally:
        server.close()
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    proc = subprocess.run(["ab-creds", "ssh-agent", str(tmp_path)], capture_output=True)
    assert proc.returncode == 125 and b"no SSH agent socket" in proc.stderr


def test_project_file_requests_only_count_once_allowed(tmp_path):
    from agentsh.policy import trust

    app = tmp_path / "app"
    app.mkdir()
    (app / ".agentsh.toml").write_text('credentials = ["FROM_FILE"]\n')
    proj = project.find(str(app))
    store = Store()
    assert inject.wanted(proj, config.load(proj, store), store) == []
    trust.allow(store, str(app / ".agentsh.toml"))
    assert inject.wanted(proj, config.load(proj, store), store) == ["FROM_FILE"]
    (app / ".agentsh.toml").write_text('credentials = ["../bad"]\n')
    trust.allow(store, str(app / ".agentsh.toml"))
    with pytest.raises(config.ConfigError, match="not a valid credential name"):
        config.load(proj, store)


@pytest.fixture
def host_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GH_TOKEN", "GITHUB_TOKEN",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "NPM_CONFIG_USERCONFIG", "GIT_CONFIG_GLOBAL"):
        monkeypatch.delenv(var, raising=False)
    return home


def import_json(source):
    proc = subprocess.run(["ab-creds", "import", source, "--json"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)}


def get(name):
    return subprocess.run(["ab-creds", "get", name], capture_output=True, check=True).stdout


def test_import_claude_codex_gemini(host_home, monkeypatch):
    (host_home / ".claude").mkdir()
    (host_home / ".claude" / ".credentials.json").write_text('{"claudeAiOauth": {"refreshToken": "r1"}}')
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-1")
    rows = import_json("claude")
    assert rows["CLAUDE_CREDENTIALS"]["target"] == "/home/agent/.claude/.credentials.json"
    assert rows["CLAUDE_CREDENTIALS"]["writeback"] is True
    assert rows["ANTHROPIC_API_KEY"]["type"] == "env" and get("ANTHROPIC_API_KEY") == b"sk-ant-1\n"
    (host_home / ".codex").mkdir()
    (host_home / ".codex" / "auth.json").write_text('{"tokens": {}}')
    assert set(import_json("codex")) == {"CODEX_AUTH"}
    proc = subprocess.run(["ab-creds", "import", "gemini"], capture_output=True)
    assert proc.returncode == 125 and b"nothing to import for gemini" in proc.stderr
    monkeypatch.setenv("GEMINI_API_KEY", "g-1")
    proc = subprocess.run(["ab-creds", "import", "gemini"], capture_output=True, check=True)
    assert b"imported GEMINI_API_KEY from $GEMINI_API_KEY: env $GEMINI_API_KEY" in proc.stdout


def test_import_gh_git_npm(host_home, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_1")
    assert import_json("gh")["GH_TOKEN"]["target"] == "GH_TOKEN" and get("GH_TOKEN") == b"ghp_1\n"
    (host_home / ".gitconfig").write_text("[user]\n\tname = Ada\n\temail = ada@example.org\n")
    assert import_json("git")["GIT_IDENTITY"]["target"] == "/home/agent/.config/git/config"
    assert get("GIT_IDENTITY") == b"[user]\n\tname = Ada\n\temail = ada@example.org\n"
    (host_home / ".npmrc").write_text("color=false\n//registry.npmjs.org/:_authToken=npm_1\n")
    import_json("npm")
    assert get("NPM_RC") == b"//registry.npmjs.org/:_authToken=npm_1\n"


def test_import_aws_static_and_credential_process(host_home, monkeypatch):
    (host_home / ".aws").mkdir()
    (host_home / ".aws" / "credentials").write_text("[default]\naws_access_key_id = AKIA1\n"
                                                    "aws_secret_access_key = sec1\n")
    import_json("aws")
    assert get("AWS_CREDENTIALS") == b"[default]\naws_access_key_id = AKIA1\naws_secret_access_key = sec1\n"
    helper = host_home / "helper.sh"
    helper.write_text(textwrap.dedent("""\
        #!/bin/sh
        echo '{"Version": 1, "AccessKeyId": "ASIA2", "SecretAccessKey": "sec2", "SessionToken": "tok2"}'
        """))
    helper.chmod(0o755)
    (host_home / ".aws" / "config").write_text(f"[profile sso]\ncredential_process = {helper}\n")
    monkeypatch.setenv("AWS_PROFILE", "sso")
    rows = import_json("aws")
    assert rows["AWS_CREDENTIALS"]["source"] == "command"
    assert get("AWS_CREDENTIALS") == (b"[default]\naws_access_key_id = ASIA2\naws_secret_access_key = sec2\n"
                                      b"aws_session_token = tok2\n")
    helper.write_text("#!/bin/sh\necho not json\n")
    proc = subprocess.run(["ab-creds", "get", "AWS_CREDENTIALS"], capture_output=True)
    assert proc.returncode == 125 and b"did not print the JSON AWS expects" in proc.stderr
