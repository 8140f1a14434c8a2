"""Shared fixtures: isolated agentsh dirs, a real engine, a tiny image, helpers.

Every test gets its own XDG state/config/data dirs. Integration tests share
one tiny busybox image (built once per run, in well under a second) and clean
up the sandboxes of their own projects. When AGENTSH_REQUIRE_ENGINE=1 (CI), a
missing engine fails the run instead of skipping it.

A run with engine tests leaves nothing behind: `leaves_no_trace` records the
machine's footprint before it, removes what it made after it (test images,
volumes, the rootless test user with its storage and processes) and fails the
run if anything it made is still there (tests/trace.py).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests import trace

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY_IMAGE = "localhost/agentsh-test-tiny:latest"


def pytest_collection_modifyitems(items):
    for item in items:
        if any(f"/{kind}/" in str(item.fspath) for kind in ("integration", "reliability", "security")):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Relocate agentsh's state, config and data dirs into the test's tmp dir.

    The cache dir stays shared (the compiled exec server is kept there); a test
    that fills it sets XDG_CACHE_HOME itself (own_cache).
    """
    dirs = {}
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        d = tmp_path / "xdg" / var.lower()
        d.mkdir(parents=True)
        monkeypatch.setenv(var, str(d))
        dirs[var] = d
    for var in ("AGENTSH_ENGINE", "AGENTSH_HOOK", "AGENTSH_SANDBOX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return dirs


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """An XDG_CACHE_HOME of the test's own (agentsh caches registry features there); returns agentsh's cache dir."""
    d = tmp_path / "xdg" / "xdg_cache_home"
    d.mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(d))
    return d / "agentsh"


def own_dirs_env(base, image):
    """An environment with agentsh dirs of its own under `base`, its user config selecting `image`.

    For class-scoped fixtures, which outlive a test's isolated_dirs: their commands
    (and the tests reading what they made) run with this environment.
    """
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        env[var] = str(Path(base) / "xdg" / var.lower())
        os.makedirs(env[var], exist_ok=True)
    for var in ("AGENTSH_ENGINE", "AGENTSH_HOOK", "AGENTSH_SANDBOX"):
        env.pop(var, None)
    config = Path(env["XDG_CONFIG_HOME"]) / "agentsh" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'image = "{image}"\n')
    return env


@pytest.fixture
def user_config(isolated_dirs):
    """Write the user's config.toml; returns its path."""
    path = isolated_dirs["XDG_CONFIG_HOME"] / "agentsh" / "config.toml"

    def write(text):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
          "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git_init(path):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def git(cwd, *args):
    """Host git in `cwd` with a fixed identity; its stdout (raises on failure)."""
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, **GIT_ID}).stdout


def commit(cwd, name, text="x\n", message=None):
    """Write `name` in the repository at `cwd` and commit it."""
    (Path(cwd) / name).write_text(text)
    git(cwd, "add", name)
    git(cwd, "commit", "-qm", message or f"add {name}")


def pytest_configure(config):
    config.addinivalue_line("markers", "committed: the `repo` fixture starts with one commit (a README)")


@pytest.fixture
def repo(tmp_path, request):
    """A fresh git repository (the usual kind of project); with one commit under @pytest.mark.committed."""
    path = git_init(tmp_path / "repo")
    if request.node.get_closest_marker("committed"):
        commit(path, "README", "hello\n", "init")
    return path


