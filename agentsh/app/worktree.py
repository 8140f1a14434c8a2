"""Git worktrees under the user data dir, one sandbox each (`ab-wt`).

Running two agents on one repo at once needs two checkouts. A worktree made
here is an ordinary linked git worktree, placed and recorded so that it can
be found by name from anywhere in the repo:

  directory  <data dir>/worktrees/<repo-slug>-<8 hex>/<NAME>
  record     <state dir>/worktrees/<repo-slug>-<8 hex>/<NAME>.json

where `<repo-slug>-<8 hex>` is the main checkout's slug and key as
agentsh.host.project computes them (so it is the same from the main checkout, a
subdirectory or any of its worktrees). NAME may hold `/` as a branch name
may, so records and directories can be nested: list them with `names()`.

Each worktree is its own project (its sandbox is named from its path like
any other); sandbox.spec() mounts the main repo's git dir for it, so git
works inside. Every change to one repo's worktrees happens under a per-repo
store lock, because concurrent `git worktree add`s in one repo collide on
git's own lock files; and a failed `new` undoes what it made, leaving no
branch, directory or record behind.
"""

import os
import re
import shutil
import subprocess
import time

from agentsh.base import layout, paths
from agentsh.base.errors import AgentshError, UsageError
from agentsh.base.state import _TMP_MARK, Store
from agentsh.host import project
from agentsh.host.engine import Engine
from agentsh.host.gittopo import git_env, ref_problem
from agentsh.policy import config
from agentsh.sandbox import lifecycle as sandbox

RECORDS = layout.WORKTREES
# Conservative on purpose: a NAME becomes a directory, a branch and part of
# a command line a user may paste into a shell.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
MAX_NAME = 100
# Variables that would point git somewhere other than the repo we name with -C.


# -- names ----------------------------------------------------------------


def name_problem(name):
    """Why `name` cannot name a worktree, or None.

    A git branch name (it is the default branch), made of letters, digits,
    '.', '_' and '-' in '/'-separated components each starting with a letter
    or digit: nothing a shell or a path could read differently.
    """
    problem = ref_problem(name)
    if problem:
        return problem
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if not all(_COMPONENT.match(part) for part in name.split("/")):
        return "may only hold letters, digits, '.', '_', '-' and '/' between components starting with a letter or digit"
    return None


def check_name(name, what="worktree name"):
    problem = name_problem(name) if what == "worktree name" else ref_problem(name)
    if problem:
        raise UsageError(f"{what} {name!r} {problem}",
                         "use letters, digits, '.', '_', '-' and '/' (e.g. fix-login or feat/search)")


# -- the repository ---------------------------------------------------------


class Repo:
    """A main checkout and where its worktrees live."""

    def __init__(self, root, git_dir=None, repo_id=None):
        self.root = root
        self.git_dir = git_dir
        if repo_id is None:
            main = project.Project(root)
            repo_id = f"{main.slug}-{main.key}"
        self.id = repo_id
        self.records = layout.worktree_records(self.id)
        self.dir = os.path.join(paths.data_dir(), RECORDS, self.id)

    def __repr__(self):
        return f"Repo({self.root!r})"

    def record_rel(self, name):
        return layout.worktree_record(self.id, name)

    def path(self, name):
        return os.path.join(self.dir, name)


