"""Credentials reaching real sandboxes: env and file, never in inspect or on disk, written back."""

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentsh.base import paths
from tests.conftest import TINY_IMAGE, ab, git_init, on_engine, own_dirs_env, podman, remove_sandboxes_under

ENV_SECRET = b"env-secret-9f1c2a"
FILE_SECRET = b'{"refreshToken": "file-secret-77d0e4"}'


def creds(*args, input=b"", env=None):
    return ab("ab-creds", *args, input=input, check=True, env=env)


def files_under(*roots):
    for root in roots:
        for d, _, names in os.walk(root):
            for n in names:
                path = Path(d) / n
                if path.is_file() and not path.is_symlink():
                    yield path


def assert_absent_from_disk(secrets, *roots):
    for path in files_under(*roots):
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} in plain text in {path}"


def volume_dir(name, engine="podman", env=None):
    return on_engine(engine, "volume", "inspect", "--format", "{{.Mountpoint}}", name, env=env).stdout.strip()


@pytest.fixture(scope="class", params=["podman", "docker"])
def delivered(request, tmp_path_factory):
    """An env and a file credential granted to a project, and what one ab-exec saw of them; on each engine
    (Docker: the private dockerd)."""
    base = tmp_path_factory.mktemp("creds")
    env = own_dirs_env(base, TINY_IMAGE)
    if request.param == "docker":
        env.update(DOCKER_HOST=request.getfixturevalue("docker_daemon").host, AGENTSH_ENGINE="docker")
    else:
        request.getfixturevalue("tiny_image")
    repo = git_init(base / "repo")
    creds("set", "API_KEY", input=ENV_SECRET + b"\n", env=env)
    creds("set", "TOKEN", "--file", "/home/agent/.claude/.credentials.json", "--writeback", input=FILE_SECRET,
          env=env)
    creds("grant", "API_KEY", str(repo), env=env)
    creds("grant", "TOKEN", str(repo), env=env)
    script = ('printf "%s\\n" "$API_KEY"; cat ~/.claude/.credentials.json; echo; '
              'stat -c "%a %u %g" /run/agentsh/secrets/TOKEN; readlink ~/.claude/.credentials.json; '
              'grep " /run/agentsh/secrets " /proc/mounts')
    try:
        proc = ab("ab-exec", "--", "sh", "-c", script, cwd=repo, env=env)
        assert proc.returncode == 0, proc.stderr
        name = ab("ab-up", str(repo), check=True, env=env).stdout.decode().strip()
        yield SimpleNamespace(repo=repo, env=env, name=name, seen=proc.stdout.decode().splitlines(),
                              engine=request.param)
    finally:
        if request.param == "podman":  # (the private dockerd goes whole at the end of the run)
            remove_sandboxes_under(str(base))


