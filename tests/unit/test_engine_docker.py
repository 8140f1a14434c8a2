"""What agentsh does differently on Docker, with the recording fake engine (real dockerd: tests/integration/test_docker.py)."""

import json
import os

import pytest

from agentsh.base.errors import AgentshError
from agentsh.base.state import Store
from agentsh.host import project
from agentsh.host.engine import Engine
from agentsh.policy import config, lockdown
from agentsh.sandbox import lifecycle as sandbox
from tests.conftest import git_init
from tests.unit.fake_engine import FakeRunner


@pytest.fixture
def proj(tmp_path):
    return project.find(str(git_init(tmp_path / "repo")))


def docker(runner=None):
    runner = runner or FakeRunner()
    return Engine("docker", runner=runner, rootless=False, exe="docker"), runner


@pytest.fixture
def as_user(monkeypatch):
    """The invoking user is uid/gid 1000 (a member of the `docker` group, as far as the engine cares)."""
    monkeypatch.setattr(sandbox.os, "getuid", lambda: 1000)
    monkeypatch.setattr(sandbox.os, "getgid", lambda: 1000)


def test_info_asks_for_json_in_the_form_both_clients_read():
    engine, runner = docker()
    assert engine.info()["version"]["Version"] == "4.3.1"
    assert runner.calls[-1] == ["info", "--format", "{{json .}}"]


def test_a_non_root_docker_user_gets_a_home_volume_it_owns(proj, as_user):
    engine, runner = docker()
    sandbox.up(proj, config.load(), engine, Store())
    cmds = [c for c in runner.calls if c[0] in ("volume", "run", "exec")]
    assert cmds[0] == ["volume", "create", proj.home_volume]
    chown = cmds[1]
    assert chown[:2] == ["run", "--rm"] and "--cap-add=CHOWN" in chown and "--cap-drop=all" in chown
    assert "--network=none" in chown and f"{proj.home_volume}:/agentsh-volume" in chown
    assert chown[-2:] == ["1000:1000", "/agentsh-volume"]
    assert cmds[2][0] == "run" and "-d" in cmds[2]  # only then the sandbox
    assert cmds[3][:2] == ["exec", "-i"] and cmds[3][3:5] == ["sh", "-c"]  # its sh is checked


def test_root_and_podman_need_no_volume_step(proj, monkeypatch):
    engine, runner = docker()
    monkeypatch.setattr(sandbox.os, "getuid", lambda: 0)
    monkeypatch.setattr(sandbox.os, "getgid", lambda: 0)
    sandbox.up(proj, config.load(), engine, Store())
    assert not [c for c in runner.calls if c[0] == "volume"]
    podman_runner = FakeRunner()
    sandbox.up(proj, config.load(), Engine("podman", runner=podman_runner, rootless=False, exe="podman"), Store())
    assert not [c for c in podman_runner.calls if c[0] in ("volume", "exec")]


def test_lockdown_on_docker_mounts_an_overlay_volume_instead_of_O(proj, as_user, monkeypatch):
    from agentsh.egress import network

    monkeypatch.setattr(network, "attach", lambda *a, **k: None)  # the proxy needs a real sandbox
    engine, runner = docker(NoVolumes())
    cfg = lockdown.lockdown(config.load())
    sandbox.up(proj, cfg, engine, Store())
    run = next(c for c in runner.calls if c[0] == "run" and "-d" in c)
    volume = lockdown.overlay_volume(proj)
    assert f"{volume}:{proj.root}" in run and not any(":O," in a for a in run)
    upper, work = lockdown.overlay_dirs(proj)
    create = next(c for c in runner.calls if c[:2] == ["volume", "create"])
    assert create == ["volume", "create", "--driver", "local", "--opt", "type=overlay", "--opt", "device=overlay",
                      "--opt", f"o=lowerdir={proj.root},upperdir={upper},workdir={work}", volume]
    runner.calls.clear()
    sandbox.down(engine, [proj.sandbox], remove=True)
    assert ["volume", "ls", "-q", "--filter", f"name={proj.sandbox}-lockdown-"] in runner.calls