def _checkout_top(start):
    """The nearest directory at or above `start` holding `.git` (never home or /), or None."""
    home = paths.home_dir()
    d = start
    while d not in (home, "/"):
        if os.path.lexists(os.path.join(d, ".git")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return None


def find_repo(directory=None):
    """The main checkout of the git repository holding `directory` (default: cwd)."""
    given = directory if directory is not None else os.getcwd()
    start = project.real_dir(given, "give a directory inside a git repository")
    top = _checkout_top(start)
    if top is None:
        raise AgentshError(f"{given} is not in a git repository",
                           "cd into a git checkout, or give one as DIR ('git init' makes one)")
    _, common = project.git_dirs(top)
    if common is None:
        raise AgentshError(f"{top}/.git is not a usable git dir (a broken gitfile?)",
                           "check it with 'git -C {top} status'")
    if os.path.basename(common) != ".git":
        raise AgentshError(f"{top} belongs to a repository without a main checkout ({common}: bare, or a submodule)",
                           "run ab-wt in a regular checkout")
    return Repo(os.path.dirname(common), common)


def main_checkout_path(path):
    """For a file inside a linked worktree, the same relative path in the main checkout.

    None unless git links the two both ways: the worktree's `.git` names a
    dir under the main repo's `.git/worktrees/`, and that dir's `gitdir`
    names the worktree's `.git` back (a stray gitfile alone proves nothing).
    """
    top = _checkout_top(os.path.dirname(path))
    if top is None or not os.path.isfile(os.path.join(top, ".git")):
        return None
    own, common = project.git_dirs(top)
    if own is None or own == common or os.path.basename(common) != ".git":
        return None
    try:
        with open(os.path.join(own, "gitdir"), "rb") as f:
            back = f.read(4096).decode("utf-8", "surrogateescape").strip()
    except OSError:
        return None
    if os.path.realpath(os.path.join(own, back)) != os.path.realpath(os.path.join(top, ".git")):
        return None
    return os.path.join(os.path.dirname(common), os.path.relpath(path, top))


# -- git --------------------------------------------------------------------


def git(cwd, *args, check=True):
    """Run git in `cwd`; returns (status, stdout, stderr), or raises on failure when check."""
    # git for the user in the user's own checkout: only what would point it at another repository goes;
    # the user's git config (GIT_CONFIG_*, -c through the environment) applies as in their shell.
    # LC_ALL: messages we recognise are git's English ones.
    env = git_env(LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    try:
        proc = subprocess.run(["git", "-C", cwd, *args], stdin=subprocess.DEVNULL, capture_output=True, env=env)
    except FileNotFoundError:
        raise AgentshError("git is not installed (not found on PATH)", "install git") from None
    out = proc.stdout.decode("utf-8", "surrogateescape")
    err = proc.stderr.decode("utf-8", "surrogateescape")
    if check and proc.returncode != 0:
        raise AgentshError(f"git {args[0]} failed in {cwd}: {_last_line(err)}")
    return proc.returncode, out, err


def _last_line(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1].removeprefix("fatal: ").removeprefix("error: ") if lines else "no error text")[:300]


def _branch_exists(repo, branch):
    return git(repo.root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)[0] == 0


# -- records ------------------------------------------------------------------


def _store(store):
    if store is None:
        store = Store()
    return store


def names(store, repo_id):
    """Every worktree name recorded for a repo id (`<slug>-<8 hex>`), sorted; nested names included."""
    base = store.path(layout.worktree_records(repo_id))
    found = []
    for dirpath, _, files in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        for f in files:
            if f.endswith(".json") and _TMP_MARK not in f:
                found.append(f[:-5] if rel == "." else f"{rel}/{f[:-5]}")
    return sorted(found)


def get(name, directory=None, store=None, repo=None):
    """The record of worktree NAME of the repo holding `directory`; a clear error when none."""
    check_name(name)
    repo = repo or find_repo(directory)
    record = _store(store).read(repo.record_rel(name))
    if record is None:
        raise AgentshError(f"no worktree {name!r} in {repo.root}", "see 'ab-wt ls', or make it with 'ab-wt new'")
    return record


def path_of(name, directory=None, store=None):
    """The directory of worktree NAME; a clear error when it was deleted by hand."""
    record = get(name, directory, store)
    if not os.path.isdir(record["path"]):
        raise AgentshError(f"worktree {name!r}: its directory {record['path']} is gone (deleted by hand?)",
                           "run 'ab-wt prune' to forget it, then 'ab-wt new' to make it again")
    return record["path"]


def _remove_empty_parents(path, stop):
    """Remove empty directories from `path` up to (and including) `stop`."""
    d = path
    while d.startswith(stop) and d != os.path.dirname(stop):
        try:
            os.rmdir(d)
        except OSError:
            return
        d = os.path.dirname(d)


# -- new ------------------------------------------------------------------------


def create(name, directory=None, ref=None, branch=None, store=None):
    """Make worktree NAME (branch BRANCH, default NAME, from REF, default HEAD); returns its record.

    An existing branch is checked out instead of made (then REF must not be
    given). On any failure everything this call made is undone.
    """
    check_name(name)
    branch = branch or name
    check_name(branch, "branch name")
    if ref is not None and (not ref or ref.startswith("-")):
        raise UsageError(f"--from {ref!r} is not a git revision", "give a branch, tag or commit")
    store = _store(store)
    repo = find_repo(directory)
    path = repo.path(name)
    with store.lock(layout.worktree_lock(repo.id)):
        _check_free(store, repo, name, path)
        existing = _branch_exists(repo, branch)
        if existing and ref is not None:
            raise AgentshError(f"branch {branch!r} already exists, so --from {ref} cannot apply",
                               f"drop --from to check {branch} out, or give a new --branch")
        if existing:
            args = ["worktree", "add", "--quiet", path, branch]
        else:
            args = ["worktree", "add", "--quiet", "-b", branch, path, ref or "HEAD"]
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            status, _, err = git(repo.root, *args, check=False)
            if status != 0:
                raise _add_error(err, repo, name, branch, ref)
            record = {"name": name, "repo": repo.root, "path": path, "branch": branch, "from": ref,
                      "created_branch": not existing, "created": int(time.time())}
            store.write(repo.record_rel(name), record)
        except BaseException:
            _undo_create(repo, path, branch, made_branch=not existing)
            raise
    return record


def _check_free(store, repo, name, path):
    record = store.read(repo.record_rel(name))
    if record is not None:
        gone = "" if os.path.isdir(record["path"]) else " (its directory is gone: 'ab-wt prune' forgets it)"
        raise AgentshError(f"worktree {name!r} already exists at {record['path']}{gone}",
                           f"use it (cd \"$(ab-wt path {name})\"), or pick another name")
    for other in names(store, repo.id):
        if other.startswith(name + "/") or name.startswith(other + "/"):
            raise AgentshError(f"worktree {name!r} would nest with worktree {other!r}",
                               "pick a name that is not a path prefix of another")
    if os.path.lexists(path):
        raise AgentshError(f"{path} already exists but is no worktree agentsh knows",
                           "remove it, or pick another name")


def _add_error(err, repo, name, branch, ref):
    low = err.lower()
    if "invalid reference" in low or "not a valid object name" in low:
        what = ref or "HEAD"
        fix = ("commit something first, or give --from" if ref is None
               else "give a branch, tag or commit that exists ('git log --oneline')")
        return AgentshError(f"{what} does not resolve to a commit in {repo.root}", fix)
    if "is already checked out at" in low or "is already used by worktree" in low:
        return AgentshError(f"branch {branch!r} is already checked out elsewhere: {_last_line(err)}",
                            "give another branch with --branch, or use that checkout")
    if "not a valid branch name" in low:
        return UsageError(f"{branch!r} is not a valid branch name", "pick another --branch")
    return AgentshError(f"cannot make worktree {name!r}: git says: {_last_line(err)}")


def _undo_create(repo, path, branch, made_branch):
    """Remove whatever a failed `new` left: its directory, git's record of it, its branch."""
    if os.path.lexists(path):
        git(repo.root, "worktree", "remove", "--force", "--force", path, check=False)
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
    git(repo.root, "worktree", "prune", check=False)
    if made_branch and _branch_exists(repo, branch):
        git(repo.root, "branch", "-D", branch, check=False)
    _remove_empty_parents(os.path.dirname(path), repo.dir)


# -- ls -------------------------------------------------------------------------


def _checkout_state(path):
    """(branch or None, HEAD commit or None, dirty) of a checkout, from one git call."""
    status, out, _ = git(path, "status", "--porcelain=v2", "--branch", check=False)
    if status != 0:
        return None, None, None
    branch = head = None
    dirty = False
    for line in out.splitlines():
        if line.startswith("# branch.oid "):
            head = line.split(" ", 2)[2]
            head = None if head == "(initial)" else head
        elif line.startswith("# branch.head "):
            branch = line.split(" ", 2)[2]
            branch = None if branch == "(detached)" else branch
        elif not line.startswith("#"):
            dirty = True
    return branch, head, dirty


def _sandboxes_under(rows, path):
    return [r for r in rows if r["project"] == path or r["project"].startswith(path + "/")]


def _engine():
    return Engine(config.load()["engine"])


def _sandbox_rows(engine):
    """Every agentsh sandbox, or None when the engine cannot be asked."""
    try:
        return sandbox.listing(engine or _engine())
    except AgentshError:
        return None


def listing(directory=None, store=None, engine=None):
    """One row per worktree agentsh made in the repo holding `directory`."""
    store = _store(store)
    repo = find_repo(directory)
    sandboxes = _sandbox_rows(engine)
    rows = []
    for name in names(store, repo.id):
        record = store.read(repo.record_rel(name))
        path = record["path"]
        exists = os.path.isdir(path)
        branch, head, dirty = _checkout_state(path) if exists else (record.get("branch"), None, None)
        own = project.Project(path)
        state = "unknown"
        if sandboxes is not None:
            match = [r for r in _sandboxes_under(sandboxes, path) if r["name"] == own.sandbox]
            state = match[0]["state"] if match else "none"
        rows.append({"name": name, "path": path, "branch": branch, "head": head, "dirty": dirty,
                     "exists": exists, "sandbox": own.sandbox, "sandbox_state": state, "repo": repo.root})
    return rows


# -- rm and prune ---------------------------------------------------------------


def _unmerged(repo, branch, head):
    """How many commits of the worktree (its HEAD and branch) the repo has nowhere else.

    "Elsewhere" is the main checkout's HEAD or the branch's upstream, as for
    `git branch -d`. Returns (count, what they were compared with).
    """
    tips = [t for t in (head, f"refs/heads/{branch}" if branch and _branch_exists(repo, branch) else None) if t]
    if not tips:
        return 0, "HEAD"
    bases = ["HEAD"]
    _, upstream, _ = git(repo.root, "for-each-ref", "--format=%(upstream)", f"refs/heads/{branch}", check=False)
    if upstream.strip():
        bases.append(upstream.strip())
    status, out, err = git(repo.root, "rev-list", "--count", *tips, "--not", *bases, check=False)
    if status != 0:
        raise AgentshError(f"cannot tell whether {branch or head} is merged: {_last_line(err)}",
                           "check with 'git log', or use --force")
    what = " or ".join(("the main checkout's HEAD" if b == "HEAD" else b) for b in bases)
    return int(out.strip() or 0), what


def _remove_sandboxes(engine, store, path):
    """Remove every sandbox (and home volume) of a project at or under `path`; returns their names."""
    engine = engine or _engine()
    rows = sandbox.listing(engine)
    found = [r["name"] for r in _sandboxes_under(rows, path)]
    own = project.Project(path).sandbox
    if own not in found:
        found.append(own)  # its home volume may outlive the container
    sandbox.down(engine, found, remove=True, volumes=[f"{n}-home" for n in found], store=store)
    return found


def _forget(store, repo, name):
    store.remove(repo.record_rel(name))
    _remove_empty_parents(os.path.dirname(store.path(repo.record_rel(name))), store.path(repo.records))
    _remove_empty_parents(os.path.dirname(repo.path(name)), repo.dir)


def remove(name, directory=None, force=False, delete_branch=False, store=None, engine=None):
    """Remove worktree NAME with its sandbox and home volume (and its branch when asked).

    Refuses, unless `force`, a worktree with uncommitted or untracked
    changes, or commits found nowhere else (they would be lost with the
    branch, or hard to find without the worktree).
    """
    store = _store(store)
    repo = find_repo(directory)
    with store.lock(layout.worktree_lock(repo.id)):
        record = get(name, store=store, repo=repo)
        path, branch = record["path"], record["branch"]
        exists = os.path.isdir(path)
        head = None
        if exists:
            current, head, dirty = _checkout_state(path)
            branch = current or branch
            if dirty and not force:
                raise AgentshError(f"worktree {name!r} has uncommitted or untracked changes ({path})",
                                   "commit or discard them, or use --force to remove it anyway")
        if not force:
            count, base = _unmerged(repo, branch, head)
            if count:
                raise AgentshError(f"worktree {name!r} has {count} commit{'s' if count > 1 else ''} not merged "
                                   f"into {base}", "merge them, or use --force to remove it anyway")
        sandboxes = _remove_sandboxes(engine, store, path)
        if exists:
            args = ["worktree", "remove", "--force", *(["--force"] if force else []), path]
            status, _, err = git(repo.root, *args, check=False)
            if status != 0:
                fix = "use --force" if "locked" in err.lower() and not force else "remove it by hand, then 'ab-wt prune'"
                raise AgentshError(f"cannot remove worktree {name!r}: git says: {_last_line(err)}", fix)
        else:
            git(repo.root, "worktree", "prune", check=False)
        deleted = None
        if delete_branch and branch and _branch_exists(repo, branch):
            git(repo.root, "branch", "-D", branch)
            deleted = branch
        _forget(store, repo, name)
    return {"name": name, "path": path, "branch": branch, "branch_deleted": deleted is not None,
            "sandboxes": sandboxes}


def _all_repos(store):
    """A Repo for every repo id with records (its root read from one of them)."""
    try:
        ids = sorted(os.listdir(store.path(RECORDS)))
    except FileNotFoundError:
        return []
    repos = []
    for repo_id in ids:
        recorded = names(store, repo_id)
        if recorded:
            root = store.read(layout.worktree_record(repo_id, recorded[0])).get("repo")
            repos.append(Repo(root, repo_id=repo_id))
    return repos


def prune(directory=None, all_repos=False, store=None, engine=None):
    """Forget worktrees whose directories are gone, with their sandboxes; returns their records."""
    store = _store(store)
    repos = _all_repos(store) if all_repos else [find_repo(directory)]
    pruned = []
    for repo in repos:
        with store.lock(layout.worktree_lock(repo.id)):
            gone = []
            for name in names(store, repo.id):
                record = store.read(repo.record_rel(name))
                if not os.path.isdir(record["path"]):
                    gone.append(record)
            for record in gone:
                record = {**record, "sandboxes": _remove_sandboxes(engine, store, record["path"])}
                _forget(store, repo, record["name"])
                pruned.append(record)
            if gone and repo.root and os.path.isdir(repo.root):
                git(repo.root, "worktree", "prune", check=False)
    return pruned
