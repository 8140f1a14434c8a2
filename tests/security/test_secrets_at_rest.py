"""No credential value at rest in plain text, the engine's own files included (rootful and rootless)."""

import os
import shlex

import pytest

pytestmark = pytest.mark.integration


def _engine_roots(side):
    proc = side.run("podman", "info", "--format", "{{.Store.GraphRoot}}\n{{.Store.RunRoot}}", check=True)
    graph, run = proc.stdout.decode().split()
    return [os.path.join(graph, "libpod"), os.path.join(graph, "overlay-containers"), run]


def test_granted_and_e_values_never_land_in_the_engines_files(side):
    repo = side.repo()
    granted = f"granted-{os.urandom(12).hex()}"
    explicit = f"explicit-{os.urandom(12).hex()}"
    side.run("ab-creds", "set", "SEC_TEST_KEY", input=granted.encode() + b"\n", check=True)
    side.run("ab-creds", "grant", "SEC_TEST_KEY", str(repo), check=True)
    proc = side.ab("ab-exec", "-e", f"SEC_EXPLICIT={explicit}", "--", "sh", "-c",
                   'printf "%s %s\\n" "$SEC_TEST_KEY" "$SEC_EXPLICIT"; ls /run/agentsh/secrets', cwd=repo)
    assert proc.returncode == 0, proc.stderr
    first, *left = proc.stdout.decode().splitlines()
    assert first == f"{granted} {explicit}"
    assert not [n for n in left if n.startswith("env-")]  # the exec's env file is gone once read
    name = side.sandbox(repo)
    side.ab("ab-exec", "--", "true", cwd=repo, check=True)
    for value in (granted, explicit):
        assert value not in side.run("podman", "container", "inspect", name).stdout.decode()
        roots = " ".join(shlex.quote(r) for r in _engine_roots(side))
        found = side.run("sh", "-c", f"grep -rlaF -- {shlex.quote(value)} {roots} 2>/dev/null; true")
        assert found.stdout == b"", f"{value} at rest in {found.stdout.decode()}"
    side.run("ab-creds", "rm", "SEC_TEST_KEY")
