"""What rootless Podman (and mmdebstrap --mode=unshare) need from the host, and the fix for each.

Everything here reads files (/etc/subuid, /proc/sys, /dev/net/tun, PATH);
nothing starts a process, so `ab doctor` can ask every time and an engine
error can be explained on the spot. The engine's own words for these
failures are poor ("failed to read from slirp4netns sync pipe: EOF"); each
Problem says what is missing, and its fix is one command line, run once by
someone with root.
"""

from __future__ import annotations

import os
import pwd

SUBID_COUNT = 65536  # what Podman's default user namespace maps (uids 0-65535 inside)
SUBID_FIRST = 100000  # where useradd starts handing out ranges
TUN = "/dev/net/tun"
# Words in an engine error that point at the user namespace or rootless networking.
NETWORK_MARKERS = ("slirp4netns", "/dev/net/tun", "pasta", "passt", "setup network", "tap device")
USERNS_MARKERS = ("newuidmap", "newgidmap", "subuid", "subgid", "user namespace", "cannot set up namespace",
                  "insufficient uids", "insufficient gids", "not enough ids", "no subuid ranges", "no subgid ranges",
                  "cannot clone: operation not permitted", "uid_map", "gid_map")
MARKERS = NETWORK_MARKERS + USERNS_MARKERS
# Package names, per package manager, of the programs rootless Podman runs.
PACKAGES = {"uidmap": {"apt-get": "uidmap", "dnf": "shadow-utils", "zypper": "shadow", "pacman": "shadow"},
            "slirp4netns": {"apt-get": "slirp4netns", "dnf": "slirp4netns", "zypper": "slirp4netns",
                            "pacman": "slirp4netns"},
            "mmdebstrap": {"apt-get": "mmdebstrap", "dnf": "mmdebstrap", "zypper": "mmdebstrap",
                           "pacman": "mmdebstrap"},
            "fuse-overlayfs": {"apt-get": "fuse-overlayfs", "dnf": "fuse-overlayfs", "zypper": "fuse-overlayfs",
                               "pacman": "fuse-overlayfs"}}
INSTALL = {"apt-get": "apt-get install -y", "dnf": "dnf install -y", "zypper": "zypper install -y",
           "pacman": "pacman -S --noconfirm"}
# Where distributions keep the network helpers Podman looks for besides PATH.
HELPER_DIRS = ("/usr/libexec/podman", "/usr/lib/podman", "/usr/local/libexec/podman", "/usr/local/lib/podman")


class Problem:
    """One thing missing: key (uidmap, subuid, userns, network, tun), what is wrong, the command that fixes it."""

    def __init__(self, key: str, message: str, fix: str, network: bool = False) -> None:
        self.key, self.message, self.fix, self.network = key, message, fix, network

    def __repr__(self) -> str:
        return f"Problem({self.key!r}, {self.message!r}, {self.fix!r})"


def _user() -> str:

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _sudo() -> str:
    return "" if os.geteuid() == 0 else "sudo "


def _which(program: str, extra: tuple[str, ...] = ()) -> str | None:
    import shutil  # lazy: only when a rootless check runs (engine imports this module on its error path)

    found = shutil.which(program)
    if found:
        return found
    for d in (*extra, "/usr/bin", "/usr/sbin", "/bin", "/sbin"):
        path = os.path.join(d, program)
        if os.access(path, os.X_OK):
            return path
    return None


def install_command(program: str) -> str:
    """The command that installs `program`'s package here (sudo unless root)."""
    manager = next((m for m in INSTALL if _which(m)), None)
    if manager is None:
        return f"install {program} with your package manager"
    return f"{_sudo()}{INSTALL[manager]} {PACKAGES.get(program, {}).get(manager, program)}"


def read_ranges(path: str) -> list[tuple[str, int, int]]:
    """[(owner, start, count)] from an /etc/subuid-style file ([] when it cannot be read)."""
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    rows.append((parts[0], int(parts[1]), int(parts[2])))
    except OSError:
        pass
    return rows


def subid_count(path: str, user: str, uid: int) -> int:
    """How many subordinate ids `user` (or its uid) has in `path`."""
    return sum(count for owner, _, count in read_ranges(path) if owner in (user, str(uid)))


