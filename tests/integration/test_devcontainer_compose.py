"""A compose-based devcontainer.json against real Podman: the sandbox is the service, a sibling runs beside it."""

import json
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import TINY_IMAGE, ab, git_init, own_dirs_env, podman, remove_sandboxes_under

COMPOSE = f"""
services:
  app:
    image: {TINY_IMAGE}
    environment:
      GREETING: "hi $${{LITERAL}} ${{WHO:-compose}}"
    depends_on: [web]
    privileged: true
  web:
    image: {TINY_IMAGE}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volumes: ["./www:/www:ro", "webdata:/data"]
volumes:
  webdata:
"""
DEVCONTAINER = {"dockerComposeFile": "../compose.yml", "service": "app", "forwardPorts": ["web:8080"],
                "shutdownAction": "stopCompose"}
FETCH = 'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | nc -w 5 web 8080 | tail -1'


def write_project(repo):
    (repo / ".devcontainer").mkdir(parents=True)
    (repo / ".devcontainer" / "devcontainer.json").write_text(json.dumps(DEVCONTAINER))
    (repo / "compose.yml").write_text(COMPOSE)
    (repo / "www").mkdir()
    (repo / "www" / "index.html").write_text("hello-sibling\n")


def siblings_of(sandbox, run_podman=podman):
    proc = run_podman("ps", "-a", "--filter", f"label=io.agentsh.sibling={sandbox}", "--format", "json", check=False)
    return {c["Names"][0]: c["State"] for c in json.loads(proc.stdout or "[]")}


def remove_siblings_under(base, run_podman=podman):
    """What a failed test may leave: sibling containers, their networks and volumes (agentsh-dc-*)."""
    for record in Path(base).glob("xdg/*/agentsh/compose/*.json"):
        sandbox = record.name[:-len(".json")]
        for name in siblings_of(sandbox, run_podman):
            run_podman("rm", "-f", "-t", "0", name, check=False)
        for net in (f"{sandbox}-net", f"{sandbox}-int"):
            run_podman("network", "rm", "-f", net, check=False)