class TestGrantedCredentials:
    def test_they_arrive_as_the_variable_and_the_file(self, delivered):
        env_value, file_value = delivered.seen[:2]
        assert env_value.encode() == ENV_SECRET and file_value.encode() == FILE_SECRET

    def test_the_file_is_a_private_link_into_a_tmpfs(self, delivered):
        mode_owner, link, mount = delivered.seen[2:]
        assert mode_owner == f"600 {os.getuid()} {os.getgid()}"
        assert link == "/run/agentsh/secrets/TOKEN" and mount.split()[2] == "tmpfs"

    def test_they_are_not_in_podman_inspect(self, delivered):
        inspected = on_engine(delivered.engine, "container", "inspect", delivered.name, env=delivered.env).stdout
        assert ENV_SECRET.decode() not in inspected and "file-secret-77d0e4" not in inspected

    def test_nothing_is_in_plain_text_on_disk(self, delivered):
        """The cache, the state, the config, the home volume."""
        dirs = [delivered.env[v] for v in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME")]
        assert list(files_under(os.path.join(dirs[0], "agentsh", "creds")))
        assert_absent_from_disk([ENV_SECRET, b"file-secret-77d0e4"], *dirs,
                                volume_dir(f"{delivered.name}-home", delivered.engine, delivered.env))

    def test_a_restart_empties_the_tmpfs_and_the_next_exec_puts_the_file_back(self, delivered):
        on_engine(delivered.engine, "restart", "-t", "0", delivered.name, env=delivered.env)
        assert ab("ab-exec", "--", "cat", "/home/agent/.claude/.credentials.json", cwd=delivered.repo,
                  env=delivered.env, check=True).stdout == FILE_SECRET


@pytest.mark.usefixtures("sandbox_env")
def test_refreshed_token_file_is_written_back_and_reaches_other_sandboxes(repo, tmp_path):
    other = git_init(tmp_path / "other")
    creds("set", "TOKEN", "--file", "~/.tool/token.json", "--writeback", input=b"v1")
    creds("grant", "TOKEN", str(repo))
    creds("grant", "TOKEN", str(other))
    assert ab("ab-exec", "--", "cat", "/home/agent/.tool/token.json", cwd=other, check=True).stdout == b"v1"
    ab("ab-exec", "--", "sh", "-c", "printf v2-refreshed > ~/.tool/token.json", cwd=repo, check=True)
    assert creds("get", "TOKEN").stdout == b"v2-refreshed"
    # `other` still holds v1 from its last run; its next ab-exec gets v2, and an
    # unchanged v1 read back afterwards does not undo the refresh.
    assert ab("ab-exec", "--", "cat", "/home/agent/.tool/token.json", cwd=other, check=True).stdout == b"v2-refreshed"
    assert creds("get", "TOKEN").stdout == b"v2-refreshed"
    # A tool that refreshes by write-to-temp-and-rename replaces the symlink: still written back,
    # and the file moves back to the tmpfs so it does not stay in the home volume.
    ab("ab-exec", "--", "sh", "-c", "printf v3-renamed > ~/.tool/t && mv ~/.tool/t ~/.tool/token.json",
       cwd=other, check=True)
    assert creds("get", "TOKEN").stdout == b"v3-renamed"
    name = ab("ab-up", str(other), check=True).stdout.decode().strip()
    assert ab("ab-exec", "--", "readlink", "/home/agent/.tool/token.json", cwd=other,
              check=True).stdout == b"/run/agentsh/secrets/TOKEN\n"
    assert_absent_from_disk([b"v3-renamed"], volume_dir(f"{name}-home"), paths.data_dir())


@pytest.mark.usefixtures("sandbox_env")
def test_ssh_agent_socket_is_forwarded_not_keys(repo, tmp_path, monkeypatch):
    sock_path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    server.listen(1)
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock_path)
        creds("ssh-agent", str(repo))
        proc = ab("ab-exec", "--", "sh", "-c", 'test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK"', cwd=repo)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == b"/run/agentsh/ssh-agent.sock\n"
        name = ab("ab-up", str(repo), check=True).stdout.decode().strip()
        mounts = {m["Source"] for m in podman_inspect_mounts(name)}
        assert sock_path in mounts and not any(s.endswith("/.ssh") for s in mounts)
    finally:
        server.close()


def podman_inspect_mounts(name):
    import json

    return json.loads(podman("container", "inspect", name).stdout)[0]["Mounts"]


@pytest.mark.rootless
def test_rootless_file_credential_is_owned_by_the_user(rootless_user):
    user = rootless_user
    project_dir = user.mkdir("work/credproj")
    try:
        user.run("ab-creds", "set", "RL_TOKEN", "--file", "/home/agent/.rl/token", "--writeback",
                 input=b"rootless-secret", check=True)
        user.run("ab-creds", "grant", "RL_TOKEN", str(project_dir), check=True)
        proc = user.run("ab-exec", "--dir", str(project_dir), "--", "sh", "-c",
                        'stat -c "%a %u" /run/agentsh/secrets/RL_TOKEN; cat ~/.rl/token; echo; '
                        'printf rootless-refreshed > ~/.rl/token')
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.decode().splitlines() == [f"600 {user.uid}", "rootless-secret"]
        assert user.run("ab-creds", "get", "RL_TOKEN", check=True).stdout == b"rootless-refreshed"
    finally:
        user.run("ab-down", "--rm", "--volumes", str(project_dir))
