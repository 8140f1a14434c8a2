"""devcontainer.json against real Podman: a Dockerfile build, postCreateCommand, env, ports, trust."""

import json
import os
from types import SimpleNamespace

import pytest

from agentsh.policy.ports import stable_host_port
from tests.conftest import TINY_IMAGE, ab, git_init, inspect, own_dirs_env, podman, remove_sandboxes_under

pytestmark = pytest.mark.usefixtures("sandbox_env")

DEVCONTAINER = """// A devcontainer.json as editors write them: comments and trailing commas.
{
  "name": "tiny",
  "build": {
    "dockerfile": "Dockerfile",   // next to this file
    "context": "..",
    "args": { "GREETING": "hello-arg", },
  },
  /* what the sandbox gets */
  "containerEnv": { "APP_ENV": "dev", "LEAK": "${localEnv:HOME}" },
  "forwardPorts": [3000],
  "postCreateCommand": "echo created >> /tmp/post-create.log && cat /greeting > /tmp/greeting-seen",
  "initializeCommand": "touch /tmp/agentsh-initialize-ran-on-host",
  "customizations": { "vscode": { "extensions": ["ms-python.python"] } },
}
"""
DOCKERFILE = f"""FROM {TINY_IMAGE}
ARG GREETING
RUN echo "$GREETING" > /greeting && echo dev:x:4321:4321::/home/agent:/bin/sh >> /etc/passwd
"""


@pytest.fixture
def dc_repo(repo):
    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text(DEVCONTAINER)
    (repo / ".devcontainer" / "Dockerfile").write_text(DOCKERFILE)
    yield repo
    remove_dc_images()


def run(repo, script, env=None):
    return ab("ab-exec", "--dir", str(repo), "--", "sh", "-c", script, env=env)


def remove_dc_images():
    for row in json.loads(podman("images", "--format", "json", check=False).stdout or "[]"):
        for tag in row.get("Names") or []:
            if tag.startswith("localhost/agentsh-dc-"):
                podman("rmi", "-f", tag, check=False)


@pytest.fixture(scope="class")
def built(tiny_image, tmp_path_factory):
    """One devcontainer project: an ab-up before ab-allow, then allowed, built and up once.

    Class-scoped (the build is the slow part); it keeps its own agentsh dirs, which
    every command of the class's tests is run with.
    """
    base = tmp_path_factory.mktemp("devcontainer")
    env = own_dirs_env(base, tiny_image)
    repo = git_init(base / "repo")
    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text(DEVCONTAINER)
    (repo / ".devcontainer" / "Dockerfile").write_text(DOCKERFILE)
    try:
        untrusted = ab("ab-up", str(repo), "--json", env=env, check=True)
        ab("ab-allow", str(repo), env=env, check=True)
        up = ab("ab-up", str(repo), "--json", env=env, timeout=300)
        assert up.returncode == 0, up.stderr.decode()
        yield SimpleNamespace(repo=repo, env=env, untrusted=untrusted, record=json.loads(up.stdout),
                              err=up.stderr.decode())
    finally:
        remove_sandboxes_under(str(base))
        remove_dc_images()


class TestAnAllowedDevcontainer:
    def test_before_ab_allow_it_is_ignored_for_the_users_image(self, built):
        assert b"devcontainer.json (with .devcontainer/Dockerfile) is not trusted" in built.untrusted.stderr
        assert json.loads(built.untrusted.stdout)["image"] == TINY_IMAGE  # nothing from the repo

    def test_it_is_built_into_its_own_image(self, built):
        assert built.record["image"].startswith("localhost/agentsh-dc-")
        assert podman("image", "exists", built.record["image"], check=False).returncode == 0

    def test_what_agentsh_ignores_is_said(self, built):
        assert "ignored: customizations (editor settings)" in built.err
        assert "initializeCommand (it would run on the host; never run)" in built.err

    def test_post_create_saw_the_build_arg_and_a_host_value_reaches_commands_only(self, built):
        out = run(built.repo, 'cat /tmp/post-create.log /tmp/greeting-seen; echo "$APP_ENV [${LEAK:-}]"',
                  built.env).stdout.decode()
        assert out == f"created\nhello-arg\ndev [{os.environ['HOME']}]\n"  # ${localEnv:HOME}, given per command
        env = inspect(built.record["name"])["Config"]["Env"]
        assert "APP_ENV=dev" in env and not any(e.startswith("LEAK=") for e in env)

    def test_forward_ports_are_published_on_the_projects_stable_host_ports(self, built):
        bindings = inspect(built.record["name"])["HostConfig"]["PortBindings"]
        assert bindings["3000/tcp"][0]["HostPort"] == str(stable_host_port(str(built.repo), 3000))

    def test_initialize_command_never_runs_on_the_host(self, built):
        assert not os.path.exists("/tmp/agentsh-initialize-ran-on-host")

    def test_post_create_runs_once_per_creation(self, built):
        """An up of the running sandbox, or a stop and start, does not run it again (last: it restarts)."""
        ab("ab-up", str(built.repo), env=built.env, check=True)
        ab("ab-down", str(built.repo), env=built.env, check=True)
        ab("ab-up", str(built.repo), env=built.env, check=True)
        assert run(built.repo, "cat /tmp/post-create.log", built.env).stdout == b"created\n"