@pytest.fixture(scope="class")
def composed(tiny_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("compose")
    env = own_dirs_env(base, tiny_image)
    repo = git_init(base / "repo")
    write_project(repo)
    try:
        ab("ab-allow", str(repo), env=env, check=True)
        up = ab("ab-up", str(repo), "--json", env=env, timeout=300)
        assert up.returncode == 0, up.stderr.decode()
        yield SimpleNamespace(repo=repo, env=env, base=base, record=json.loads(up.stdout), err=up.stderr.decode())
    finally:
        ab("ab-down", "--rm", "--volumes", str(repo), env=env)
        remove_siblings_under(str(base))
        remove_sandboxes_under(str(base))


def run(p, script):
    return ab("ab-exec", "--dir", str(p.repo), "--", "sh", "-c", script, env=p.env)


class TestAComposeProject:
    def test_the_sandbox_reaches_its_sibling_by_name(self, composed):
        out = run(composed, FETCH)
        assert out.returncode == 0 and out.stdout == b"hello-sibling\n", out.stderr

    def test_the_sandbox_is_the_service_with_agentshs_hardening(self, composed):
        name = composed.record["name"]
        info = json.loads(podman("container", "inspect", name).stdout)[0]
        assert info["HostConfig"]["Privileged"] is False  # privileged: true is refused with the reason
        assert "services.app.privileged (gives the sandbox every capability" in composed.err
        assert run(composed, 'echo "$GREETING"').stdout == b"hi ${LITERAL} compose\n"
        assert list(info["NetworkSettings"]["Networks"]) == [f"{name}-net"]

    def test_the_sibling_runs_from_agentshs_own_file(self, composed):
        name = composed.record["name"]
        (sibling,) = siblings_of(name)
        labels = json.loads(podman("container", "inspect", sibling).stdout)[0]["Config"]["Labels"]
        state = Path(composed.env["XDG_STATE_HOME"]) / "agentsh" / "compose" / name
        assert labels["com.docker.compose.project.working_dir"] == str(state)
        assert labels["com.docker.compose.project"] == name.lower()
        assert not str(state).startswith(str(composed.repo))

    def test_a_service_port_forward_is_reachable_on_host_loopback(self, composed):
        (sibling,) = siblings_of(composed.record["name"])
        mapping = podman("port", sibling, "8080/tcp").stdout.split()[0]
        assert mapping.startswith("127.0.0.1:")
        with urllib.request.urlopen(f"http://{mapping}/index.html", timeout=10) as r:
            assert r.read() == b"hello-sibling\n"

    def test_ab_status_lists_the_sibling(self, composed):
        out = json.loads(ab("ab-status", "--json", str(composed.repo), env=composed.env, check=True).stdout)
        assert [(s["service"], s["state"]) for s in out["siblings"]] == [("web", "running")]

    def test_a_crashed_sibling_is_restarted_by_the_next_ab_up(self, composed):
        (sibling,) = siblings_of(composed.record["name"])
        podman("kill", sibling)
        ab("ab-up", str(composed.repo), env=composed.env, check=True)
        assert siblings_of(composed.record["name"]) == {sibling: "running"}
        assert run(composed, FETCH).stdout == b"hello-sibling\n"

    def test_an_edited_compose_file_needs_ab_allow_again(self, composed):
        path = composed.repo / "compose.yml"
        path.write_text(COMPOSE.replace("privileged: true", "privileged: true\n    cap_add: [ALL]"))
        try:
            out = json.loads(ab("ab-status", "--json", str(composed.repo), env=composed.env, check=True).stdout)
            assert out["trust"] == "blocked" and "changed since" in out["reason"]
        finally:
            path.write_text(COMPOSE)

    def test_ab_down_stops_it_and_rm_leaves_no_trace(self, composed):
        name = composed.record["name"]
        ab("ab-down", str(composed.repo), env=composed.env, check=True)
        assert set(siblings_of(name).values()) == {"exited"}
        ab("ab-up", str(composed.repo), env=composed.env, check=True)
        assert set(siblings_of(name).values()) == {"running"}
        ab("ab-down", "--rm", "--volumes", str(composed.repo), env=composed.env, check=True)
        assert siblings_of(name) == {}
        assert podman("network", "exists", f"{name}-net", check=False).returncode != 0
        volumes = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert not [v for v in volumes if v.startswith("agentsh-dc-") and v.endswith("-webdata")
                    and name.rsplit("-", 1)[-1] in v]
        assert not (Path(composed.env["XDG_STATE_HOME"]) / "agentsh" / "compose" / name).exists()


@pytest.fixture(scope="class")
def allowlisted(tiny_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("compose-allow")
    env = own_dirs_env(base, tiny_image)
    config = Path(env["XDG_CONFIG_HOME"]) / "agentsh" / "config.toml"
    config.write_text(config.read_text() + '[network]\nmode = "allow"\nallow = ["allowed.example"]\n')
    repo = git_init(base / "repo")
    write_project(repo)
    try:
        ab("ab-allow", str(repo), env=env, check=True)
        up = ab("ab-up", str(repo), "--json", env=env, timeout=300)
        assert up.returncode == 0, up.stderr.decode()
        yield SimpleNamespace(repo=repo, env=env, record=json.loads(up.stdout), err=up.stderr.decode())
    finally:
        ab("ab-down", "--rm", "--volumes", str(repo), env=env)
        remove_siblings_under(str(base))
        remove_sandboxes_under(str(base))


class TestSiblingsUnderAnAllowlist:
    def test_the_sibling_is_reached_by_name(self, allowlisted):
        out = run(allowlisted, FETCH)
        assert out.returncode == 0 and out.stdout == b"hello-sibling\n", out.stderr

    def test_a_denied_outside_name_is_still_refused(self, allowlisted):
        out = run(allowlisted, 'printf "GET http://denied.example.org/ HTTP/1.0\\r\\nHost: denied.example.org'
                               '\\r\\n\\r\\n" | nc -w 5 127.0.0.1 3128 | head -1')
        assert out.stdout.startswith(b"HTTP/1.1 403"), out.stdout

    def test_the_siblings_network_has_no_way_out(self, allowlisted):
        name = allowlisted.record["name"]
        net = json.loads(podman("network", "inspect", f"{name}-int").stdout)[0]
        assert net.get("internal") is True and not [s for s in net["subnets"] if s.get("gateway")]  # host not on it
        out = run(allowlisted, "ip route; echo | nc -w 3 1.1.1.1 80; echo status=$?")
        assert b"default" not in out.stdout and b"status=1" in out.stdout
        (sibling,) = siblings_of(name)
        sib = podman("exec", sibling, "sh", "-c", "ip route; echo | nc -w 3 1.1.1.1 80; echo status=$?").stdout
        assert "default" not in sib and "status=1" in sib  # no relay around the proxy either

    def test_the_forward_is_not_published_and_that_is_said(self, allowlisted):
        assert "forwardPorts web:8080 are not published" in allowlisted.err


def test_rootless_siblings_are_reached_by_name_and_removed(rootless_user):
    repo = rootless_user.mkdir(f"work/compose-{uuid.uuid4().hex[:8]}")
    rootless_user.run("git", "init", "-q", str(repo), check=True)
    for rel, text in (("compose.yml", COMPOSE), (".devcontainer/devcontainer.json", json.dumps(DEVCONTAINER)),
                      ("www/index.html", "hello-sibling\n")):
        rootless_user.run("mkdir", "-p", str((repo / rel).parent), check=True)
        rootless_user.run("sh", "-c", f"cat > {repo / rel}", input=text.encode(), check=True)
    user_podman = lambda *a, check=False: _as(rootless_user, *a)  # noqa: E731
    sandbox = None
    try:
        rootless_user.run("ab-allow", str(repo), check=True)
        up = rootless_user.run("ab-up", "--json", str(repo), check=True)
        sandbox = json.loads(up.stdout)["name"]
        out = rootless_user.run("ab-exec", "--", "sh", "-c", FETCH, cwd=repo, check=True)
        assert out.stdout == b"hello-sibling\n"
        (sibling,) = siblings_of(sandbox, user_podman)
        mapping = user_podman("port", sibling, "8080/tcp").stdout.split()[0]
        with urllib.request.urlopen(f"http://{mapping}/index.html", timeout=10) as r:
            assert r.read() == b"hello-sibling\n"
        rootless_user.run("ab-down", "--rm", "--volumes", str(repo), check=True)
        assert siblings_of(sandbox, user_podman) == {}
        assert user_podman("network", "exists", f"{sandbox}-net").returncode != 0
    finally:
        rootless_user.run("ab-down", "--rm", "--volumes", str(repo))
        if sandbox:
            for name in siblings_of(sandbox, user_podman):
                user_podman("rm", "-f", name)
            user_podman("network", "rm", "-f", f"{sandbox}-net")
        rootless_user.run("rm", "-rf", str(repo))


def _as(user, *args):
    proc = user.run("podman", *args)
    return SimpleNamespace(returncode=proc.returncode, stdout=proc.stdout.decode(), stderr=proc.stderr.decode())


def test_rootless_siblings_under_an_allowlist(rootless_user):
    """Rootless Podman, mode "allow": the sibling by name on the internal network, a denied name refused."""
    repo = rootless_user.mkdir(f"work/compose-allow-{uuid.uuid4().hex[:8]}")
    rootless_user.run("git", "init", "-q", str(repo), check=True)
    for rel, text in (("compose.yml", COMPOSE), (".devcontainer/devcontainer.json", json.dumps(DEVCONTAINER)),
                      ("www/index.html", "hello-sibling\n"),
                      (".agentsh.toml", '[network]\nmode = "allow"\nallow = ["allowed.example"]\n')):
        rootless_user.run("mkdir", "-p", str((repo / rel).parent), check=True)
        rootless_user.run("sh", "-c", f"cat > {repo / rel}", input=text.encode(), check=True)
    user_podman = lambda *a, check=False: _as(rootless_user, *a)  # noqa: E731
    sandbox = None
    try:
        rootless_user.run("ab-allow", str(repo), check=True)
        up = rootless_user.run("ab-up", "--json", str(repo), check=True)
        sandbox = json.loads(up.stdout)["name"]
        out = rootless_user.run("ab-exec", "--", "sh", "-c", FETCH, cwd=repo, check=True)
        assert out.stdout == b"hello-sibling\n"
        denied = rootless_user.run("ab-exec", "--", "sh", "-c",
                                   'printf "GET http://denied.example.org/ HTTP/1.0\\r\\n\\r\\n" | nc -w 5 127.0.0.1 3128'
                                   ' | head -1; echo | nc -w 3 1.1.1.1 80; echo status=$?', cwd=repo)
        assert denied.stdout.startswith(b"HTTP/1.1 403") and b"status=1" in denied.stdout, denied.stdout
    finally:
        rootless_user.run("ab-down", "--rm", "--volumes", str(repo))
        if sandbox:
            assert siblings_of(sandbox, user_podman) == {}
            assert user_podman("network", "exists", f"{sandbox}-int").returncode != 0
        rootless_user.run("rm", "-rf", str(repo))