def test_an_overlay_dir_with_a_comma_is_refused():
    engine, _ = docker()
    with pytest.raises(AgentshError, match="contains ','"):
        engine.overlay_volume("v", "/a,b", "/u", "/w")


class NoVolumes(FakeRunner):
    def __call__(self, argv, input=None, capture=True, timeout=None):
        if argv[1:3] == ["volume", "inspect"]:
            self.calls.append(list(argv[1:]))
            return 1, "[]", f"Error: No such volume: {argv[3]}"
        return super().__call__(argv, input, capture, timeout)


class NoShell(FakeRunner):
    def __call__(self, argv, input=None, capture=True, timeout=None):
        if argv[1] == "exec" and argv[4:6] == ["sh", "-c"]:
            self.calls.append(list(argv[1:]))
            return 126, ('OCI runtime exec failed: exec failed: unable to start container process: exec: "sh": '
                         'executable file not found in $PATH: unknown\r\n'), ""
        return super().__call__(argv, input, capture, timeout)


def test_an_image_without_sh_is_refused_and_its_container_removed(proj):
    engine, runner = docker(NoShell())
    with pytest.raises(AgentshError, match="has no sh") as e:
        sandbox.up(proj, config.load(), engine, Store())
    assert "OCI" not in e.value.message
    assert proj.sandbox not in runner.containers


@pytest.mark.parametrize("value, want", [
    (1796194739, "2026-12-02T06:58:59Z"),  # Podman's ps: seconds
    ("2026-12-02 06:56:47 +0000 UTC", "2026-12-02T06:56:47Z"),  # Docker's ps
    ("2026-12-02 07:56:47 +0100 CET", "2026-12-02T06:56:47Z"),  # a daemon in another zone
    ("2026-12-01T21:13:48.123456789Z", "2026-12-01T21:13:48Z"),  # an inspect's RFC 3339 with nanoseconds
    ("2026-12-01T22:13:48.5+01:00", "2026-12-01T21:13:48Z"),
    ("", ""), (None, ""),
])
def test_created_is_iso_8601_utc_whatever_the_engine_says(value, want):
    assert sandbox.utc_timestamp(value) == want


