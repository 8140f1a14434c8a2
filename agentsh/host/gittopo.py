"""A project's git topology, read from host-trusted state and checked, never followed blindly.

Everything under a project can be rewritten by the agent: `.git` itself, a
gitfile's `gitdir:` line, `commondir`. So agentsh reads a checkout's
topology only in ways that cannot be steered from the tree:

- a plain repository: `ROOT/.git` is a real directory (not a symlink) with
  no `commondir` in it;
- a linked worktree: `ROOT/.git` is a gitfile naming `M/.git/worktrees/NAME`
  where `M/.git` is a real directory, every path component on the way is a
  real directory, and `M/.git/worktrees/NAME/gitdir` (written by host git,
  in a git dir no sandbox can write) names `ROOT/.git` back.

Anything else (no `.git`, a symlink, a gitfile pointing anywhere else, a
submodule checkout) has no git inside its sandbox. Submodules of a checkout
are the git dirs under `.git/modules/`, found by walking that host-owned
directory without following symlinks.
"""

from __future__ import annotations

import os
import stat
import time

from agentsh.base import layout
from agentsh.base.errors import AgentshError
from agentsh.host.project import Project, known_roots  # noqa: F401 (known_roots: also for callers)

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Callable

    from agentsh.base.state import Store

NONE, MAIN, LINKED = "none", "main", "linked"
_SKIP = frozenset(("objects", "refs", "logs", "hooks", "info", "worktrees", "lfs"))


class Topology:
    """root: the checkout; common: the repository's git dir; own: the checkout's own git dir."""

    def __init__(self, kind: str, root: str, common: str | None = None, own: str | None = None,
                 reason: str = "") -> None:
        self.kind, self.root, self.common, self.own, self.reason = kind, root, common, own, reason

    @property
    def own_rel(self) -> str:
        """The checkout's own git dir relative to the common one ("" for the main checkout)."""
        return "" if self.kind != LINKED else os.path.relpath(self.own, self.common)

    @property
    def main_root(self) -> str | None:
        return os.path.dirname(self.common) if self.common else None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "root": self.root, "common": self.common, "own": self.own}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topology) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Topology({self.as_dict()!r})"


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _real_path_of_dirs(path: str) -> bool:
    """True when every component of the absolute `path` is a real directory (no symlink)."""
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        if not _is_real_dir("/".join(parts[:i]) or "/"):
            return False
    return True


# What points host git at another repository, index or object store than the one it is given.
GIT_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")


def git_env(drop: tuple[str, ...] = GIT_LOCATION_ENV, drop_prefix: str | None = None, keep: tuple[str, ...] = (),
            **extra: str) -> dict[str, str]:
    """This process's environment for a host git that agentsh runs: without the names in `drop`, and
    (with `drop_prefix`) without every name starting with it but those in `keep`; then `extra` set.

    One function for every caller; each passes what it must shed (agentsh.app.worktree,
    agentsh.sandbox.gitbridge, agentsh.host.gitident say why theirs differ).
    """
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not (drop_prefix and k.startswith(drop_prefix) and k not in keep)}
    env.update(extra)
    return env


