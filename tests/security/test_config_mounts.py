"""Mount, capability and devcontainer values cannot smuggle engine options or host paths (rootful and rootless).

Each attack is a value an allowed file could hold: a devcontainer mount
target ending in ":U" (podman would chown the host directory to the
sandbox's user), a mount over agentsh's own /run/agentsh, a mount source
relative to wherever ab runs, `cap_add = ["ALL"]`, a Dockerfile outside the
project. ab-allow refuses each with one line naming the file and key, and a
trust record made anyway still creates nothing.
"""

import json
import os

import pytest

from tests.security.test_config_ca_bundle import write
from tests.security.test_config_image import assert_nothing_created, force_trust, one_line

pytestmark = pytest.mark.integration


def refused_everywhere(side, repo, anchor, key, message):
    proc = side.ab("ab-allow", str(repo))
    assert proc.returncode == 125 and proc.stdout == b""
    line = one_line(proc)
    assert f"{anchor}: key '{key}'" in line and message in line, line
    force_trust(side, anchor)
    proc = side.ab("ab-up", str(repo))
    assert proc.returncode == 125 and message in one_line(proc), proc.stderr
    assert_nothing_created(side, repo)


def test_devcontainer_mount_option_injection_is_refused(side):
    repo = side.repo()
    target = side.base / "host-data"
    side.run("mkdir", "-p", str(target), check=True)
    owner = os.stat(target).st_uid
    dc = repo / ".devcontainer" / "devcontainer.json"
    write(side, dc, json.dumps({"image": "localhost/agentsh-test-git:latest",
                                "mounts": [f"source={target},target=/data:U,type=bind"]}))
    refused_everywhere(side, repo, dc, "mounts", "holds ':' or ','")
    assert os.stat(target).st_uid == owner


def test_mount_over_agentsh_own_paths_is_refused(side):
    repo = side.repo()
    write(side, repo / ".agentsh.toml", f'mounts = ["{side.base}:/run/agentsh"]\n')
    refused_everywhere(side, repo, repo / ".agentsh.toml", "mounts", "would cover /")


def test_mount_source_relative_to_the_working_directory_is_refused(side):
    repo = side.repo()
    write(side, repo / ".agentsh.toml", 'mounts = [".ssh:/keys"]\n')
    refused_everywhere(side, repo, repo / ".agentsh.toml", "mounts", "is not absolute")


def test_cap_add_all_is_refused(side):
    repo = side.repo()
    write(side, repo / ".agentsh.toml", 'cap_add = ["ALL"]\n')
    refused_everywhere(side, repo, repo / ".agentsh.toml", "cap_add", "'ALL' is not a Linux capability")


def test_dockerfile_outside_the_project_is_refused(side):
    repo = side.repo()
    elsewhere = side.base / "elsewhere"
    write(side, elsewhere / "Dockerfile", "FROM localhost/agentsh-test-git:latest\nRUN touch /built\n")
    dc = repo / ".devcontainer" / "devcontainer.json"
    write(side, dc, json.dumps({"build": {"dockerfile": "../../elsewhere/Dockerfile", "context": "../../elsewhere"}}))
    refused_everywhere(side, repo, dc, "build.dockerfile", "is outside the project")