class Elsewhere(FakeRunner):
    """A remote engine whose machine has other files at the project's path."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __call__(self, argv, input=None, capture=True, timeout=None):
        if argv[1] == "exec" and argv[4:6] == ["sh", "-c"]:
            self.calls.append(list(argv[1:]))
            return 0, self.seen, ""
        return super().__call__(argv, input, capture, timeout)


@pytest.mark.parametrize("name, env", [("podman", {"CONTAINER_HOST": "unix:///run/elsewhere.sock"}),
                                       ("podman", {"CONTAINER_CONNECTION": "machine"}),
                                       ("docker", {"DOCKER_HOST": "ssh://build-host"}),
                                       ("docker", {"DOCKER_CONTEXT": "desktop-linux"})])
def test_a_remote_engine_that_cannot_see_the_project_is_refused_in_one_line(proj, monkeypatch, name, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    runner = Elsewhere(b"/sh\0/lib\0")  # an empty directory where the project should be
    engine = Engine(name, runner=runner, rootless=False, exe=name)
    assert not engine.is_local and engine.remote
    with pytest.raises(AgentshError, match="is not visible to the") as e:
        sandbox.up(proj, config.load(), engine, Store())
    assert "same path" in e.value.fix and proj.sandbox not in runner.containers


def test_a_remote_engine_that_sees_the_project_and_the_data_dir_is_used(proj, monkeypatch):
    monkeypatch.setenv("CONTAINER_HOST", "unix:///run/elsewhere.sock")
    names = b"".join(os.fsencode(n) + b"\0" for n in os.listdir(proj.root))
    engine = Engine("podman", runner=Elsewhere(b"/sh\0/lib\0" + names), rootless=False, exe="podman")
    assert sandbox.up(proj, config.load(), engine, Store())["state"] == "running"
    blind = Engine("podman", runner=Elsewhere(b"/sh\0" + names), rootless=False, exe="podman")
    with pytest.raises(AgentshError, match="data dir .* is not visible"):
        sandbox.up(proj, config.load(), blind, Store(), recreate=True)


def test_docker_on_a_local_socket_is_local_and_a_context_file_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/x/docker.sock")
    assert Engine("docker", exe="docker").is_local
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert Engine("docker", exe="docker").remote is None
    (tmp_path / "config.json").write_text('{"currentContext": "remote-box"}')
    assert Engine("docker", exe="docker").remote == "context remote-box"
    (tmp_path / "config.json").write_text('{"currentContext": "default"}')
    assert Engine("docker", exe="docker").is_local


def test_ls_gives_the_same_created_on_both_engines():
    row = {"Names": ["ab-x-1"], "Id": "1", "State": "running", "Image": "i",
           "Labels": {"io.agentsh.project": "/p", "io.agentsh.managed": "true"}}
    podman_rows = [{**row, "Created": 1796194739, "CreatedAt": "1 minute ago"}]
    docker_row = {**row, "Labels": "io.agentsh.managed=true,io.agentsh.project=/p",
                  "CreatedAt": "2026-12-02 06:58:59 +0000 UTC"}

    def answer(listing, docker_form):
        def run(argv, input=None, capture=True, timeout=None):
            if argv[1] == "ps":
                return 0, ("\n".join(json.dumps(r) for r in listing) if docker_form else json.dumps(listing)), ""
            return 0, "", ""
        return run

    on_podman = sandbox.listing(Engine("podman", runner=answer(podman_rows, False), exe="podman"))
    on_docker = sandbox.listing(Engine("docker", runner=answer([docker_row], True), exe="docker"))
    assert on_podman == on_docker
    assert on_docker[0]["created"] == "2026-12-02T06:58:59Z"


@pytest.mark.parametrize("line, gone", [
    (b"Error response from daemon: No such container: ab-x-1\n", True),  # Docker 28's client
    (b"Error: No such container: ab-x-1\n", True),  # Docker 20.10's
    (b"Error response from daemon: Container 91443d9a is not running\n", True),
    (b"Error: no container with name or ID \"ab-x-1\" found: no such container\n", True),  # Podman's
    (b"some output that mentions no such container\n", False),  # the command's own words
])
def test_an_exec_that_found_no_sandbox_is_told_from_the_command_on_both_engines(line, gone):
    from agentsh.host.engine import is_gone_message

    assert is_gone_message(line) is gone


def test_a_network_mode_that_cannot_be_enforced_is_refused_before_any_container_changes(proj, as_user, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # a docker-group user: the daemon is root's, agentsh is not
    engine, runner = docker()
    cfg = config.load(flags={"network": {"mode": "allow"}})
    with pytest.raises(AgentshError, match="need agentsh run as root"):
        sandbox.up(proj, cfg, engine, Store())
    assert runner.calls == []


def test_a_user_outside_the_docker_group_is_told_how_to_join_it(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    engine, _ = docker()
    error = engine.error("permission denied while trying to connect to the Docker daemon socket at "
                         "unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/containers/json\": "
                         "dial unix /var/run/docker.sock: connect: permission denied", "ps")
    assert "may not use the Docker daemon at unix:///var/run/docker.sock" in error.message
    assert "usermod -aG docker" in error.fix


def test_docker_is_rootless_when_its_socket_is_the_users_own(monkeypatch):
    """dockerd-rootless.sh's socket belongs to its user, wherever XDG_RUNTIME_DIR is; a rootful one is root's."""
    import socket
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as d, socket.socket(socket.AF_UNIX) as s:  # (a path without
        path = os.path.join(d, "docker.sock")  # "rootless" in it, which counts by itself)
        s.bind(path)
        if os.geteuid() == 0:
            os.chown(path, 1000, 1000)
        user = os.stat(path).st_uid
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        monkeypatch.setattr(os, "geteuid", lambda: user)
        assert Engine("docker", exe="docker").rootless is True
        monkeypatch.setattr(os, "geteuid", lambda: user + 1)
        assert Engine("docker", exe="docker").rootless is False
        monkeypatch.setattr(os, "geteuid", lambda: 0)
        assert Engine("docker", exe="docker").rootless is False  # root: never "its own" daemon
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert Engine("docker", exe="docker").rootless is True


def test_sh_is_looked_for_inside_the_containers_root(tmp_path):
    """The check that replaces an exec on local Docker: symlinks resolve inside the root, never on the host."""
    from agentsh.sandbox.lifecycle import _has_sh

    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").mkdir()
    os.symlink("/usr/bin/env", root / "bin/sh")  # the host has /usr/bin/env; this root does not
    assert not _has_sh(str(root))
    (root / "usr/bin/env").write_text("")
    assert not _has_sh(str(root))  # not executable
    os.chmod(root / "usr/bin/env", 0o755)
    assert _has_sh(str(root))
    other = tmp_path / "merged"
    (other / "usr/bin").mkdir(parents=True)
    os.symlink("usr/bin", other / "bin")  # merged /usr, and a relative link up and back
    os.symlink("../../usr/bin/dash", other / "usr/bin/sh")
    assert not _has_sh(str(other))
    (other / "usr/bin/dash").write_text("")
    os.chmod(other / "usr/bin/dash", 0o755)
    assert _has_sh(str(other))
    loop = tmp_path / "loop"
    (loop / "bin").mkdir(parents=True)
    os.symlink("sh", loop / "bin/sh")
    assert not _has_sh(str(loop))


@pytest.mark.parametrize("host, rootless", [
    ("ssh://alice@server/run/user/1000/podman/podman.sock", True),
    ("ssh://alice@server:2222/home/alice/podman.sock", True),  # an ordinary user's own engine
    ("ssh://root@server/run/podman/podman.sock", False),
    ("ssh://root@server:22/var/run/docker.sock", False),
    ("ssh://alice@server/run/podman/podman.sock", False),  # root's engine, its socket opened to alice
    ("ssh://alice@server/var/run/docker.sock", False),
    ("tcp://server:2375", False),
    ("unix:///run/podman/podman.sock", False),
])
@pytest.mark.parametrize("name", ["podman", "docker"])
def test_a_remote_engine_is_rootless_when_its_address_says_so(monkeypatch, host, rootless, name):
    """A remote engine's kind is read off its address with no engine call: an ssh:// login as someone other
    than root reaches that user's own, rootless, engine (the sandbox then maps the user's uid itself)."""
    monkeypatch.setenv("CONTAINER_HOST" if name == "podman" else "DOCKER_HOST", host)
    assert Engine(name, exe=name).rootless is rootless


def test_an_ssh_address_without_a_login_is_the_local_users(monkeypatch):
    import getpass

    monkeypatch.setenv("CONTAINER_HOST", "ssh://server/home/alice/podman.sock")
    monkeypatch.setattr(getpass, "getuser", lambda: "root")
    assert Engine("podman", exe="podman").rootless is False
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    assert Engine("podman", exe="podman").rootless is True


def test_a_podman_socket_the_user_owns_is_not_taken_as_rootless(monkeypatch, tmp_path):
    """A rootful Podman service's socket handed to a user stays rootful (keep-id would be refused there)."""
    sock = tmp_path / "podman.sock"
    sock.write_text("")
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{sock}")
    monkeypatch.setattr(os, "geteuid", lambda: sock.stat().st_uid if sock.stat().st_uid else 1000)
    if sock.stat().st_uid == 0:
        os.chown(sock, 1000, 1000)
    assert Engine("podman", exe="podman").rootless is False
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    assert Engine("docker", exe="docker").rootless is True