def read_small(path: str, limit: int = 4096) -> str | None:
    """A small regular file's text, opened without following a final symlink; None if not that.

    Not base.safefs.read_project_file, which opens the same way: that one reads a whole file or raises
    an error naming the fix; this one never raises and returns at most `limit` bytes, which is what the
    topology checks want from a gitfile, `commondir` or HEAD (anything odd there means "not that").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "surrogateescape")
    finally:
        os.close(fd)


def detect(root: str) -> Topology:
    """The topology of the checkout at `root` (a real path), from what is on disk now."""
    dot = os.path.join(root, ".git")
    try:
        st = os.lstat(dot)
    except OSError:
        return Topology(NONE, root, reason="no .git")
    if stat.S_ISDIR(st.st_mode):
        if os.path.lexists(os.path.join(dot, "commondir")):
            return Topology(NONE, root, reason=f"{dot}/commondir exists, which a repository's own .git never has")
        if not os.path.isfile(os.path.join(dot, "HEAD")):
            return Topology(NONE, root, reason=f"{dot} has no HEAD")
        return Topology(MAIN, root, dot, dot)
    if not stat.S_ISREG(st.st_mode):
        return Topology(NONE, root, reason=f"{dot} is a symlink or special file")
    return _linked(root, dot)


def _linked(root: str, dot: str) -> Topology:
    text = read_small(dot)
    if not text or not text.startswith("gitdir:"):
        return Topology(NONE, root, reason=f"{dot} is not a gitfile")
    target = text[len("gitdir:"):].strip()
    own = os.path.normpath(os.path.join(root, target))
    parent = os.path.dirname(own)
    common = os.path.dirname(parent)
    why = None
    if os.path.basename(parent) != "worktrees" or os.path.basename(common) != ".git":
        why = "does not name a .git/worktrees/NAME directory"
    elif not _real_path_of_dirs(own):
        why = "names a path through a symlink or a missing directory"
    elif os.path.lexists(os.path.join(common, "commondir")):
        why = "names a repository whose .git has a commondir"
    else:
        back = read_small(os.path.join(own, "gitdir"))
        if back is None or os.path.realpath(os.path.join(own, back.strip())) != dot:
            why = f"names {own}, whose gitdir does not name {dot} back"
        else:
            common_text = read_small(os.path.join(own, "commondir"))
            if common_text is None or os.path.normpath(os.path.join(own, common_text.strip())) != common:
                why = f"names {own}, whose commondir is not {common}"
    if why:
        return Topology(NONE, root, reason=f"{dot} {why}")
    return Topology(LINKED, root, common, own)


def ref_problem(name: str) -> str | None:
    """Why `name` is not a valid git branch name (git check-ref-format rules), or None."""
    if not name:
        return "is empty"
    if name.startswith("-"):
        return "starts with '-'"
    if name == "HEAD" or name == "@":
        return f"is {name!r}, which git reserves"
    import re  # off the hot path: only when a ref name is checked

    if re.search(r"[\x00-\x20\x7f~^:?*\[\\]", name):
        return "holds a space, a control character or one of ~ ^ : ? * [ \\"
    if ".." in name:
        return "holds '..'"
    if "@{" in name:
        return "holds '@{'"
    if name.endswith(".") or name.endswith("/"):
        return "ends with '.' or '/'"
    for part in name.split("/"):
        if not part:
            return "has an empty path component ('//' or a leading '/')"
        if part.startswith("."):
            return "has a component starting with '.'"
        if part.endswith(".lock"):
            return "has a component ending with '.lock'"
    return None


def modules(common: str) -> list[str]:
    """Relative paths of the submodule git dirs under `common`/modules (nested ones included)."""
    found = []

    def walk(rel: str) -> None:
        path = os.path.join(common, rel)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name in _SKIP or not entry.is_dir(follow_symlinks=False):
                continue
            sub = f"{rel}/{entry.name}"
            if os.path.isfile(os.path.join(common, sub, "HEAD")) and _is_real_dir(os.path.join(common, sub, "objects")):
                found.append(sub)
                walk(f"{sub}/modules")
            else:
                walk(sub)  # a module name with '/' in it

    walk("modules")
    return found


def check(recorded: Topology, root: str) -> Topology:
    """The recorded topology, after checking that the disk still says the same; else an error."""
    now = detect(root)
    if now != recorded:
        raise AgentshError(
            f"{root}/.git no longer matches what agentsh recorded for this project "
            f"({recorded.kind} repository{' at ' + recorded.common if recorded.common else ''}; "
            f"now {now.kind}{': ' + now.reason if now.reason else ''})",
            "if you changed it yourself, run 'ab-up --recreate' in the project to record it again")
    return recorded


def from_dict(d: dict | None, root: str) -> Topology | None:
    if not isinstance(d, dict) or d.get("kind") not in (NONE, MAIN, LINKED) or d.get("root") != root:
        return None
    return Topology(d["kind"], root, d.get("common"), d.get("own"))


# -- what agentsh recorded -------------------------------------------------------

ROOTS = layout.PROJECT_ROOTS


def _record_rel(project: Project) -> str:
    return layout.project_record(project.sandbox)


def recorded(store: Store, project: Project, again: bool = False) -> Topology:
    """The project's topology as first recorded (recorded now if never), checked against the disk.

    `again`: record what the disk says now (ab-up --recreate: the user's decision).
    """
    record = None if again else store.read(_record_rel(project))
    topo = from_dict((record or {}).get("git"), project.root)
    if topo is not None:
        return check(topo, project.root)
    topo = detect(project.root)
    with store.lock():
        store.write(_record_rel(project), {"root": project.root, "git": topo.as_dict()})
        if topo.kind != NONE:  # a repo's checkout: a .git made inside it later belongs to it
            remember_root(store, project.root)
    return topo


def remember_root(store: Store, root: str) -> None:
    path = store.path(ROOTS)
    if root in known_roots(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, root.encode("utf-8", "surrogateescape") + b"\0")
    finally:
        os.close(fd)


def set_aside(root: str, notify: Callable[[str], None]) -> None:
    """Move a `.git` that appeared in a project during a command out of host git's way."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        target = f".agentsh-untrusted-git-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        os.rename(".git", target, src_dir_fd=fd, dst_dir_fd=fd)  # renames the entry itself, link or not
    except OSError as e:
        notify(f"WARNING: a .git appeared in {root} during the command and could not be moved aside ({e}); "
               f"do not run git there before removing it")
        return
    finally:
        os.close(fd)
    notify(f"WARNING: a .git appeared in {root} during the command; host git would run what its config and "
           f"hooks name, so it was moved to {root}/{target}. To make this project a repository, run "
           f"'git init' on the host.")
