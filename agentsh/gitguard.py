"""Keep what an agent writes inside a repo's git dir from running on the host.

Git runs programs named in its config (hooks, core.hooksPath, fsmonitor,
pager, filters...). `mounts` makes the git dir's `hooks/`, `config`
and `worktrees/` read-only in the sandbox, and every other existing file
that can steer host git: `config.worktree` files and submodule git dirs'
`config` and `hooks/`.

What does not exist yet cannot be covered by a mount without creating it on
the host, and one such file matters: `commondir` in a repo's own git dir,
which would point host git at a config the agent wrote. `quarantine` finds
it (and its kin) and moves it aside; agentsh calls it after every `ab-exec`,
on `ab-up` and `ab-down`. Between two such moments a host `git` in that repo
is exposed: docs/security.md says so.
"""

import os
import time

QUARANTINE = "agentsh-quarantine"


def mounts(common_dir, own_dir=None):
    """`-v` arguments protecting a repo's git dir in its sandbox.

    `hooks/`, `config` and all of `worktrees/` are read-only (the main
    checkout's git never writes other worktrees' files); for a linked
    worktree its own dir under `worktrees/` is writable again, but not its
    `commondir` and `gitdir`. Existing `config.worktree` files and submodule
    git dirs' `config` and `hooks/` are read-only too.
    """
    ro = [os.path.join(common_dir, n) for n in ("hooks", "config", "worktrees")]
    rw = []
    if os.path.isfile(os.path.join(common_dir, "config.worktree")):
        ro.append(os.path.join(common_dir, "config.worktree"))
    if own_dir and own_dir != common_dir:
        rw.append(own_dir)
        ro += [p for p in (os.path.join(own_dir, n) for n in ("commondir", "gitdir", "config.worktree"))
               if os.path.isfile(p)]
    modules = os.path.join(common_dir, "modules")
    for root, dirs, _files in os.walk(modules) if os.path.isdir(modules) else ():
        ro += [os.path.join(root, n) for n in ("config", "hooks") if os.path.exists(os.path.join(root, n))]
        dirs[:] = [d for d in dirs if d not in ("objects", "refs", "logs", "hooks", "info")]
    args = []
    for path in rw:
        args += ["-v", f"{path}:{path}"]
    for path in ro:
        args += ["-v", f"{path}:{path}:ro"]
    return args


def prepare(common_dir):
    """Host-side paths the mounts need: git makes the same ones, empty, itself."""
    os.makedirs(os.path.join(common_dir, "hooks"), exist_ok=True)
    os.makedirs(os.path.join(common_dir, "worktrees"), exist_ok=True)
    config = os.path.join(common_dir, "config")
    if not os.path.exists(config):
        open(config, "ab").close()


def planted(git_dir):
    """Files in a repo's own git dir that only an intruder would have made."""
    found = []
    path = os.path.join(git_dir, "commondir")
    if os.path.lexists(path):
        found.append(path)
    return found


def quarantine(git_dir):
    """Move planted files aside; returns where each went (empty: nothing found)."""
    moved = []
    for path in planted(git_dir):
        target_dir = os.path.join(git_dir, QUARANTINE, time.strftime("%Y%m%dT%H%M%S"))
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, os.path.basename(path))
        os.replace(path, target)
        moved.append((path, target))
    return moved


def check(project, notice):
    """quarantine() for a project's own git dir, with a loud notice per file."""
    git_dir = project.git_dir() or project.linked_common_dir()
    if not git_dir:
        return []
    moved = quarantine(git_dir)
    for path, target in moved:
        notice(f"WARNING: {path} appeared in the sandbox; it could make host git run code. "
               f"Moved it to {target}. Inspect it, and review what the agent did.")
    return moved