def free_range(paths: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")) -> int:
    """A start of SUBID_COUNT ids that no range in `paths` uses."""
    ends = [start + count for p in paths for _, start, count in read_ranges(p)]
    return max([SUBID_FIRST, *ends])


def _subids_from_nss() -> bool:
    """Whether subordinate ids may come from NSS (sssd, LDAP) rather than the files: then we cannot tell."""
    try:
        with open("/etc/nsswitch.conf", encoding="utf-8", errors="replace") as f:
            return any(line.split(":", 1)[0].strip() == "subid" for line in f if not line.lstrip().startswith("#"))
    except OSError:
        return False


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_problems(user: str | None = None, uid: int | None = None, subuid: str = "/etc/subuid",
                    subgid: str = "/etc/subgid", proc: str = "/proc/sys") -> list[Problem]:
    """What an unprivileged user namespace with a full id map needs (Podman, mmdebstrap --mode=unshare)."""
    user = user or _user()
    uid = os.getuid() if uid is None else uid
    found = []
    if _read(os.path.join(proc, "user/max_user_namespaces")) == "0":
        found.append(Problem("userns", "user namespaces are turned off (user.max_user_namespaces = 0)",
                             f"{_sudo()}sysctl -w user.max_user_namespaces=15000"))
    if _read(os.path.join(proc, "kernel/unprivileged_userns_clone")) == "0":
        found.append(Problem("userns", "unprivileged user namespaces are turned off "
                             "(kernel.unprivileged_userns_clone = 0)",
                             f"{_sudo()}sysctl -w kernel.unprivileged_userns_clone=1"))
    if not (_which("newuidmap") and _which("newgidmap")):
        found.append(Problem("uidmap", "newuidmap/newgidmap are not installed", install_command("uidmap")))
    if not _subids_from_nss():
        missing = [(flag, path) for flag, path in (("--add-subuids", subuid), ("--add-subgids", subgid))
                   if subid_count(path, user, uid) < SUBID_COUNT]
        if missing:
            start = free_range((subuid, subgid))
            ranges = " ".join(f"{flag} {start}-{start + SUBID_COUNT - 1}" for flag, _ in missing)
            names = " and ".join(os.path.basename(p) for _, p in missing)
            found.append(Problem("subuid", f"{user} has fewer than {SUBID_COUNT} subordinate ids in {names}",
                                 f"{_sudo()}usermod {ranges} {user} && podman system migrate"))
    return found


def network_problems(tun: str = TUN) -> list[Problem]:
    """What rootless networking (slirp4netns or pasta, through /dev/net/tun) needs."""
    found = []
    if not (_which("slirp4netns", HELPER_DIRS) or _which("pasta", HELPER_DIRS)):
        found.append(Problem("network", "neither slirp4netns nor pasta is installed (rootless networking)",
                             install_command("slirp4netns"), network=True))
    try:
        st = os.stat(tun)
    except OSError:
        found.append(Problem("tun", f"{tun} does not exist (rootless networking needs it)",
                             f"{_sudo()}modprobe tun", network=True))
        return found
    if not os.access(tun, os.R_OK | os.W_OK):
        found.append(Problem("tun", f"{tun} is mode {st.st_mode & 0o777:04o}: {_user()} cannot open it, and "
                             "rootless networking (slirp4netns, pasta) needs it",
                             f"{_sudo()}chmod 666 {tun}", network=True))
    return found


def problems(**kw: str | int | None) -> list[Problem]:
    """Everything rootless Podman needs that this host lacks ([] when nothing)."""
    tun = kw.pop("tun", TUN)
    return userns_problems(**kw) + network_problems(tun)


def summary(found: list[Problem]) -> tuple[str, str]:
    """(message, fix) for a list of Problems, each one line: the fixes joined with &&."""
    return "; ".join(p.message for p in found), " && ".join(dict.fromkeys(p.fix for p in found))


def mentions(text: str) -> bool:
    """Whether an engine's error text is about the user namespace or rootless networking."""
    low = text.lower()
    return any(m in low for m in MARKERS)


def diagnose(text: str, found: list[Problem] | None = None) -> list[Problem]:
    """The Problems that explain an engine error text, or [] (then the engine's words stand)."""
    low = text.lower()
    if not any(m in low for m in MARKERS):
        return []
    found = problems() if found is None else found
    network = any(m in low for m in NETWORK_MARKERS)
    userns = any(m in low for m in USERNS_MARKERS)
    return [p for p in found if (p.network and network) or (not p.network and userns)] or \
        ([p for p in found if not p.network] if network else [])


def engine_reason(text: str, limit: int = 160) -> str:
    """The engine's first line, cut where it starts quoting a helper's output (literal \\n)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith("Error:")), None) or next(
        (line for line in lines if "level=warning" not in line and not line.startswith("WARN")), text.strip())
    first = first.split("\\n", 1)[0].removeprefix("Error: ")
    return first if len(first) <= limit else first[:limit - 3] + "..."
