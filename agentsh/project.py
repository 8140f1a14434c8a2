"""Which project a directory belongs to, and the names derived from it.

A project is the nearest ancestor holding `.agentsh.toml`, else the git top
level, else the directory itself. The sandbox name is computed from the real
path alone, so hot paths need no state read to find a sandbox.
"""

import os
import re

from . import paths
from .digest import sha256_hex
from .errors import AgentshError

PROJECT_FILE = ".agentsh.toml"
NAME_PREFIX = "ab-"


class Project:
    """A project root (real path) and what hangs off it."""

    def __init__(self, root, config_file=None):
        self.root = root
        self.config_file = config_file
        self.key = sha256_hex(root)[:8]
        self.slug = slugify(os.path.basename(root))
        self.sandbox = f"{NAME_PREFIX}{self.slug}-{self.key}"
        self.home_volume = f"{self.sandbox}-home"

    def __repr__(self):
        return f"Project({self.root!r})"

    def git_dir(self):
        """The project's own `.git` directory, or None (no repo, or a gitfile)."""
        git = os.path.join(self.root, ".git")
        return git if os.path.isdir(git) else None


def slugify(name):
    """A short, engine-safe rendering of a directory name."""
    slug = re.sub(r"[^a-z0-9_.]+", "-", name.lower()).strip("-._")[:24].rstrip("-._")
    return slug or "project"


def find(start=None):
    """The Project holding `start` (default: the working directory)."""
    start = start if start is not None else os.getcwd()
    real = os.path.realpath(start)
    if not os.path.isdir(real):
        what = "is not a directory" if os.path.exists(real) else "does not exist"
        raise AgentshError(f"{start} {what}", "give an existing project directory")
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
    root = found or git_top or real
    if root == home:
        raise AgentshError(
            f"{root} is your home directory, which is never a project (it holds your keys and every other repo)",
            "cd into a project directory, or give one",
        )
    if root == "/":
        raise AgentshError("/ is never a project (it would mount the whole host)", "cd into a project directory, or give one")
    return Project(root, os.path.join(root, PROJECT_FILE) if found else None)
