"""Which project a directory belongs to, and the names derived from it.

A project is the nearest ancestor holding `.agentsh.toml`, else the git top
level, else the directory itself. The sandbox name is computed from the real
path alone, so hot paths need no state read to find a sandbox.
"""

from __future__ import annotations

import os

from agentsh.base import layout, paths
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError

PROJECT_FILE = ".agentsh.toml"
NAME_PREFIX = "ab-"


class Project:
    """A project root (real path) and what hangs off it."""

    def __init__(self, root: str, config_file: str | None = None) -> None:
        self.root = root
        self.config_file = config_file
        self.key = sha256_hex(root)[:8]
        self.slug = slugify(os.path.basename(root))
        self.sandbox = f"{NAME_PREFIX}{self.slug}-{self.key}"
        self.home_volume = f"{self.sandbox}-home"

    def __repr__(self) -> str:
        return f"Project({self.root!r})"

    def git_dir(self) -> str | None:
        """The project's own `.git` directory, or None (no repo, or a gitfile)."""
        git = os.path.join(self.root, ".git")
        return git if os.path.isdir(git) else None

    def linked_common_dir(self) -> str | None:
        """The main repo's git dir when the project is a linked worktree, else None.

        A linked worktree's `.git` is a file naming its own git dir inside the
        main repo's `.git/worktrees/`; objects, refs, hooks and config live in
        the main repo's `.git` (the "common dir"), which the sandbox must mount
        for git to work inside.
        """
        if not os.path.isfile(os.path.join(self.root, ".git")):
            return None
        own, common = git_dirs(self.root)
        return common if own is not None and own != common else None


def read_gitfile(path: str) -> str | None:
    """The real path a `.git` file points at (`gitdir: DIR`), or None if it is not one."""
    try:
        with open(path, "rb") as f:
            text = f.read(4096).decode("utf-8", "surrogateescape")
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    target = text[len("gitdir:"):].strip()
    return os.path.realpath(os.path.join(os.path.dirname(path), target)) if target else None


def git_dirs(top: str) -> tuple[str | None, str | None]:
    """(the checkout's own git dir, the repository's common git dir) for a checkout top level.

    Both are the same `.git` directory in a plain repo; in a linked worktree
    the first is its private dir and the second the main repo's `.git` (read
    from the private dir's `commondir` file, as git does). (None, None) when
    `top/.git` is neither a directory nor a readable gitfile.
    """
    dot_git = os.path.join(top, ".git")
    if os.path.isdir(dot_git):
        own = os.path.realpath(dot_git)
    else:
        own = read_gitfile(dot_git)
        if own is None or not os.path.isdir(own):
            return None, None
    try:
        with open(os.path.join(own, "commondir"), "rb") as f:
            common = f.read(4096).decode("utf-8", "surrogateescape").strip()
    except OSError:
        return own, own
    return own, os.path.realpath(os.path.join(own, common)) if common else own


_SLUG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")


def slugify(name: str) -> str:
    """A short, engine-safe rendering of a directory name (runs of other characters become '-')."""
    out = []
    for ch in name.lower():
        if ch in _SLUG_CHARS:
            out.append(ch)
        elif not out or out[-1] != "-":
            out.append("-")
    slug = "".join(out).strip("-._")[:24].rstrip("-._")
    return slug or "project"


def real_dir(given: str | None = None, fix: str = "give an existing directory") -> str:
    """The real path of a directory (default: the working directory), or a clear error."""
    given = given if given is not None else os.getcwd()
    real = os.path.realpath(given)
    if not os.path.isdir(real):
        what = "is not a directory" if os.path.exists(real) else "does not exist"
        raise AgentshError(f"{given} {what}", fix)
    return real


def _known_above(git_top: str | None, real: str) -> str | None:
    """The nearest project agentsh already knows that holds `real`, unless a repo lies between.

    A `.git` (or a plain subdirectory) inside a known project belongs to it:
    the agent can make a `.git` anywhere in its tree, and that must not make
    a new project with mounts of its own.
    """
    best = None
    for root in known_roots(os.path.join(paths.state_dir(), layout.PROJECT_ROOTS)):
        if (real == root or real.startswith(root + "/")) and (best is None or len(root) > len(best)):
            best = root
    if best is None or (git_top is not None and len(git_top) < len(best)):
        return None
    return best


def known_roots(path: str) -> list[str]:
    """The real paths of every project whose git topology agentsh recorded (layout.PROJECT_ROOTS)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0") if p.startswith(b"/")]


def find(start: str | None = None) -> Project:
    """The Project holding `start` (default: the working directory)."""
    real = real_dir(start, "give an existing project directory")
    home = paths.home_dir()
    git_top = None
    found = None
    d = real
    while True:
        if d not in (home, "/"):
            if os.path.isfile(os.path.join(d, PROJECT_FILE)):
                found = d
                break
            if git_top is None and os.path.lexists(os.path.join(d, ".git")):
                git_top = d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    root = found or _known_above(git_top, real) or git_top or real
    if root == home:
        raise AgentshError(
            f"{root} is your home directory, which is never a project (it holds your keys and every other repo)",
            "cd into a project directory, or give one",
        )
    if root == "/":
        raise AgentshError("/ is never a project (it would mount the whole host)", "cd into a project directory, or give one")
    return Project(root, os.path.join(root, PROJECT_FILE) if found else None)
