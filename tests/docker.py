"""A private Docker daemon for the tests (scripts/test-dockerd): started once per run, stopped after.

Its data, exec root, pid file and socket live in a directory of this run's
own, its socket belongs to a group of this run's own (the usual `docker`
group set-up, for the test user), and stopping it removes the directory:
its containers, volumes and images go with it, and no other Docker is
touched.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test-dockerd"
DEBIAN_CLIENT = "/usr/bin/docker"  # docker.io's 20.10 client; the one on PATH may be another


def problem():
    """Why no private Docker daemon can be started here, or None."""
    if os.geteuid() != 0:
        return "starting a private dockerd needs root"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (scripts/test-dockerd install)"
    if shutil.which("docker") is None:
        return "no docker client"
    return None


class Daemon:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="abd-", dir="/tmp")  # short: socket paths are limited to 108 bytes
        self.group = f"abdock{os.getpid()}"  # this run's own `docker` group
        self.group_made = False
        self.host = None

    def start(self):
        if subprocess.run(["getent", "group", self.group], capture_output=True).returncode != 0:
            subprocess.run(["groupadd", self.group], check=True)
            self.group_made = True
        proc = subprocess.run(["bash", str(SCRIPT), "start", self.dir, self.group], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            self.stop()
            raise AssertionError(f"cannot start a private dockerd: {proc.stderr[-800:]}")
        self.host = proc.stdout.strip()
        return self

    def stop(self):
        subprocess.run(["bash", str(SCRIPT), "stop", self.dir], capture_output=True, timeout=120)
        if self.group_made:
            subprocess.run(["groupdel", self.group], capture_output=True)

    def env(self, base=None):
        """An environment (default: ours) whose agentsh uses this daemon."""
        return {**(os.environ if base is None else base), "DOCKER_HOST": self.host, "AGENTSH_ENGINE": "docker"}

    def docker(self, *args, input=None, check=True, client="docker"):
        proc = subprocess.run([client, *args], input=input, capture_output=True,
                              env={**os.environ, "DOCKER_HOST": self.host}, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {args[:3]} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
        return proc

    def inspect(self, name):
        return json.loads(self.docker("container", "inspect", name).stdout)[0]

    def import_image(self, tar, tag):
        self.docker("import", "-", tag, input=tar)
        return tag

    def add_user(self, user):
        """Make `user` a member of the socket's group (what `usermod -aG docker` does)."""
        subprocess.run(["usermod", "-aG", self.group, user], check=True)


ROOTLESS_LAUNCHER = "/usr/share/docker.io/contrib/dockerd-rootless.sh"


def rootless_problem():
    """Why no rootless dockerd can be started here, or None."""
    if os.geteuid() != 0:
        return "starting a rootless dockerd for the test user needs root (to switch to it)"
    if not os.access(ROOTLESS_LAUNCHER, os.X_OK):
        return f"{ROOTLESS_LAUNCHER} is missing (docker.io ships it; scripts/test-setup installs docker.io)"
    if shutil.which("rootlesskit") is None:
        return "rootlesskit is not installed (apt-get install rootlesskit; scripts/test-setup does)"
    return None


class RootlessDaemon(Daemon):
    """A rootless dockerd of `user` (a conftest.RootlessUser): dockerd-rootless.sh, run as that user, in a
    directory of this run's own; stop() (as root) ends it and removes the directory."""

    def __init__(self, user):
        super().__init__()
        self.user = user
        self.group_made = False
        os.chown(self.dir, user.uid, user.gid)
        os.chmod(self.dir, 0o755)

    def start(self):
        proc = subprocess.run(self.user.argv("bash", str(SCRIPT), "start-rootless", self.dir), capture_output=True,
                              text=True, timeout=120, cwd="/")
        if proc.returncode != 0:
            self.stop()
            raise AssertionError(f"cannot start a rootless dockerd: {proc.stderr[-800:]}")
        self.host = proc.stdout.strip()
        return self

    def docker(self, *args, input=None, check=True, client="docker"):
        proc = subprocess.run(self.user.argv("env", f"DOCKER_HOST={self.host}", client, *args), input=input,
                              capture_output=True, timeout=300, cwd="/")
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {args[:3]} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
        return proc
