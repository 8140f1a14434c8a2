"""What the test suite leaves on the machine: a footprint before and after, and the sweep between.

A footprint is the set of containers, volumes and images of root's Podman
and of the rootless test user's, whether that user exists, and the
processes the suite could have started (the test user's, and any whose
environment names this session's temporary directory, which every test's
XDG dirs are under).

Several suite sessions may run on one machine at once; each holds a shared
lock on LOCK for its whole run. Only a session that can then take the lock
exclusively (no other session running) sweeps what it cannot attribute to
itself by name (new volumes, dangling images) and the test images, so one
session never pulls an image or a volume from under another.
"""

import fcntl
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

LOCK = os.environ.get("AGENTSH_TEST_LOCK", "/tmp/agentsh-test-suite.lock")
SANDBOX_VOLUME_PREFIXES = ("ab-",)
TEST_VOLUME_PREFIXES = ("agentsh-cache-", "agentsh-test-")
TEST_IMAGE_PREFIXES = ("localhost/agentsh-test-", "localhost/agentsh-dc-")


def _lines(proc):
    return [line for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


class Podman:
    """One user's Podman: root's (prefix empty) or the rootless test user's (through runuser)."""

    def __init__(self, prefix=(), env=None):
        self.prefix, self.env = list(prefix), env

    def __call__(self, *args):
        argv = [*self.prefix, "podman", *args]
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=300)

    def containers(self):
        """ID -> (name, io.agentsh.project label)."""
        proc = self("ps", "-a", "--format", "json")
        out = {}
        for c in json.loads(proc.stdout or "[]") if proc.returncode == 0 else []:
            labels = c.get("Labels") or {}
            out[c["Id"]] = ((c.get("Names") or [""])[0], labels.get("io.agentsh.project", ""))
        return out

    def volumes(self):
        return set(_lines(self("volume", "ls", "--format", "{{.Name}}")))

    def images(self):
        """ID -> names (empty for a dangling or intermediate image)."""
        out = {}
        for line in _lines(self("images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}")):
            image_id, name = line.split(" ", 1)
            out.setdefault(image_id, set())
            if name != "<none>:<none>":
                out[image_id].add(name)
        return out


