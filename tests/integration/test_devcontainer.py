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
    for row in json.loads(podman("images", "--format", "json").stdout or "[]"):
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
        assert "ignoring customizations" in built.err and "never running initializeCommand" in built.err

    def test_post_create_saw_the_build_arg_and_the_env_has_no_local_env(self, built):
        out = run(built.repo, 'cat /tmp/post-create.log /tmp/greeting-seen; echo "$APP_ENV [${LEAK:-}]"',
                  built.env).stdout.decode()
        assert out == "created\nhello-arg\ndev []\n"

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
        "ab-up: postCreateCommand 'sh -c test -e /no/such/file")
    (dc_repo / ".devcontainer" / "devcontainer.json").write_text(text.replace("test -e /no/such/file && ", ""))
    ab("ab-allow", str(dc_repo), check=True)
    ab("ab-up", str(dc_repo), check=True, timeout=300)
    assert run(dc_repo, "id -un").stdout == b"dev\n"
