"""A registry (OCI) feature against a real registry on loopback and real Podman.

Debian's docker-registry (the CNCF distribution registry) runs on 127.0.0.1
with a port and a storage dir of its own; the feature is pushed to it as an
OCI artifact with plain HTTP requests, the way `devcontainer features
publish` pushes one. Then `ab-up` fetches, verifies, builds and runs it; with
the registry stopped, a rebuild comes from agentsh's cache alone.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from types import SimpleNamespace

import pytest

from tests.conftest import TINY_IMAGE, ab, git_init, own_dirs_env, podman, remove_sandboxes_under
from tests.oci_registry import feature_tar, push

REGISTRY = "/usr/bin/docker-registry"
FEATURE = {"id": "hello", "version": "1.0.0", "options": {"greeting": {"type": "string", "default": "hey"}},
           "containerEnv": {"HELLO_OCI": "from-the-layer"}}
INSTALL = '#!/bin/sh\nset -e\necho "$GREETING" > /hello-oci\necho "$_REMOTE_USER" > /hello-oci-user\n'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackRegistry:
    """docker-registry serving on 127.0.0.1:PORT from a temp dir; stopped (by its pid) in stop()."""

    def __init__(self, base):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = base / "registry-storage"
        self.storage.mkdir()
        self.config = base / "registry.yml"
        self.config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                               f"    rootdirectory: {self.storage}\nhttp:\n  addr: {self.host}\n")
        self.log = open(base / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY, "serve", str(self.config)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"docker-registry did not start: {(base / 'registry.log').read_text()[-500:]}")
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="class")
def oci_project(tiny_image, tmp_path_factory):
    if not os.path.exists(REGISTRY):
        if os.environ.get("AGENTSH_REQUIRE_ENGINE") == "1":
            pytest.fail(f"{REGISTRY} is missing (scripts/test-setup installs docker-registry)")
        pytest.skip(f"{REGISTRY} is missing (apt-get install docker-registry)")
    base = tmp_path_factory.mktemp("dcoci")
    env = {**own_dirs_env(base, tiny_image), "XDG_CACHE_HOME": str(base / "xdg" / "xdg_cache_home")}
    registry = LoopbackRegistry(base)
    digest = push(f"http://{registry.host}", "ns/hello", "1", feature_tar(FEATURE, INSTALL))
    ref = f"{registry.host}/ns/hello:1"
    repo = git_init(base / "repo")
    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text(json.dumps(
        {"image": TINY_IMAGE, "features": {ref: {"greeting": "hi-from-registry"}}}))
    images = set()
    try:
        ab("ab-allow", str(repo), env=env, check=True)
        dry = ab("ab-up", str(repo), "--dry-run", "--json", env=env, check=True, timeout=120)
        tag = json.loads(dry.stdout)["build"]["tag"]
        made_by_dry_run = (podman("ps", "-a", "--filter", f"label=io.agentsh.project={repo}", "--format",
                                  "{{.Names}}").stdout.strip(),
                           podman("image", "exists", tag, check=False).returncode == 0)
        up = ab("ab-up", str(repo), "--json", env=env, timeout=300)
        assert up.returncode == 0, up.stderr.decode()
        record = json.loads(up.stdout)
        images.add(record["image"])
        yield SimpleNamespace(repo=repo, env=env, registry=registry, digest=digest, ref=ref, record=record,
                              plan=json.loads(dry.stdout), dry_err=dry.stderr.decode(), err=up.stderr.decode(),
                              images=images, base=base, made_by_dry_run=made_by_dry_run)
    finally:
        registry.stop()
        remove_sandboxes_under(str(base))
        for image in images:  # only the images this project's ab-up built
            podman("rmi", "-f", image, check=False)
        shutil.rmtree(registry.storage, ignore_errors=True)


def run(p, script):
    return ab("ab-exec", "--dir", str(p.repo), "--", "sh", "-c", script, env=p.env)


class TestARegistryFeature:
    def test_the_dry_run_shows_the_digest_and_makes_nothing(self, oci_project):
        [f] = oci_project.plan["build"]["features"]
        assert f["id"] == "hello" and f["digest"] == oci_project.digest
        assert f["resolved"] == f"{oci_project.registry.host}/ns/hello@{oci_project.digest}"
        assert f["options"] == {"GREETING": "hi-from-registry"} and f["pinned_by"] == "resolved now"
        assert oci_project.plan["features"][0]["digest"] == oci_project.digest
        assert f"resolving feature {oci_project.ref}" in oci_project.dry_err
        assert oci_project.made_by_dry_run == ("", False)  # no container, no image
        assert oci_project.plan["build"]["tag"] == oci_project.record["image"]

    def test_the_build_names_the_digest(self, oci_project):
        assert f"installing features hello ({oci_project.registry.host}/ns/hello@{oci_project.digest})" \
            in oci_project.err

    def test_its_install_sh_ran_in_the_build_with_its_options(self, oci_project):
        out = run(oci_project, 'cat /hello-oci /hello-oci-user; echo "$HELLO_OCI"')
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode() == "hi-from-registry\nroot\nfrom-the-layer\n"
        assert not os.path.exists("/hello-oci")  # in the build container, never on the host

    def test_agentsh_recorded_the_digest_it_resolved(self, oci_project):
        records = list((oci_project.base / "xdg/xdg_state_home/agentsh/features/lock").glob("*.json"))
        [record] = [json.loads(r.read_text()) for r in records]
        assert record["features"][oci_project.ref]["resolved"].endswith("@" + oci_project.digest)

    def test_with_the_registry_stopped_a_rebuild_comes_from_the_cache(self, oci_project):
        oci_project.registry.stop()
        ab("ab-down", "--rm", str(oci_project.repo), env=oci_project.env, check=True)
        podman("rmi", "-f", oci_project.record["image"])  # the built layer is gone too: a real rebuild
        up = ab("ab-up", str(oci_project.repo), "--json", env=oci_project.env, timeout=300)
        assert up.returncode == 0, up.stderr.decode()
        err = up.stderr.decode()
        assert "installing features hello" in err and "resolving feature" not in err and "fetching" not in err
        assert json.loads(up.stdout)["image"] == oci_project.record["image"]  # the same digest, the same tag
        assert run(oci_project, "cat /hello-oci").stdout == b"hi-from-registry\n"

    def test_a_lock_file_the_agent_writes_makes_the_project_untrusted(self, oci_project):
        """The sandbox can write the project: a devcontainer-lock.json pinning another digest is not obeyed."""
        lock = {"features": {oci_project.ref: {"resolved": f"{oci_project.registry.host}/ns/hello@sha256:{'1' * 64}"}}}
        wrote = run(oci_project, f"cat > .devcontainer/devcontainer-lock.json <<'EOF'\n{json.dumps(lock)}\nEOF")
        assert wrote.returncode == 0, wrote.stderr.decode()
        try:
            dry = ab("ab-up", str(oci_project.repo), "--dry-run", "--json", env=oci_project.env, check=True)
            assert b"is not trusted" in dry.stderr and b"devcontainer-lock.json" in dry.stderr
            plan = json.loads(dry.stdout)
            assert plan["devcontainer"] is None and plan["build"] is None and plan["image"] == TINY_IMAGE
        finally:
            (oci_project.repo / ".devcontainer" / "devcontainer-lock.json").unlink()
        again = ab("ab-up", str(oci_project.repo), "--dry-run", "--json", env=oci_project.env, check=True)
        assert json.loads(again.stdout)["build"]["features"][0]["digest"] == oci_project.digest  # trusted again

    def test_an_unreachable_registry_is_one_line_and_nothing_is_made(self, oci_project):
        oci_project.registry.stop()
        other = git_init(oci_project.base / "other")
        (other / ".devcontainer").mkdir()
        ref = f"{oci_project.registry.host}/ns/hello:2"  # a tag never resolved: it needs the registry
        (other / ".devcontainer" / "devcontainer.json").write_text(json.dumps(
            {"image": TINY_IMAGE, "features": {ref: {}}}))
        ab("ab-allow", str(other), env=oci_project.env, check=True)
        up = ab("ab-up", str(other), "--json", env=oci_project.env, timeout=120)
        assert up.returncode == 125
        last = up.stderr.decode().rstrip().splitlines()[-1]
        assert last.startswith(f"ab-up: feature {ref}: registry {oci_project.registry.host} cannot be reached")
        assert "Traceback" not in up.stderr.decode()
        listed = podman("ps", "-a", "--filter", f"label=io.agentsh.project={other}", "--format", "{{.Names}}")
        assert listed.stdout.strip() == ""


def test_rootless_a_registry_feature_is_fetched_into_the_users_cache_and_installed(rootless_user, tmp_path):
    """As an ordinary user with rootless Podman: the same fetch, a cache of the user's own, the build layer."""
    if not os.path.exists(REGISTRY):
        pytest.skip(f"{REGISTRY} is missing (apt-get install docker-registry)")
    registry = LoopbackRegistry(tmp_path)
    repo = rootless_user.mkdir(f"work/oci-{os.urandom(4).hex()}")
    cache = repo.parent / f"{repo.name}-cache"
    as_user = ("env", f"XDG_CACHE_HOME={cache}")  # a cache of this test's own, removed after
    image = None
    try:
        digest = push(f"http://{registry.host}", "ns/hello", "1", feature_tar(FEATURE, INSTALL))
        rootless_user.run("git", "init", "-q", str(repo), check=True)
        dc = {"image": TINY_IMAGE, "features": {f"{registry.host}/ns/hello:1": {"greeting": "rootless-hi"}}}
        rootless_user.run("mkdir", "-p", str(repo / ".devcontainer"), check=True)
        rootless_user.run("sh", "-c", f"cat > {repo}/.devcontainer/devcontainer.json", input=json.dumps(dc).encode(),
                          check=True)
        rootless_user.run("ab-allow", str(repo), check=True)
        up = rootless_user.run(*as_user, "ab-up", "--json", str(repo))
        assert up.returncode == 0, up.stderr.decode()
        image = json.loads(up.stdout)["image"]
        assert digest in up.stderr.decode()
        out = rootless_user.run("ab-exec", "--", "cat", "/hello-oci", cwd=repo, check=True)
        assert out.stdout == b"rootless-hi\n"
        blob = cache / "agentsh/features/sha256" / digest.split(":")[1]
        assert blob.is_file() and blob.stat().st_uid == rootless_user.uid  # the user's cache, not root's
    finally:
        registry.stop()
        rootless_user.run("ab-down", "--rm", "--volumes", str(repo))
        if image:
            rootless_user.run("podman", "rmi", "-f", image)
        rootless_user.run("rm", "-rf", str(repo), str(cache))