def user_podman(user):
    """The rootless test user's Podman, as the suite runs it (tests/conftest.py RootlessUser.env)."""
    import pwd

    pw = pwd.getpwnam(user)
    env = {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "PATH": "/usr/local/bin:/usr/bin:/bin",
           "XDG_RUNTIME_DIR": f"/tmp/agentsh-test-runtime-{pw.pw_uid}",
           "XDG_CONFIG_HOME": f"{pw.pw_dir}/xdg/config", "XDG_DATA_HOME": f"{pw.pw_dir}/xdg/data"}
    conf = os.path.join(pw.pw_dir, "containers.conf")
    if os.path.exists(conf):
        env["CONTAINERS_CONF"] = conf
    return Podman(["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items())])


USER_MARK = ".made-by-the-agentsh-tests"  # in the test user's home: a user the suite made, and may remove


def mark_user_made(user):
    import pwd

    with open(os.path.join(pwd.getpwnam(user).pw_dir, USER_MARK), "w"):
        pass


def left_by_an_earlier_suite(user):
    """A test user from before the suite removed its user: its config names a test image, as only
    the suite's fixtures write it."""
    import pwd

    try:
        home = pwd.getpwnam(user).pw_dir
        with open(os.path.join(home, "xdg/config/agentsh/config.toml"), "rb") as f:
            text = f.read(4096).decode("utf-8", "replace")
    except (KeyError, OSError):
        return False
    return os.path.exists(os.path.join(home, "work")) and text.startswith('image = "localhost/agentsh-test-')


def user_made_by_suite(user):
    import pwd

    try:
        return os.path.exists(os.path.join(pwd.getpwnam(user).pw_dir, USER_MARK))
    except KeyError:
        return False


def uid_of(user):
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def processes(uid, marker):
    """pid -> command line of the processes of `uid`, and of any whose environment holds `marker`."""
    out = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            owner = os.stat(f"/proc/{entry}").st_uid
            mine = uid is not None and owner == uid
            if not mine and marker:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    mine = marker.encode() in f.read()
            if mine:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out[int(entry)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return out


@dataclass
class Footprint:
    containers: dict = field(default_factory=dict)
    volumes: set = field(default_factory=set)
    images: dict = field(default_factory=dict)
    user_exists: bool = False
    user_containers: dict = field(default_factory=dict)
    user_volumes: set = field(default_factory=set)
    user_images: dict = field(default_factory=dict)
    processes: dict = field(default_factory=dict)  # started by this run (its temporary dir in their environment)
    user_processes: dict = field(default_factory=dict)

    def counts(self):
        return {"containers": len(self.containers), "volumes": len(self.volumes), "images": len(self.images),
                "user": int(self.user_exists), "user containers": len(self.user_containers),
                "user volumes": len(self.user_volumes), "user images": len(self.user_images),
                "user processes": len(self.user_processes), "processes": len(self.processes)}


def footprint(user, marker, engine=True):
    fp = Footprint()
    if engine:
        root = Podman()
        fp.containers, fp.volumes, fp.images = root.containers(), root.volumes(), root.images()
    uid = uid_of(user)
    fp.user_exists = uid is not None
    if fp.user_exists and engine and os.geteuid() == 0:
        theirs = user_podman(user)
        fp.user_containers, fp.user_volumes, fp.user_images = theirs.containers(), theirs.volumes(), theirs.images()
    fp.processes = processes(None, marker)
    fp.user_processes = processes(uid, None) if uid is not None else {}
    return fp


def left_behind(before, after, basetemp, exclusive):
    """What `after` holds that `before` did not and this session made, as lines (empty when nothing).

    Root's containers count when their project is under this session's temporary
    directory; root's volumes by their names, and only when no other session ran
    (a volume carries no project); images by their test names; everything of the
    rootless test user, who exists for the suite alone.
    """
    out = []

    def new(kind, now, then, show=lambda k: k):
        extra = sorted(set(now) - set(then))
        if extra:
            out.append(f"{kind}: {', '.join(str(show(k)) for k in extra[:20])}")

    ours = {k: v for k, v in after.containers.items() if v[1].startswith(basetemp)}
    new("containers", ours, before.containers, lambda k: after.containers[k][0])
    if exclusive:
        new("volumes", {v for v in after.volumes if v.startswith(SANDBOX_VOLUME_PREFIXES + TEST_VOLUME_PREFIXES)},
            before.volumes)
    new("processes", after.processes, before.processes, lambda pid: f"{pid} {after.processes[pid][:120]}")
    if not exclusive:  # another run may be using the test images and user still: it removes what is left
        return out
    names_then = set().union(*before.images.values()) if before.images else set()
    names_now = {n for names in after.images.values() for n in names if n.startswith(TEST_IMAGE_PREFIXES)}
    new("images", names_now, names_then)
    if after.user_exists and not before.user_exists:
        out.append("the rootless test user")
    new("the test user's containers", after.user_containers, before.user_containers,
        lambda k: after.user_containers[k][0])
    new("the test user's volumes", after.user_volumes, before.user_volumes)
    new("the test user's processes", after.user_processes, before.user_processes,
        lambda pid: f"{pid} {after.user_processes[pid][:120]}")
    new("the test user's images", {n for names in after.user_images.values() for n in names},
        {n for names in before.user_images.values() for n in names})
    return out


class SessionLock:
    """Shared for a session's whole run; `exclusive()` tells whether this session is the only one."""

    def __init__(self, path=LOCK):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def exclusive(self):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self):
        os.close(self.fd)


def _kill(pids):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if os.path.exists(f"/proc/{p}")]
            time.sleep(0.1)
        pids = alive
        if not pids:
            return


def sweep(before, user, marker, basetemp, exclusive):
    """Remove what this session made; returns lines saying what had been left for the sweep."""
    swept = []
    root = Podman()
    for cid, (name, project) in root.containers().items():
        if cid not in before.containers and project.startswith(basetemp):
            root("rm", "-f", "-t", "0", cid)
            swept.append(f"container {name} (project {os.path.relpath(project, basetemp)})")
    if exclusive:
        for volume in sorted(root.volumes() - before.volumes):
            if volume.startswith(SANDBOX_VOLUME_PREFIXES + TEST_VOLUME_PREFIXES) and \
                    root("volume", "rm", volume).returncode == 0:
                swept.append(f"volume {volume}")
        left, forced = None, False
        while True:  # build layers go leaf first: repeat while that removes something
            images = root.images()
            doomed = sorted(n for names in images.values() for n in names if n.startswith(TEST_IMAGE_PREFIXES))
            doomed += sorted(i for i, names in images.items() if not names and i not in before.images)
            if doomed and doomed == left and not forced:
                # A container left only in storage (a recreate killed half-way) holds a test image, and no
                # other run is active: force the suite's own images, with what holds them
                forced = True
                stuck = [n for n in doomed if n.startswith(TEST_IMAGE_PREFIXES)]
                if stuck:
                    root("rmi", "-f", *stuck)
                    continue
            if not doomed or doomed == left:
                break
            left = doomed
            root("rmi", *doomed)  # one still in use (by another run's sandbox) stays
    uid = uid_of(user)
    owns_user = exclusive and uid is not None and user_made_by_suite(user)  # made by this run or another
    if uid is not None and os.geteuid() == 0 and exclusive:  # else another run may be using them
        theirs = user_podman(user)
        if owns_user:
            theirs("system", "reset", "-f")
        else:
            for cid, (name, _) in theirs.containers().items():
                if cid not in before.user_containers:
                    theirs("rm", "-f", "-t", "0", cid)
                    swept.append(f"the test user's container {name}")
            for volume in sorted(theirs.volumes() - before.user_volumes):
                theirs("volume", "rm", "-f", volume)
                swept.append(f"the test user's volume {volume}")
    leftover = {pid: cmd for pid, cmd in processes(uid if owns_user else None, marker).items()
                if pid not in before.processes and pid not in before.user_processes}
    if leftover:
        if not owns_user:
            swept += [f"process {pid} {cmd[:80]}" for pid, cmd in leftover.items()]
        _kill(list(leftover))
    if owns_user:
        import shutil

        subprocess.run(["userdel", "-r", user], capture_output=True)
        shutil.rmtree(f"/tmp/agentsh-test-runtime-{uid}", ignore_errors=True)
    return swept