def test_editing_the_dockerfile_makes_the_project_untrusted_again(dc_repo):
    ab("ab-allow", str(dc_repo), check=True)
    (dc_repo / ".devcontainer" / "Dockerfile").write_text(DOCKERFILE + "RUN touch /evil\n")
    proc = ab("ab-up", str(dc_repo), "--json", check=True)
    assert b"is not trusted" in proc.stderr and json.loads(proc.stdout)["image"] == TINY_IMAGE


def test_remote_user_and_a_failing_post_create(dc_repo):
    text = DEVCONTAINER.replace('"name": "tiny",', '"name": "tiny", "remoteUser": "dev",')
    text = text.replace('"postCreateCommand": "echo created',
                        '"postCreateCommand": "test -e /no/such/file && echo created')
    (dc_repo / ".devcontainer" / "devcontainer.json").write_text(text)
    ab("ab-allow", str(dc_repo), check=True)
    proc = ab("ab-up", str(dc_repo), timeout=300)
    assert proc.returncode == 125
    assert proc.stderr.decode().rstrip().splitlines()[-1].startswith(
        "ab-up: postCreateCommand 'test -e /no/such/file")
    (dc_repo / ".devcontainer" / "devcontainer.json").write_text(text.replace("test -e /no/such/file && ", ""))
    ab("ab-allow", str(dc_repo), check=True)
    ab("ab-up", str(dc_repo), check=True, timeout=300)
    assert run(dc_repo, "id -un").stdout == b"dev\n"


# -- variables, lifecycle, volumes, features, runArgs: one image-based project ------------

SPEC_DC = {
    "name": "spec",
    "image": TINY_IMAGE,
    "features": {"./hello": {"greeting": "hi-from-feature"}},
    "containerEnv": {"TOK": "${localEnv:DC_TEST_TOKEN}", "WS_NAME": "${localWorkspaceFolderBasename}"},
    "remoteEnv": {"PATH": "${containerEnv:PATH}:/opt/extra", "WS": "${containerWorkspaceFolder}"},
    "mounts": ["source=data,target=/data,type=volume", "type=tmpfs,target=/scratch"],
    "runArgs": ["--privileged", "--add-host=example.test:127.0.0.2", "--cap-add=SYS_ADMIN"],
    "onCreateCommand": "echo once >> /data/created",
    "postCreateCommand": {"a": "cd ${containerWorkspaceFolder} && pwd > /tmp/where", "b": ["touch", "/tmp/b"]},
    "postStartCommand": "echo start >> /tmp/starts",
}
FEATURE = {"id": "hello", "version": "1.0.0",
           "options": {"greeting": {"type": "string", "default": "hey"}},
           "containerEnv": {"HELLO_FEATURE": "yes"}}


def remove_dc_volumes():
    for row in json.loads(podman("volume", "ls", "--format", "json", check=False).stdout or "[]"):
        if row.get("Name", "").startswith("agentsh-dc-"):
            podman("volume", "rm", "-f", row["Name"], check=False)


