"""One harness for the attack tests, rootful (root's Podman) and rootless (an ordinary user's).

`side` is parametrised over both: every test that takes it runs twice. It
makes git repositories the way the side's user would, runs `ab-*` and git as
that user, and reads `podman inspect` from that user's engine.
"""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from agentsh.sandbox.isolation import runsc
from tests.conftest import GIT_ID, GIT_IMAGE, git_image_tar, remove_sandboxes_under, replace_image

GIT_ENV = GIT_ID


class Side:
    """Commands as one kind of user: `root` (rootful Podman) or an ordinary user (rootless)."""

    def __init__(self, name, base, env, runner):
        self.name, self.base, self.env, self._runner = name, Path(base), env, runner
        self.made = []

    def run(self, *args, cwd=None, input=None, check=False, env=None):
        return self._runner(list(args), cwd=str(cwd or self.base), input=input, check=check, env=env or {})

    def ab(self, *args, cwd=None, input=None, check=False):
        return self.run(*args, cwd=cwd, input=input, check=check)

    def git(self, repo, *args, check=True):
        proc = self.run("git", "-C", str(repo), *args, env=GIT_ENV)
        if check and proc.returncode != 0:
            raise AssertionError(f"git {args} failed: {proc.stderr.decode()[-300:]}")
        return proc.stdout.decode()

    def repo(self, name="repo", commit=True):
        path = self.base / f"{name}-{uuid.uuid4().hex[:8]}"
        self.run("mkdir", "-p", str(path), check=True)
        self.git(path, "init", "-q", "-b", "main")
        if commit:
            self.run("sh", "-c", "echo one > file", cwd=path, check=True)
            self.git(path, "add", "file")
            self.git(path, "commit", "-qm", "one")
        self.made.append(path)
        return path

    def inside(self, repo, script, check=True, *extra):
        """sh -c SCRIPT in the repo's sandbox (git identity set), as the agent would run it."""
        ident = " ".join(f"{k}={v}" for k, v in GIT_ENV.items())
        proc = self.ab("ab-exec", *extra, "--", "sh", "-c", f"export {ident}; {script}", cwd=repo)
        if check and proc.returncode != 0:
            raise AssertionError(f"inside {script!r} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
        return proc

    def inspect(self, name):
        proc = self.run("podman", "container", "inspect", name, check=True)
        return json.loads(proc.stdout)[0]

    def sandbox(self, repo):
        return json.loads(self.ab("ab-up", "--json", str(repo), check=True).stdout)["name"]

    def mount_sources(self, name):
        return [m.get("Source", "") for m in self.inspect(name).get("Mounts", [])]


def _root_runner(env):
    def run(argv, cwd, input, check, env=None):
        proc = subprocess.run(argv, cwd=cwd, input=input, capture_output=True, timeout=300,
                              env={**os.environ, **env_base, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
        return proc

    env_base = env
    return run


@pytest.fixture(params=["rootful", "rootless", "rootful-gvisor", "rootless-gvisor"])
def side(request, tmp_path):
    """Both kinds of engine user, each on the host's kernel and on gVisor's (isolation = "gvisor")."""
    extra = ""
    if request.param.endswith("-gvisor"):
        if not request.module.__name__.endswith("test_git_host_integrity"):
            pytest.skip("the gvisor sides run the git protections (test_git_host_integrity); the rest is the same spec")
        if runsc() is None:
            pytest.skip("gVisor's runsc is not installed (scripts/test-setup installs it)")
        extra = 'isolation = "gvisor"\n'
    if request.param.startswith("rootful"):
        request.getfixturevalue("engine_ready")
        request.getfixturevalue("user_config")(f'image = "{GIT_IMAGE}"\n{extra}')
        request.getfixturevalue("git_image")
        s = Side("rootful", tmp_path, {}, _root_runner({}))
        yield s
        try:
            _on_gvisor_kernel(s, extra)
        finally:
            remove_sandboxes_under(str(tmp_path))
        return
    user = request.getfixturevalue("rootless_user")
    _user_git_image(user)
    base = user.mkdir(f"work/sec-{uuid.uuid4().hex[:8]}")

    def run(argv, cwd, input, check, env=None):
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
        return user.run(*argv, cwd=cwd, input=input, check=check)

    s = Side("rootless", base, user.env, run)
    config = user.home / "xdg/config/agentsh/config.toml"
    user.run("sh", "-c", f"printf 'image = \"{GIT_IMAGE}\"\\n{extra}' > {config}", check=True)
    try:
        yield s
        _on_gvisor_kernel(s, extra)
    finally:
        for repo in s.made:
            user.run("ab-down", "--rm", "--volumes", str(repo))
        user.run("sh", "-c", f"printf 'image = \"localhost/agentsh-test-tiny:latest\"\\n' > {config}")
        user.run("rm", "-rf", str(base))


def _on_gvisor_kernel(side, extra):
    """A gvisor side's sandboxes really ran on gVisor's kernel (not silently on the host's)."""
    if extra and side.made:
        proc = side.inside(side.made[0], "uname -r", check=False)
        if proc.returncode != 0:  # a test that left its project refused: nothing ran, on either kernel
            return
        release = proc.stdout.decode().strip()
        assert release != os.uname().release, f"isolation = \"gvisor\" ran on the host's kernel {release}"


_USER_IMAGE = {}


def _user_git_image(user):
    if not _USER_IMAGE:
        replace_image(git_image_tar(), GIT_IMAGE, run=lambda argv, **kw: user.run(*argv, input=kw.get("input")))
        _USER_IMAGE["done"] = True
