"""A CA bundle setting never mounts a host file that is not a PEM bundle (rootful and rootless).

Before, an allowed `ca_bundle = "/etc/shadow"` bind-mounted the host's shadow
file into the sandbox as its CA bundle. Now the file must open as a regular
file holding PEM certificate blocks only, and what is mounted is agentsh's own
copy of the bytes it checked, so swapping the file after ab-allow (for a
symlink to /etc/shadow, or a FIFO that would hang ab-up) changes nothing the
sandbox sees.
"""

import json
import os

import pytest

from tests.security.test_config_image import assert_nothing_created, force_trust, one_line

pytestmark = pytest.mark.integration

PEM = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
CA_PATH = "/run/agentsh/ca-bundle.crt"


def write(side, path, text):
    side.run("mkdir", "-p", str(path.parent), check=True)
    side.run("sh", "-c", f"cat > {path}", input=text.encode(), check=True)


def ca_mount(side, name):
    return [m for m in side.inspect(name)["Mounts"] if m["Destination"] == CA_PATH]


def test_ca_bundle_pointing_at_shadow_is_refused(side):
    repo = side.repo()
    path = repo / ".agentsh.toml"
    write(side, path, 'ca_bundle = "/etc/shadow"\n')
    proc = side.ab("ab-allow", str(repo))
    assert proc.returncode == 125 and proc.stdout == b""
    line = one_line(proc)
    assert f"{path}: key 'ca_bundle'" in line and "/etc/shadow" in line and "BEGIN CERTIFICATE" in line
    force_trust(side, path)  # as an older agentsh recorded it
    proc = side.ab("ab-up", str(repo))
    assert proc.returncode == 125
    line = one_line(proc)
    assert "ca_bundle '/etc/shadow'" in line and "BEGIN CERTIFICATE" in line
    if os.geteuid() == 0 and side.name == "rootful":
        with open("/etc/shadow") as f:
            assert not any(part and part in line for part in f.read().split(":") if len(part) > 8)
    assert_nothing_created(side, repo)


def test_ca_bundle_swapped_for_shadow_after_allow_never_reaches_the_sandbox(side):
    repo = side.repo()
    bundle = repo / "certs" / "corp.pem"
    write(side, bundle, PEM)
    write(side, repo / ".agentsh.toml", f'ca_bundle = "{bundle}"\n')
    side.ab("ab-allow", str(repo), check=True)
    name = side.sandbox(repo)
    [mount] = ca_mount(side, name)
    assert not mount["Source"].startswith(str(repo))  # agentsh's checked copy, not the project's file
    assert side.inside(repo, f"cat {CA_PATH}").stdout.decode() == PEM
    # The agent swaps the file the project file names for a link to the shadow file.
    side.inside(repo, f"rm {bundle} && ln -s /etc/shadow {bundle}")
    assert os.path.islink(bundle)
    proc = side.ab("ab-up", "--recreate", str(repo))
    assert proc.returncode == 125 and "/etc/shadow" in one_line(proc)
    [mount] = ca_mount(side, name)  # the sandbox made before is untouched, and still holds the PEM copy
    assert mount["Source"] != "/etc/shadow" and "shadow" not in mount["Source"]
    assert side.inside(repo, f"cat {CA_PATH}").stdout.decode() == PEM
    assert all(m["Source"] != "/etc/shadow" for m in side.inspect(name)["Mounts"])


def test_ca_bundle_swapped_for_a_fifo_is_refused_without_hanging(side):
    repo = side.repo()
    bundle = repo / "corp.pem"
    write(side, bundle, PEM)
    write(side, repo / ".agentsh.toml", f'ca_bundle = "{bundle}"\n')
    side.ab("ab-allow", str(repo), check=True)
    side.run("sh", "-c", f"rm {bundle} && mkfifo {bundle}", check=True)
    proc = side.ab("ab-up", str(repo))  # the runner's timeout would fail a hang
    assert proc.returncode == 125 and "a device, FIFO or socket" in one_line(proc)
    assert_nothing_created(side, repo)
    status = json.loads(side.ab("ab-status", "--json", "--no-engine", str(repo), check=True).stdout)
    assert "FIFO" in status["error"]