@pytest.fixture(scope="class")
def spec_project(tiny_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("dcspec")
    env = {**own_dirs_env(base, tiny_image), "DC_TEST_TOKEN": "host-only-7f3a"}
    repo = git_init(base / "repo")
    (repo / ".devcontainer" / "hello").mkdir(parents=True)
    (repo / ".devcontainer" / "devcontainer.json").write_text(json.dumps(SPEC_DC, indent=2))
    (repo / ".devcontainer" / "hello" / "devcontainer-feature.json").write_text(json.dumps(FEATURE))
    (repo / ".devcontainer" / "hello" / "install.sh").write_text(
        '#!/bin/sh\nset -e\necho "$GREETING" > /hello-feature\n'
        'if [ -s "${SSL_CERT_FILE:-}" ]; then echo "$SSL_CERT_FILE" > /hello-ca; fi\n')
    try:
        ab("ab-allow", str(repo), env=env, check=True)
        dry = ab("ab-up", str(repo), "--dry-run", "--json", env=env, check=True)
        up = ab("ab-up", str(repo), "--json", env=env, timeout=300)
        assert up.returncode == 0, up.stderr.decode()
        yield SimpleNamespace(repo=repo, env=env, record=json.loads(up.stdout), err=up.stderr.decode(),
                              plan=json.loads(dry.stdout))
    finally:
        remove_sandboxes_under(str(base))
        remove_dc_images()
        remove_dc_volumes()


class TestAnImageBasedDevcontainer:
    def test_the_dry_run_made_nothing_and_said_what_it_would(self, spec_project):
        plan = spec_project.plan
        assert plan["build"]["base"] == TINY_IMAGE and [f["id"] for f in plan["build"]["features"]] == ["hello"]
        assert {"property": "runArgs --privileged",
                "why": "gives the sandbox every capability and the host's devices"} in plan["not_applied"]
        assert plan["env_per_command"] == ["TOK"] and "PATH" in plan["env"]
        targets = {m["target"]: m["type"] for m in plan["mounts"]}
        assert targets["/data"] == "volume" and targets["/scratch"] == "tmpfs"

    def test_a_dangerous_run_arg_is_refused_with_the_reason(self, spec_project):
        assert "runArgs --privileged (gives the sandbox every capability and the host's devices)" in spec_project.err
        assert "runArgs --cap-add=SYS_ADMIN (adds capabilities" in spec_project.err
        host = inspect(spec_project.record["name"])["HostConfig"]
        assert host["Privileged"] is False and "CAP_SYS_ADMIN" not in (host.get("CapAdd") or [])
        assert "example.test" in run(spec_project.repo, "cat /etc/hosts", spec_project.env).stdout.decode()

    def test_substitution_reaches_inside(self, spec_project):
        out = run(spec_project.repo, 'echo "$PATH|$WS|$WS_NAME|$TOK|$HELLO_FEATURE"', spec_project.env)
        path, ws, ws_name, tok, feature = out.stdout.decode().strip().split("|")
        assert path.endswith(":/opt/extra") and path.startswith("/")  # ${containerEnv:PATH} from the image
        assert ws == str(spec_project.repo) and ws_name == "repo" and feature == "yes"
        assert tok == "host-only-7f3a"  # a host value: given to the command, not to the container
        assert not any("host-only-7f3a" in e for e in inspect(spec_project.record["name"])["Config"]["Env"])

    def test_the_local_feature_is_installed_with_its_option(self, spec_project):
        assert run(spec_project.repo, "cat /hello-feature", spec_project.env).stdout == b"hi-from-feature\n"

    def test_the_feature_install_trusted_the_hosts_ca_bundle_without_keeping_it(self, spec_project):
        from agentsh.sandbox.spec import host_ca_bundle

        if host_ca_bundle() is None:
            pytest.skip("this host has no CA bundle")
        out = run(spec_project.repo, "cat /hello-ca; ls /run/agentsh/ca-bundle.crt", spec_project.env)
        assert out.stdout.decode().splitlines()[0] == "/run/agentsh/ca-bundle.crt"  # a build secret, then gone
        image = inspect(spec_project.record["name"])["Image"]
        proc = podman("run", "--rm", image, "ls", "/run/agentsh/ca-bundle.crt", check=False)
        assert proc.returncode != 0  # not in the image

    def test_lifecycle_commands_ran_once_in_the_project_and_a_volume_keeps_data(self, spec_project):
        r, env = spec_project.repo, spec_project.env
        assert run(r, "cat /tmp/where; ls /tmp/b; cat /tmp/starts", env).stdout.decode() == f"{r}\n/tmp/b\nstart\n"
        ab("ab-down", str(r), env=env, check=True)
        ab("ab-up", str(r), env=env, check=True)
        assert run(r, "cat /data/created /tmp/starts", env).stdout.decode() == "once\nstart\nstart\n"  # each start
        ab("ab-up", str(r), "--recreate", env=env, check=True, timeout=300)  # a new sandbox, the same volume
        assert run(r, "cat /data/created", env).stdout.decode() == "once\nonce\n"
        mounts = {m["Destination"]: m for m in inspect(spec_project.record["name"])["Mounts"]}
        assert mounts["/data"]["Name"].startswith("agentsh-dc-") and mounts["/data"]["Type"] == "volume"
