"""An image value that is an engine flag never reaches the engine (rootful and rootless).

Before values were checked, an allowed `image = "--privileged"` was passed to
`podman run` where the image belongs, and podman read it as a flag. Now
ab-allow refuses the file, and a trust record made anyway (as an older
agentsh would have) still ends in a one-line error before any engine call
that could create something: no container, no home volume.
"""

import json
import sys

import pytest

from agentsh.host.project import Project

pytestmark = pytest.mark.integration

FORCE_TRUST = "import sys; from agentsh.policy import trust; from agentsh.base.state import Store; trust.allow(Store(), sys.argv[1])"


def force_trust(side, path):
    """A trust record for the file as it is, made without ab-allow's checks (an older agentsh's record)."""
    side.run(sys.executable, "-c", FORCE_TRUST, str(path), check=True)


def one_line(proc):
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def assert_nothing_created(side, repo):
    name = Project(str(repo)).sandbox
    assert side.run("podman", "container", "exists", name).returncode == 1
    assert side.run("podman", "volume", "exists", f"{name}-home").returncode == 1
    listed = side.run("podman", "ps", "-a", "--filter", f"label=io.agentsh.project={repo}", "--format", "json",
                      check=True).stdout
    assert json.loads(listed or b"[]") == []


def test_image_value_that_is_a_flag_is_refused(side):
    repo = side.repo()
    path = repo / ".agentsh.toml"
    side.run("sh", "-c", f"printf 'image = \"--privileged\"\\n' > {path}", check=True)
    proc = side.ab("ab-allow", str(repo))
    assert proc.returncode == 125 and proc.stdout == b""
    line = one_line(proc)
    assert f"{path}: key 'image'" in line and "'--privileged' is not an image reference" in line
    assert "REGISTRY" in line  # the fix
    status = json.loads(side.ab("ab-status", "--json", "--no-engine", str(repo), check=True).stdout)
    assert status["trust"] == "blocked"  # nothing was recorded
    force_trust(side, path)
    for argv in (("ab-up", str(repo)), ("ab-exec", "--dir", str(repo), "--", "true")):
        proc = side.ab(*argv)
        assert proc.returncode == 125, proc.stderr
        assert "key 'image'" in one_line(proc) and "--privileged" in one_line(proc)
    assert_nothing_created(side, repo)


def test_devcontainer_image_value_that_is_a_flag_is_refused(side):
    repo = side.repo()
    dc = repo / ".devcontainer" / "devcontainer.json"
    side.run("mkdir", "-p", str(dc.parent), check=True)
    side.run("sh", "-c", f"echo '{{\"image\": \"--privileged\", \"runArgs\": [\"--privileged\"]}}' > {dc}", check=True)
    proc = side.ab("ab-allow", str(repo))
    assert proc.returncode == 125
    assert f"{dc}: key 'image'" in one_line(proc) and "is not an image reference" in one_line(proc)
    force_trust(side, dc)
    proc = side.ab("ab-up", str(repo))
    assert proc.returncode == 125 and "is not an image reference" in one_line(proc)
    assert_nothing_created(side, repo)


def test_image_flag_given_on_the_command_line_is_refused(side):
    repo = side.repo()
    proc = side.ab("ab-up", "--image=--privileged", str(repo))
    assert proc.returncode == 2 and "'--privileged' is not an image reference" in one_line(proc)
    assert_nothing_created(side, repo)
    assert side.ab("ab-up", str(repo)).returncode == 0  # the same project with a real image comes up
    assert side.run("podman", "container", "exists", Project(str(repo)).sandbox).returncode == 0
