"""devcontainer.json against real Podman: a Dockerfile build, postCreateCommand, env, ports, trust."""

import json

import pytest

from agentsh.policy.ports import stable_host_port
from tests.conftest import TINY_IMAGE, ab, inspect, podman

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
    for row in json.loads(podman("images", "--format", "json").stdout or "[]"):
        for tag in row.get("Names") or []:
            if tag.startswith("localhost/agentsh-dc-"):
                podman("rmi", "-f", tag, check=False)


def run(repo, script):
    return ab("ab-exec", "--dir", str(repo), "--", "sh", "-c", script)


def test_untrusted_devcontainer_is_ignored_then_allowed_builds_and_runs_post_create_once(dc_repo):
    proc = ab("ab-up", str(dc_repo), "--json", check=True)
    assert b"devcontainer.json (with .devcontainer/Dockerfile) is not trusted" in proc.stderr
    assert json.loads(proc.stdout)["image"] == TINY_IMAGE  # the user's image, nothing from the repo

    ab("ab-allow", str(dc_repo), check=True)
    proc = ab("ab-up", str(dc_repo), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    record, err = json.loads(proc.stdout), proc.stderr.decode()
    assert record["image"].startswith("localhost/agentsh-dc-")
    assert "ignoring customizations" in err and "never running initializeCommand" in err
    assert podman("image", "exists", record["image"], check=False).returncode == 0
    out = run(dc_repo, 'cat /tmp/post-create.log /tmp/greeting-seen; echo "$APP_ENV [${LEAK:-}]"').stdout.decode()
    assert out == "created\nhello-arg\ndev []\n"
    # once per creation: an up of the running sandbox, or a stop and start, does not run it again
    ab("ab-up", str(dc_repo), check=True)
    ab("ab-down", str(dc_repo), check=True)
    ab("ab-up", str(dc_repo), check=True)
    assert run(dc_repo, "cat /tmp/post-create.log").stdout == b"created\n"
    # forwardPorts are published on the project's stable host ports
    bindings = inspect(record["name"])["HostConfig"]["PortBindings"]
    assert bindings["3000/tcp"][0]["HostPort"] == str(stable_host_port(str(dc_repo), 3000))
    import os

    assert not os.path.exists("/tmp/agentsh-initialize-ran-on-host")


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
