"""Trust covers every byte a devcontainer build reads (rootful and rootless).

Before, trust hashed the Dockerfile but not its build context: the agent
edited a script the Dockerfile COPYs and RUNs, the project stayed trusted,
and the user's next `ab-up --recreate` ran the edit in a build, outside the
sandbox. Now ab-allow records a digest of the Dockerfile and the context
(after .dockerignore); a changed context blocks the build until ab-allow, and
the engine builds from a private copy of exactly the bytes that were checked.
"""

import json

import pytest

from agentsh.host.project import Project
from tests.conftest import GIT_IMAGE
from tests.security.test_config_ca_bundle import write
from tests.security.test_config_image import one_line

pytestmark = pytest.mark.integration

DOCKERFILE = f"FROM {GIT_IMAGE}\nCOPY . /ctx/\nRUN sh /ctx/build.sh\n"


def dc_project(side):
    repo = side.repo()
    write(side, repo / ".devcontainer" / "devcontainer.json",
          json.dumps({"build": {"dockerfile": "Dockerfile", "context": ".."}}))
    write(side, repo / ".devcontainer" / "Dockerfile", DOCKERFILE)
    write(side, repo / "build.sh", "echo trusted > /marker\n")
    write(side, repo / ".dockerignore", "*.log\n")
    return repo


def dc_images(side, repo):
    prefix = f"localhost/agentsh-dc-{Project(str(repo)).key}:"
    rows = json.loads(side.run("podman", "images", "--format", "json", check=True).stdout or b"[]")
    return {tag: row["Id"] for row in rows for tag in row.get("Names") or [] if tag.startswith(prefix)}


def remove_images(side, repo, ids=()):
    """The project's devcontainer images, and those a rebuild left without a tag (by id)."""
    for ref in [*dc_images(side, repo), *ids]:
        side.run("podman", "rmi", "-f", ref)


def trust_of(side, repo):
    report = json.loads(side.ab("ab-status", "--json", "--no-engine", str(repo), check=True).stdout)
    return report["trust"], report["reason"], report["widens"]


def test_edited_build_context_script_blocks_trust(side):
    repo = dc_project(side)
    built = {}
    try:
        proc = side.ab("ab-allow", str(repo), check=True)
        assert "build        .devcontainer/Dockerfile with context ." in proc.stderr.decode()
        proc = side.ab("ab-up", "--json", str(repo))
        assert proc.returncode == 0, proc.stderr.decode()
        built = dc_images(side, repo)
        assert len(built) == 1
        assert side.inside(repo, "cat /marker").stdout == b"trusted\n"
        side.inside(repo, "echo noise > build.log")  # ignored by .dockerignore: trust stands
        assert trust_of(side, repo)[0] == "allowed"

        # The agent edits the script the Dockerfile runs.
        side.inside(repo, "echo 'echo evil > /marker; touch /ran-evil' > build.sh")
        state, reason, widens = trust_of(side, repo)
        assert state == "blocked" and "build" in reason and "ab-allow" in reason
        assert widens["build"]["dockerfile"] == ".devcontainer/Dockerfile"
        proc = side.ab("ab-up", "--recreate", str(repo))
        assert proc.returncode == 125
        assert "changed since 'ab-allow'; not building it" in one_line(proc)
        assert dc_images(side, repo) == built  # nothing built
        assert side.inside(repo, "cat /marker; test -e /ran-evil || echo clean").stdout == b"trusted\nclean\n"

        # After review, ab-allow covers the new context and the build runs it: the check is what stopped it.
        side.ab("ab-allow", str(repo), check=True)
        proc = side.ab("ab-up", "--recreate", str(repo))
        assert proc.returncode == 0, proc.stderr.decode()
        assert side.inside(repo, "cat /marker").stdout == b"evil\n"
    finally:
        side.ab("ab-down", "--rm", "--volumes", str(repo))
        remove_images(side, repo, built.values())  # the first build lost its tag to the second


def test_build_context_symlink_out_of_the_project_leaks_nothing(side):
    repo = dc_project(side)
    secret = side.base / "host-secret"
    write(side, secret, "host-secret-value\n")
    side.run("ln", "-s", str(secret), str(repo / "leak"), check=True)
    write(side, repo / "build.sh", "cat /ctx/leak > /leaked 2>/dev/null || echo none > /leaked\n")
    try:
        side.ab("ab-allow", str(repo), check=True)
        proc = side.ab("ab-up", str(repo))
        assert proc.returncode == 0, proc.stderr.decode()
        out = side.inside(repo, "cat /leaked; readlink /ctx/leak").stdout.decode()
        assert out == f"none\n{secret}\n"  # the link arrived as a link, and pointed at nothing
        # Retargeting the link outside the project is a change of the context, like any other.
        side.run("ln", "-sfn", "/etc/passwd", str(repo / "leak"), check=True)
        assert trust_of(side, repo)[0] == "blocked"
    finally:
        side.ab("ab-down", "--rm", "--volumes", str(repo))
        remove_images(side, repo)