def ab(*args, input=None, cwd=None, check=False, env=None, timeout=120):
    """Run an ab-* command as a user would; returns the CompletedProcess (bytes)."""
    proc = subprocess.run(list(args), input=input, cwd=cwd, env=env, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


# What points `podman` at another engine; the tests' own podman() looks at this host's, always (a remote-engine
# test's clean-up runs while its CONTAINER_HOST still names a service it has stopped)
REMOTE_VARS = ("CONTAINER_HOST", "CONTAINER_CONNECTION", "CONTAINER_SSHKEY")


def podman(*args, check=True, input=None):
    env = {k: v for k, v in os.environ.items() if k not in REMOTE_VARS}
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, check=False, input=input, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def inspect(name):
    return json.loads(podman("container", "inspect", name).stdout)[0]


def engine_problem():
    """Why no real engine can be used here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed"
    proc = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"podman does not work: {proc.stderr.strip()[-200:]}"
    return None


@pytest.fixture(scope="session")
def engine_ready():
    problem = engine_problem()
    if problem:
        if os.environ.get("AGENTSH_REQUIRE_ENGINE") == "1":
            pytest.fail(f"integration tests need a container engine: {problem}")
        pytest.skip(problem)


def make_tiny_rootfs(directory):
    """A busybox root filesystem: every applet, /tmp, /home, an /etc/passwd."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    root = Path(directory)
    for d in ("bin", "tmp", "home", "etc", "root", "proc", "sys", "dev", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([str(root / "bin" / "busybox"), "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            link = root / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def import_tiny_image(run=subprocess.run, prefix=()):
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        make_tiny_rootfs(d)
        tar = subprocess.run(["tar", "-C", d, "-c", "."], capture_output=True, check=True).stdout
    replace_image(tar, TINY_IMAGE, run, prefix)


def replace_image(tar, tag, run=subprocess.run, prefix=()):
    """Import a rootfs tarball as `tag`, removing the image it replaces.

    Each run imports afresh; without the removal every test run would leave
    the previous import behind as a dangling image.
    """
    old = run([*prefix, "podman", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True)
    proc = run([*prefix, "podman", "import", "-q", "-", tag], input=tar, capture_output=True)
    if proc.returncode != 0:
        raise AssertionError(f"cannot import {tag}: {proc.stderr.decode()[-400:]}")
    old_id = old.stdout.decode().strip() if old.returncode == 0 else ""
    if old_id and old_id not in proc.stdout.decode():
        run([*prefix, "podman", "rmi", old_id], capture_output=True)  # still in use: it stays


@pytest.fixture(scope="session")
def tiny_image(engine_ready):
    """The small image most integration tests run (busybox)."""
    import_tiny_image()
    return TINY_IMAGE


@pytest.fixture
def sandbox_env(tiny_image, user_config, tmp_path):
    """User config selecting the tiny image; removes this test's sandboxes after."""
    user_config(f'image = "{tiny_image}"\n')
    yield
    remove_sandboxes_under(str(tmp_path))


def remove_sandboxes_under(prefix, run_podman=podman):
    """Remove the sandboxes of projects under `prefix`, and their home volumes.

    A home volume outlives its container (`ab-down --rm`), so the sandbox names
    agentsh recorded in the state dirs under `prefix` count as well.
    """
    proc = run_podman("ps", "-a", "--filter", "label=io.agentsh.managed=true", "--format", "json", check=False)
    names = set()
    for c in json.loads(proc.stdout or "[]"):
        project = (c.get("Labels") or {}).get("io.agentsh.project", "")
        if project.startswith(prefix):
            names.add(c["Names"][0])
            run_podman("rm", "-f", "-t", "0", c["Names"][0], check=False)
    for record in Path(prefix).glob("xdg/*/agentsh/projects/ab-*.json"):
        names.add(record.name[:-len(".json")])
    for name in sorted(names):
        run_podman("volume", "rm", "-f", f"{name}-home", check=False)


ROOTLESS_USER = os.environ.get("AGENTSH_TEST_USER", "agentsh-test")  # made, and removed, by the suite


class RootlessUser:
    """Runs commands as an unprivileged user with its own rootless Podman."""

    def __init__(self, name):
        import pwd

        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)
        self.runtime_dir = Path(f"/tmp/agentsh-test-runtime-{self.uid}")
        self.runtime_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.runtime_dir, self.uid, self.gid)
        self.work = self.home / "work"
        self.env = {
            "HOME": str(self.home), "USER": name, "LOGNAME": name,
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_STATE_HOME": str(self.home / "xdg/state"),
            "XDG_CONFIG_HOME": str(self.home / "xdg/config"),
            "XDG_DATA_HOME": str(self.home / "xdg/data"),
            "LANG": "C.UTF-8",
        }
        conf = os.environ.get("CONTAINERS_CONF")
        if conf:
            copy = self.home / "containers.conf"
            shutil.copyfile(conf, copy)
            os.chown(copy, self.uid, self.gid)
            self.env["CONTAINERS_CONF"] = str(copy)

    def argv(self, *args):
        """The command line running `args` as this user, in this user's environment only."""
        return ["runuser", "-u", self.name, "--", "env", "-i", *(f"{k}={v}" for k, v in self.env.items()), *args]

    def run(self, *args, cwd=None, input=None, check=False):
        proc = subprocess.run(self.argv(*args), cwd=cwd or self.home, input=input, capture_output=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} as {self.name} exited {proc.returncode}: {proc.stderr.decode()}")
        return proc

    def mkdir(self, relative):
        path = self.home / relative
        self.run("mkdir", "-p", str(path), check=True)
        return path


@pytest.fixture(scope="session")
def rootless_user(engine_ready):
    """An ordinary user (created if missing) with the tiny image in its storage."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to a test user; as a non-root user the whole suite is rootless")
    if subprocess.run(["id", ROOTLESS_USER], capture_output=True).returncode != 0:
        # "*": no password matches, and unlike useradd's "!" the account is not locked, so a private sshd lets
        # it in with a key (tests/integration/test_remote_engine.py)
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-p", "*", ROOTLESS_USER], check=True)
        trace.mark_user_made(ROOTLESS_USER)  # so the last run to end removes it (tests/trace.py)
    elif trace.left_by_an_earlier_suite(ROOTLESS_USER):
        trace.mark_user_made(ROOTLESS_USER)  # made by a suite that did not remove it: this run does
    if os.path.exists("/dev/net/tun"):
        os.chmod("/dev/net/tun", 0o666)  # rootless networking (slirp4netns) on these hosts
    user = RootlessUser(ROOTLESS_USER)
    probe = user.run("ab", "--version")
    if probe.returncode != 0:
        pytest.fail(f"{ROOTLESS_USER} cannot run {BIN}/ab (is the venv's Python readable by others?): "
                    f"{probe.stderr.decode()[-300:]}")
    import_tiny_image(run=lambda argv, **kw: user.run(*argv, input=kw.get("input")))
    config = user.home / "xdg/config/agentsh/config.toml"
    user.run("mkdir", "-p", str(config.parent), check=True)
    user.run("sh", "-c", f"printf 'image = \"{TINY_IMAGE}\"\\n' > {config}", check=True)
    return user


GIT_IMAGE = "localhost/agentsh-test-git:latest"


def host_git_files():
    """The host's git, its helpers and the shared libraries (and loader) it links."""
    return host_program_files("git")


def host_program_files(name):
    """(the real path of the host's program `name`, [it and the shared libraries and loader it links])."""
    git = os.path.realpath(shutil.which(name) or f"/usr/bin/{name}")
    libs = subprocess.run(["ldd", git], capture_output=True, text=True, check=True).stdout
    files = [git]
    for line in libs.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            files.append(path)
    return git, files


def git_image_tar():
    """The tiny busybox rootfs plus the host's git, as a tarball: no network, about a second."""
    import io
    import tarfile

    git, files = host_git_files()
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as d, tarfile.open(fileobj=buf, mode="w") as tar:
        os.chmod(d, 0o755)
        make_tiny_rootfs(d)
        tar.add(d, arcname=".")
        for path in files:  # at the paths ldd names, symlinks resolved
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
        if git != "/usr/bin/git":
            tar.add(git, arcname="usr/bin/git")
        if os.path.isdir("/usr/lib/git-core"):
            tar.add("/usr/lib/git-core", arcname="usr/lib/git-core")
    return buf.getvalue()


def import_git_image(run=subprocess.run):
    replace_image(git_image_tar(), GIT_IMAGE, run)


@pytest.fixture(scope="session")
def git_image(engine_ready):
    """An image with a working git (the tiny one has none), for git-inside-the-sandbox tests."""
    import_git_image()
    return GIT_IMAGE


CURL_IMAGE = "localhost/agentsh-test-curl:latest"


def curl_image_tar():
    """The tiny busybox rootfs plus the host's curl (OpenSSL: TLS 1.3, EC certificates), as a tarball.

    busybox's wget cannot talk TLS to the interception proxy's EC
    certificates; this image can, and imports in about a second, also into
    a rootless user's storage (the default image is gigabytes).
    """
    import io
    import tarfile

    curl, files = host_program_files("curl")
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as d, tarfile.open(fileobj=buf, mode="w") as tar:
        os.chmod(d, 0o755)
        make_tiny_rootfs(d)
        tar.add(d, arcname=".")
        for path in files:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
        if curl != "/usr/bin/curl":
            tar.add(curl, arcname="usr/bin/curl")
    return buf.getvalue()


@pytest.fixture(scope="session")
def curl_image(engine_ready):
    """An image with a TLS-capable curl, in root's storage."""
    replace_image(curl_image_tar(), CURL_IMAGE)
    return CURL_IMAGE


@pytest.fixture(scope="session")
def rootless_curl_image(rootless_user):
    """The same image in the rootless test user's storage."""
    replace_image(curl_image_tar(), CURL_IMAGE, run=lambda argv, **kw: rootless_user.run(*argv, input=kw.get("input")))
    return CURL_IMAGE


# -- leave no trace ---------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def leaves_no_trace(request, tmp_path_factory):
    """Records the machine's footprint (tests/trace.py) before the run; after it, removes what the
    run made and fails the run if anything it made is still there.

    Only for sessions with tests that use the engine (unit-only runs make nothing).
    """
    if not any(item.get_closest_marker("integration") for item in request.session.items):
        yield
        return
    lock = trace.SessionLock()
    basetemp = str(tmp_path_factory.getbasetemp())
    engine = engine_problem() is None
    before = trace.footprint(ROOTLESS_USER, basetemp, engine)
    yield
    exclusive = lock.exclusive()
    try:
        swept = trace.sweep(before, ROOTLESS_USER, basetemp, basetemp, exclusive) \
            if engine else []
        after = trace.footprint(ROOTLESS_USER, basetemp, engine)
    finally:
        lock.release()
    request.config.stash[_TRACE] = (before.counts(), after.counts(), swept, exclusive)
    left = trace.left_behind(before, after, basetemp, exclusive)
    assert not left, "the test run left behind: " + "; ".join(left)


_TRACE = pytest.StashKey()


def pytest_terminal_summary(terminalreporter, config):
    if _TRACE not in config.stash:
        return
    before, after, swept, exclusive = config.stash[_TRACE]
    write = terminalreporter.write_line
    write("machine footprint before/after the run" + ("" if exclusive else " (another test run was active: only this run's sandboxes and images were checked)") + ": "
          + ", ".join(f"{k} {before[k]}/{after[k]}" for k in before))
    for line in swept:
        write(f"  left by a test, removed at the end: {line}")


# -- Docker: a private daemon of this run's own (tests/docker.py) --------------------------------


def tiny_image_tar(without=()):
    """The tiny busybox rootfs as a tarball; `without`: paths under it to leave out (bin/sh, say)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        make_tiny_rootfs(d)
        for rel in without:
            os.unlink(os.path.join(d, rel))
        return subprocess.run(["tar", "-C", d, "-c", "."], capture_output=True, check=True).stdout


@pytest.fixture(scope="session")
def docker_daemon(engine_ready):
    """A private dockerd (scripts/test-dockerd) with the tiny and git images; stopped, and its dir removed, after.

    Skipped where it cannot start (not root, no dockerd); in CI (AGENTSH_REQUIRE_ENGINE=1) a missing
    dockerd fails instead, since scripts/test-setup installs it.
    """
    from tests import docker

    problem = docker.problem()
    if problem:
        if os.environ.get("AGENTSH_REQUIRE_ENGINE") == "1" and os.geteuid() == 0:
            pytest.fail(f"the Docker tests need a private dockerd: {problem}")
        pytest.skip(problem)
    daemon = docker.Daemon().start()
    try:
        daemon.import_image(tiny_image_tar(), TINY_IMAGE)
        daemon.import_image(git_image_tar(), GIT_IMAGE)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def rootless_docker(rootless_user):
    """A rootless dockerd of the rootless test user's (dockerd-rootless.sh) with the tiny image; stopped after.

    Skipped where it cannot start (not root, no rootlesskit); in CI (AGENTSH_REQUIRE_ENGINE=1) that fails
    instead, since scripts/test-setup installs both.
    """
    from tests import docker

    problem = docker.rootless_problem()
    if problem:
        if os.environ.get("AGENTSH_REQUIRE_ENGINE") == "1" and os.geteuid() == 0:
            pytest.fail(f"the rootless Docker tests need a rootless dockerd: {problem}")
        pytest.skip(problem)
    daemon = docker.RootlessDaemon(rootless_user).start()
    try:
        daemon.import_image(tiny_image_tar(), TINY_IMAGE)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def docker_env(docker_daemon, user_config, monkeypatch):
    """This test's agentsh runs on the private dockerd, with the tiny image."""
    monkeypatch.setenv("DOCKER_HOST", docker_daemon.host)
    monkeypatch.setenv("AGENTSH_ENGINE", "docker")
    user_config(f'image = "{TINY_IMAGE}"\n')
    return docker_daemon


def on_engine(engine, *args, check=True, env=None):
    """The engine's own CLI (Docker's reaches the private daemon through DOCKER_HOST): the completed process."""
    proc = subprocess.run([engine, *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{engine} {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def each_engine(request, user_config, monkeypatch, image, podman_image_fixture):
    """For a fixture parametrized by engine name: that engine for this test, with `image` (the private dockerd
    holds the tiny and git images; Podman's comes from `podman_image_fixture`); yields the name and removes
    Podman's sandboxes after (the private dockerd goes whole at the end of the run)."""
    if request.param == "docker":
        daemon = request.getfixturevalue("docker_daemon")
        monkeypatch.setenv("DOCKER_HOST", daemon.host)
        monkeypatch.setenv("AGENTSH_ENGINE", "docker")
    else:
        request.getfixturevalue(podman_image_fixture)
    user_config(f'image = "{image}"\n')
    yield request.param
    if request.param == "podman":
        remove_sandboxes_under(str(request.getfixturevalue("tmp_path")))


@pytest.fixture(params=["podman", "docker"])
def any_engine(request, user_config, monkeypatch):
    """Each engine in turn (for tests cheap enough to run on both): its name; Podman's sandboxes removed after."""
    yield from each_engine(request, user_config, monkeypatch, TINY_IMAGE, "tiny_image")
