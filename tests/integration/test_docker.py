"""The core workflow on Docker: a private dockerd (tests/docker.py), real containers, real effects.

Docker-only: each test checks what Docker does differently from Podman (its
exec's statuses and messages, its clients' --format, volumes it makes
root's, no `:O` mounts) or that the shared code paths hold on it. Tests
that behave the same on both engines are parametrized over them elsewhere
(`any_engine`).
"""

import json
import os
import re
import subprocess
import threading
import uuid
from http.server import ThreadingHTTPServer

import pytest

from agentsh.policy.ports import stable_host_port
from tests.conftest import GIT_IMAGE, TINY_IMAGE, ab, commit, git, git_init, tiny_image_tar
from tests.docker import DEBIAN_CLIENT
from tests.integration.test_network import Hello
from tests.integration.test_ports import fetch, serve, status_ports

pytestmark = pytest.mark.usefixtures("docker_env")

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def sh(repo, script, *flags, input=None, env=None):
    return ab("ab-exec", *flags, "--", "sh", "-c", script, cwd=repo, input=input, env=env)


@pytest.fixture(params=["server", "engine"])
def exec_path(request, monkeypatch):
    """ab-exec through the sandbox's exec server, and through Docker's own exec."""
    monkeypatch.setenv("AGENTSH_EXEC_SERVER", "1" if request.param == "server" else "0")
    return request.param


def test_up_makes_one_container_with_the_labels_and_ls_gives_iso_utc(repo, docker_env):
    up = json.loads(ab("ab-up", "--json", cwd=repo, check=True).stdout)
    info = docker_env.inspect(up["name"])
    assert info["State"]["Running"]
    assert info["Config"]["Labels"]["io.agentsh.project"] == str(repo)
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    again = json.loads(ab("ab-up", "--json", cwd=repo, check=True).stdout)
    assert again["id"] == up["id"]
    rows = [r for r in json.loads(ab("ab-ls", "--json", check=True).stdout) if r["name"] == up["name"]]
    assert len(rows) == 1 and ISO_UTC.fullmatch(rows[0]["created"]), rows


def test_exec_status_bytes_cwd_and_env(repo, exec_path, monkeypatch):
    (repo / "sub").mkdir()
    assert sh(repo, "exit 7").returncode == 7
    data = bytes(range(256)) * 64
    out = ab("ab-exec", "--", "cat", cwd=repo, input=data)
    assert out.returncode == 0 and out.stdout == data
    assert ab("ab-exec", "--", "pwd", cwd=repo / "sub").stdout == f"{repo}/sub\n".encode()
    monkeypatch.setenv("FROM_HOST", "host value")
    got = sh(repo, 'printf "%s|%s" "$FROM_HOST" "$SET_HERE"', "-e", "FROM_HOST", "-e", "SET_HERE=a b")
    assert got.stdout == b"host value|a b", got.stderr


def test_a_missing_command_is_127_and_one_line(repo, exec_path):
    ab("ab-up", cwd=repo, check=True)
    proc = ab("ab-exec", "--", "no-such-program", cwd=repo)
    assert proc.returncode == 127
    assert proc.stderr == b"ab-exec: no-such-program: command not found in the sandbox\n"


def test_an_image_without_sh_is_refused_in_one_line(repo, docker_env, user_config):
    """Docker's exec reports a missing program as 126 with its raw OCI message on stdout: agentsh checks the one
    program every command runs through when it makes the sandbox, and says so in one line."""
    image = f"localhost/agentsh-test-nosh-{uuid.uuid4().hex[:8]}:latest"
    docker_env.import_image(tiny_image_tar(without=["bin/sh"]), image)
    user_config(f'image = "{image}"\n')
    proc = ab("ab-exec", "--", "true", cwd=repo)
    assert proc.returncode == 125 and proc.stdout == b""
    lines = [line for line in proc.stderr.decode().splitlines() if line.startswith("ab-exec:")]
    assert len(lines) == 1 and "has no sh" in lines[0] and "OCI" not in proc.stderr.decode(), proc.stderr
    assert docker_env.docker("ps", "-aq", "--filter", f"label=io.agentsh.project={repo}").stdout == b""


