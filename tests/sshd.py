"""A private sshd for the tests: a loopback port, a host key, a config and a client key of its own.

The remote-engine tests reach an engine the way a user reaches a Linux
server over SSH (`CONTAINER_HOST=ssh://...`, a `podman system connection`).
Everything it needs lives in one directory of the test's own: the config
(public keys only, this directory's authorized_keys, no passwords, no PAM),
the host key, the client key, and a known_hosts for the client's HOME, so
host key checking is on and nothing is written to the system's or a user's
~/.ssh. stop() ends the daemon and the sessions it forked, and removes what
start() made (the privilege separation directory too, when it was missing).
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVSEP = Path("/run/sshd")  # Debian's sshd refuses to start without it (its packaged service makes it)


def problem():
    """Why no private sshd can be started here, or None."""
    if os.geteuid() != 0:
        return "a private sshd that logs in as root needs root"
    if not os.access(SSHD, os.X_OK):
        return "sshd is not installed (apt-get install openssh-server; scripts/test-setup does)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (openssh-client)"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.port = free_port()
        self.key = self.dir / "client_key"
        self.home = self.dir / "home"  # the client's HOME: its ~/.ssh/known_hosts names this daemon's key
        # where an ordinary user's key is looked for, relative to their home (sshd reads it as that user)
        self.user_keys = f".ssh/agentsh-test-keys-{self.port}"
        self.proc = None
        self.made_privsep = False

    def start(self):
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-f", str(self.dir / "host_key")], check=True)
        subprocess.run([*keygen, "-f", str(self.key)], check=True)
        (self.dir / "authorized_keys").write_bytes((self.dir / "client_key.pub").read_bytes())
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        host_pub = (self.dir / "host_key.pub").read_text().split()
        (self.home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        config = self.dir / "sshd_config"
        config.write_text(f"""\
ListenAddress 127.0.0.1:{self.port}
HostKey {self.dir}/host_key
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys {self.user_keys}
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
X11Forwarding no
PermitTTY no
""")
        if not PRIVSEP.exists():
            PRIVSEP.mkdir(mode=0o755)
            self.made_privsep = True
        self.log = open(self.dir / "sshd.log", "wb")
        # -D: in the foreground, our child (stopped by its pid); -e: its log to our file
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        log = (self.dir / "sshd.log").read_text(errors="replace")[-600:]
        self.stop()
        raise AssertionError(f"the private sshd did not start: {log}")

    def url(self, path, user="root"):
        """An ssh:// engine URL reaching the Unix socket `path` through this daemon."""
        return f"ssh://{user}@127.0.0.1:{self.port}{path}"

    def sessions(self):
        """Pids of the processes this daemon forked for its connections, and theirs (each makes a session
        of its own, so they are found by parent)."""
        if self.proc is None:
            return []
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    pass
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            children = [c for c, p in parents.items() if p == pid]
            found += children
            todo += children
        return found

    def stop(self):
        if self.proc is not None:
            for pid in self.sessions():
                try:
                    os.kill(pid, 15)
                except OSError:
                    pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        if self.made_privsep:
            try:
                PRIVSEP.rmdir()
            except OSError:
                pass
            self.made_privsep = False
        shutil.rmtree(self.dir, ignore_errors=True)