def test_exec_after_docker_rm_f_makes_the_sandbox_again(repo, docker_env):
    name = ab("ab-up", cwd=repo, check=True).stdout.decode().strip()
    first = docker_env.inspect(name)["Id"]
    docker_env.docker("rm", "-f", name)
    proc = sh(repo, "echo back")
    assert proc.returncode == 0 and proc.stdout == b"back\n", proc.stderr
    assert b"created sandbox" in proc.stderr
    assert docker_env.inspect(name)["Id"] != first


def test_values_are_not_in_docker_inspect(repo, docker_env, exec_path, monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("TOKEN", secret)
    name = ab("ab-up", cwd=repo, check=True).stdout.decode().strip()
    assert sh(repo, 'printf %s "$TOKEN"', "-e", "TOKEN").stdout == secret.encode()
    assert sh(repo, 'printf %s "$V"', "-e", f"V={secret}x").stdout == f"{secret}x".encode()
    dump = docker_env.docker("container", "inspect", name).stdout.decode()
    assert secret not in dump


def test_network_none_leaves_only_loopback(repo, docker_env, user_config):
    user_config(f'image = "{TINY_IMAGE}"\n[network]\nmode = "none"\n')
    name = ab("ab-up", cwd=repo, check=True).stdout.decode().strip()
    assert docker_env.inspect(name)["HostConfig"]["NetworkMode"] == "none"
    devices = sh(repo, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").stdout.split()
    assert devices == [b"lo"]


def test_allow_mode_reaches_only_the_allowed_host_through_the_proxy(repo, docker_env, user_config):
    srv = ThreadingHTTPServer(("0.0.0.0", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        user_config(f'image = "{TINY_IMAGE}"\n[network]\nmode = "allow"\n'
                    f'allow = ["host.containers.internal:{port}"]\n')
        ok = sh(repo, f"wget -q -O- http://host.containers.internal:{port}/")
        assert ok.returncode == 0 and ok.stdout == b"hello from the host\n", ok.stderr
        denied = sh(repo, "wget -q -O- http://example.invalid:81/")
        assert denied.returncode != 0
        denied_log = json.loads(ab("ab-log", "--json", "--denied", str(repo), check=True).stdout)
        assert [(e["host"], e["port"], e["allowed"]) for e in denied_log] == [("example.invalid", 81, False)]
    finally:
        srv.shutdown()
        srv.server_close()


def test_lockdown_keeps_writes_in_an_overlay_and_the_host_project_untouched(repo, docker_env, tmp_path):
    (repo / "kept.txt").write_text("original\n")
    proc = sh(repo, "echo changed > kept.txt; echo new > made.txt; cat kept.txt", "--lockdown")
    assert proc.returncode == 0 and proc.stdout == b"changed\n", proc.stderr
    assert (repo / "kept.txt").read_text() == "original\n" and not (repo / "made.txt").exists()
    upper = next((tmp_path / "xdg").glob("xdg_data_home/agentsh/lockdown/*/upper"))
    assert (upper / "made.txt").read_text() == "new\n" and (upper / "kept.txt").read_text() == "changed\n"
    again = sh(repo, "cat made.txt", "--lockdown")  # the writes persist across execs
    assert again.stdout == b"new\n"
    name = ab("ab-up", "--lockdown", cwd=repo, check=True).stdout.decode().strip()
    mount = next(m for m in docker_env.inspect(name)["Mounts"] if m["Destination"] == str(repo))
    assert mount["Type"] == "volume" and mount["Name"].startswith(f"{name}-lockdown-")
    ab("ab-down", "--rm", cwd=repo, check=True)
    volumes = docker_env.docker("volume", "ls", "-q").stdout.decode().split()
    assert not [v for v in volumes if v.startswith(f"{name}-lockdown-")]


def test_worktree_commits_inside_reach_the_host(tmp_path, docker_env, user_config):
    user_config(f'image = "{GIT_IMAGE}"\n')
    main = git_init(tmp_path / "app")
    commit(main, "README", "hello\n", "init")
    path = ab("ab-wt", "new", "feat", cwd=main, check=True).stdout.decode().strip().splitlines()[-1]
    proc = sh(path, "echo work > w.txt && git add w.txt && git commit -qm 'in the sandbox' && echo done",
              env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"})
    assert proc.returncode == 0 and proc.stdout.endswith(b"done\n"), proc.stderr
    assert git(main, "log", "-1", "--format=%s", "feat").strip() == "in the sandbox"
    ab("ab-wt", "rm", "--force", "feat", cwd=main)


@pytest.mark.parametrize("client", ["path", "debian"])
def test_doctor_reads_the_engine_with_either_client(repo, docker_env, client, tmp_path, monkeypatch):
    """Debian's 20.10 client prints "json" for `info --format json`; doctor must work with it and with newer ones."""
    if client == "debian":
        if not os.access(DEBIAN_CLIENT, os.X_OK):
            pytest.skip("no Debian docker client here")
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "docker").symlink_to(DEBIAN_CLIENT)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    proc = ab("ab-doctor", "--json", cwd=repo)
    assert b"Traceback" not in proc.stderr and b"internal error" not in proc.stderr, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["engine"]["status"] in ("ok", "warn") and "docker 20.10" in checks["engine"]["detail"], checks
    assert checks["runtime"]["status"] == "ok", checks["runtime"]


def test_a_docker_group_user_gets_a_home_it_owns(rootless_user, docker_daemon):
    """The usual `docker` group set-up: rootful daemon, non-root user; Docker makes a new volume root's."""
    env = {"DOCKER_HOST": docker_daemon.host, "AGENTSH_ENGINE": "docker"}
    project = rootless_user.mkdir(f"work/dock-{uuid.uuid4().hex[:8]}")
    rootless_user.run("git", "init", "-q", str(project), check=True)

    def run(*args):
        return rootless_user.run("env", *(f"{k}={v}" for k, v in env.items()), *args, cwd=project)

    outside = run("ab-up")  # not yet in the socket's group: one line that says how to join it
    assert outside.returncode == 125 and outside.stderr.decode().count("\n") == 1, outside.stderr
    assert b"may not use the Docker daemon" in outside.stderr and b"usermod -aG docker" in outside.stderr
    docker_daemon.add_user(rootless_user.name)

    try:
        proc = run("ab-exec", "--", "sh", "-c", "touch ~/.login && stat -c %u:%g ~ ~/.login && touch made.txt")
        assert proc.returncode == 0, proc.stderr
        ids = f"{rootless_user.uid}:{rootless_user.gid}"
        assert proc.stdout.decode().split() == [ids, ids]
        assert os.stat(project / "made.txt").st_uid == rootless_user.uid
        # A file credential lands in the home (its link) and is written back: the home must be the user's.
        token = f"DOCK_TOKEN_{uuid.uuid4().hex[:8].upper()}"
        secret = f"file-secret-{uuid.uuid4().hex}".encode()
        rootless_user.run("ab-creds", "set", token, "--file", "/home/agent/.tool/token", "--writeback",
                          input=secret, check=True)
        rootless_user.run("ab-creds", "grant", token, str(project), check=True)
        got = run("ab-exec", "--", "sh", "-c", "cat ~/.tool/token; printf refreshed > ~/.tool/token")
        assert got.returncode == 0 and got.stdout == secret, got.stderr
        assert rootless_user.run("ab-creds", "get", token, check=True).stdout == b"refreshed"
        name = json.loads(run("ab-up", "--json").stdout)["name"]
        assert secret not in docker_daemon.docker("container", "inspect", name).stdout
        rootless_user.run("ab-creds", "rm", token)
        # The egress proxy's listener needs root over the sandbox's network namespace: refused, in one line.
        before = json.loads(run("ab-up", "--json").stdout)["id"]
        refused = run("ab-up", "--network", "allow")
        assert refused.returncode == 125 and refused.stderr.decode().count("\n") == 1, refused.stderr
        assert b"recreating" not in refused.stderr  # the refusal comes before any change
        assert b'network modes "allow" and "learn" with a rootful engine need agentsh run as root' in refused.stderr
        assert docker_daemon.inspect(json.loads(run("ab-up", "--json").stdout)["name"])["Id"] == before
    finally:
        run("ab-down", "--rm", "--volumes")


def test_a_docker_context_is_a_remote_engine_that_agentsh_finds_local(repo, docker_env, tmp_path, monkeypatch):
    """`docker context use` (in DOCKER_CONFIG's config.json) picks the daemon: agentsh treats it as remote,
    checks that it sees the project, and finds the sandbox's init on this host, so warm paths stay warm."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("DOCKER_HOST")
    context = f"ab-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "context", "create", context, "--docker", f"host={docker_env.host}"],
                   check=True, capture_output=True)
    subprocess.run(["docker", "context", "use", context], check=True, capture_output=True)
    doctor = {c["name"]: c for c in json.loads(ab("ab-doctor", "--json", "--no-run", cwd=repo).stdout)}
    assert f"remote: context {context}" in doctor["engine"]["detail"]
    proc = sh(repo, "pwd; exit 4")
    assert proc.returncode == 4 and proc.stdout == f"{repo}\n".encode(), proc.stderr
    name = ab("ab-up", cwd=repo, check=True).stdout.decode().strip()
    assert json.loads(ab("ab-status", "--json", cwd=repo, check=True).stdout)["exec"] == "server"
    monkeypatch.setenv("DOCKER_CONTEXT", f"{context}-gone")  # an engine that cannot be reached
    warm = ab("ab-up", cwd=repo)
    assert warm.returncode == 0 and warm.stdout.decode().strip() == name, warm.stderr


def test_ports_from_ab_up_and_forward_ports_are_published_and_reachable_from_the_host(repo, docker_env):
    """`ab-up -p` and a trusted devcontainer.json's forwardPorts on Docker: bound to 127.0.0.1 on the stable host
    port, answered by a server in the sandbox, kept by a later ab-up and a restart."""
    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text(f'{{"image": "{TINY_IMAGE}", "forwardPorts": [3000]}}')
    ab("ab-allow", str(repo), check=True)
    name = json.loads(ab("ab-up", str(repo), "-p", "8080", "--json", check=True).stdout)["name"]
    web, forwarded = stable_host_port(str(repo), 8080), stable_host_port(str(repo), 3000)
    bindings = docker_env.inspect(name)["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(web)}],
                        "3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(forwarded)}]}, bindings
    assert {(p["host"], p["container"]) for p in status_ports(repo)} == {(web, 8080), (forwarded, 3000)}
    serve(repo, 8080)
    serve(repo, 3000)
    assert fetch(web) == b"hello-from-sandbox\n" and fetch(forwarded) == b"hello-from-sandbox\n"
    first = docker_env.inspect(name)["Id"]
    ab("ab-up", str(repo), check=True)
    ab("ab-down", str(repo), check=True)
    ab("ab-up", str(repo), check=True)
    assert docker_env.inspect(name)["Id"] == first
    serve(repo, 8080)
    assert fetch(web) == b"hello-from-sandbox\n"
    ab("ab-down", "--rm", str(repo), check=True)
    with pytest.raises(AssertionError):
        fetch(web, tries=3)  # the port is closed with the sandbox


def test_concurrent_ups_make_one_container(repo, docker_env):
    procs = [subprocess.Popen(["ab-up", "--json"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(5)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({json.loads(o)["id"] for o, _ in outs}) == 1
    listed = docker_env.docker("ps", "-aq", "--filter", f"label=io.agentsh.project={repo}").stdout.split()
    assert len(listed) == 1


@pytest.mark.parametrize("exec_server", ["1", "0"])
def test_rootless_docker_for_an_ordinary_user(rootless_user, rootless_docker, exec_server):
    """Rootless Docker (dockerd-rootless.sh, the user's own daemon): its root is the user, so agentsh passes no
    --user; files and the home are the user's, statuses and bytes as on Podman, egress proxy modes refused."""
    env = {"DOCKER_HOST": rootless_docker.host, "AGENTSH_ENGINE": "docker", "AGENTSH_EXEC_SERVER": exec_server}
    project = rootless_user.mkdir(f"work/rdock-{uuid.uuid4().hex[:8]}")
    rootless_user.run("git", "init", "-q", str(project), check=True)

    def run(*args, input=None, cwd=project):
        return rootless_user.run("env", *(f"{k}={v}" for k, v in env.items()), *args, cwd=cwd, input=input)

    try:
        up = run("ab-up", "--json")
        assert up.returncode == 0, up.stderr
        name = json.loads(up.stdout)["name"]
        info = rootless_docker.inspect(name)
        assert info["State"]["Running"] and info["Config"]["User"] == "" and info["HostConfig"]["CapDrop"] == ["ALL"]
        doctor = {c["name"]: c for c in json.loads(run("ab-doctor", "--json", "--no-run").stdout)}
        assert "rootless" in doctor["engine"]["detail"], doctor["engine"]
        sub = rootless_user.mkdir(f"{project.relative_to(rootless_user.home)}/sub")
        proc = run("ab-exec", "--", "sh", "-c", "pwd; touch ../made.txt ~/.login && stat -c %u ~/.login; exit 7",
                   cwd=sub)
        assert proc.returncode == 7 and proc.stdout == f"{project}/sub\n0\n".encode(), proc.stderr
        assert os.stat(project / "made.txt").st_uid == rootless_user.uid  # the container's root is the user
        data = bytes(range(256)) * 64
        assert run("ab-exec", "--", "cat", input=data).stdout == data
        got = run("ab-exec", "-e", "SET_HERE=a b", "--", "sh", "-c", 'printf %s "$SET_HERE"')
        assert got.stdout == b"a b", got.stderr
        missing = run("ab-exec", "--", "no-such-program")
        assert missing.returncode == 127
        assert missing.stderr == b"ab-exec: no-such-program: command not found in the sandbox\n"
        # a file credential: in the home's link, written back, not in inspect
        token = f"RDOCK_TOKEN_{uuid.uuid4().hex[:8].upper()}"
        secret = f"file-secret-{uuid.uuid4().hex}".encode()
        rootless_user.run("ab-creds", "set", token, "--file", "/home/agent/.tool/token", "--writeback", input=secret,
                          check=True)
        try:
            rootless_user.run("ab-creds", "grant", token, str(project), check=True)
            got = run("ab-exec", "--", "sh", "-c", "cat ~/.tool/token; printf refreshed > ~/.tool/token")
            assert got.returncode == 0 and got.stdout == secret, got.stderr
            assert rootless_user.run("ab-creds", "get", token, check=True).stdout == b"refreshed"
            assert secret not in rootless_docker.docker("container", "inspect", name).stdout
        finally:
            rootless_user.run("ab-creds", "rm", token)
        rootless_docker.docker("rm", "-f", name)
        back = run("ab-exec", "--", "echo", "back")
        assert back.returncode == 0 and back.stdout == b"back\n" and b"created sandbox" in back.stderr, back.stderr
        # The egress proxy's listener needs root over the sandbox's network namespace: refused, in one line.
        refused = run("ab-up", "--network", "allow")
        assert refused.returncode == 125 and refused.stderr.decode().count("\n") == 1, refused.stderr
        assert b'network modes "allow" and "learn" need Podman' in refused.stderr
        none = run("ab-exec", "--network", "none", "--", "sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1")
        assert none.returncode == 0 and none.stdout.split() == [b"lo"], none.stderr
        if exec_server == "1":  # a published port: rootlesskit's port driver listens on the host
            assert run("ab-up", "-p", "8080").returncode == 0
            port = stable_host_port(str(project), 8080)
            served = run("ab-exec", "--", "sh", "-c", "mkdir -p /tmp/www && echo hello-from-sandbox > "
                         "/tmp/www/index.html && httpd -p 8080 -h /tmp/www")
            assert served.returncode == 0, served.stderr
            assert fetch(port) == b"hello-from-sandbox\n"
        down = run("ab-down", "--rm", "--volumes", "--json")
        assert down.returncode == 0 and json.loads(down.stdout) == [name], down.stderr
        assert rootless_docker.docker("ps", "-aq", "--filter", f"name={name}").stdout == b""
        assert rootless_docker.docker("volume", "ls", "-q", "--filter", f"name={name}").stdout == b""
    finally:
        run("ab-down", "--rm", "--volumes")

def test_compose_siblings_run_on_docker_and_go_with_the_sandbox(repo, docker_env):
    """Docker runs siblings with `docker compose`, or with the stand-alone `docker-compose` (Debian 12's 1.29,
    which scripts/test-setup installs) where the plugin is absent: reached by name, removed by ab-down --rm."""
    import shutil

    if shutil.which("docker-compose") is None and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode != 0:
        if os.environ.get("AGENTSH_REQUIRE_ENGINE") == "1":
            pytest.fail("no Docker Compose: scripts/test-setup installs docker-compose")
        pytest.skip("no Docker Compose here")
    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text(
        json.dumps({"dockerComposeFile": "../compose.yml", "service": "app"}))
    (repo / "www").mkdir()
    (repo / "www" / "index.html").write_text("hello-docker-sibling\n")
    (repo / "compose.yml").write_text(
        f"services:\n  app: {{image: {TINY_IMAGE}, depends_on: [web]}}\n"
        f"  web: {{image: {TINY_IMAGE}, command: [httpd, -f, -p, '8080', -h, /www], volumes: ['./www:/www:ro']}}\n")
    ab("ab-allow", cwd=repo, check=True)
    up = ab("ab-up", "--json", cwd=repo, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        name = json.loads(up.stdout)["name"]
        got = sh(repo, 'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | nc -w 5 web 8080 | tail -1')
        assert got.stdout == b"hello-docker-sibling\n", got.stderr
        (sibling,) = docker_env.docker("ps", "-q", "--filter", f"label=io.agentsh.sibling={name}").stdout.split()
        info = docker_env.inspect(sibling.decode())
        assert info["Config"]["Labels"]["com.docker.compose.project"] == name.lower()
        assert info["Config"]["Labels"]["com.docker.compose.service"] == "web"
        assert list(docker_env.inspect(name)["NetworkSettings"]["Networks"]) == [f"{name}-net"]
        status = json.loads(ab("ab-status", "--json", cwd=repo, check=True).stdout)
        assert [(s["service"], s["state"]) for s in status["siblings"]] == [("web", "running")]
        ab("ab-down", "--rm", "--volumes", cwd=repo, check=True)
        assert docker_env.docker("ps", "-aq", "--filter", f"label=io.agentsh.sibling={name}").stdout == b""
        assert docker_env.docker("network", "inspect", f"{name}-net", check=False).returncode != 0
    finally:
        ab("ab-down", "--rm", "--volumes", cwd=repo)
