"""ab-wt against real engines, Podman and Docker (the private dockerd): git working inside worktree sandboxes,
and cleanup."""

import json
import os
import shutil
import subprocess

import pytest

from agentsh.host import project
from tests.conftest import GIT_ID, GIT_IMAGE, ab, each_engine, git, on_engine

# Passed as -e NAME=VALUE: the sandbox has no git identity of its own.
GIT_ID_ARGS = [a for k, v in GIT_ID.items() for a in ("-e", f"{k}={v}")]


@pytest.fixture(params=["podman", "docker"])
def engine(request, user_config, monkeypatch):
    """Each engine in turn, with the image that has git."""
    yield from each_engine(request, user_config, monkeypatch, GIT_IMAGE, "git_image")


pytestmark = [pytest.mark.usefixtures("engine"), pytest.mark.committed]


def inspect(engine, name):
    return json.loads(on_engine(engine, "container", "inspect", name).stdout)[0]


def exists(engine, kind, name):
    """Whether the engine has that container or volume (Docker 20.10 has no `exists`)."""
    return on_engine(engine, kind, "inspect", name, check=False).returncode == 0


def wt_new(repo, name):
    return ab("ab-wt", "new", name, cwd=repo, check=True).stdout.decode().strip()


def in_sandbox(*cmd, wt=None, cwd=None):
    argv = ["ab-exec", *(["--wt", wt] if wt else []), *GIT_ID_ARGS, "--", *cmd]
    return ab(*argv, cwd=cwd)


def test_two_worktrees_commit_in_two_sandboxes_at_once(repo, engine):
    paths = {name: wt_new(repo, name) for name in ("agent-a", "agent-b")}
    sandboxes = {name: ab("ab-up", "--wt", name, cwd=repo, check=True).stdout.decode().strip() for name in paths}
    assert sandboxes["agent-a"] != sandboxes["agent-b"]
    for name in paths:
        info = inspect(engine, sandboxes[name])
        assert info["State"]["Status"] == "running" and info["Config"]["Labels"]["io.agentsh.project"] == paths[name]
    script = ('set -e; echo "work of $1" > "$1.txt"; git add "$1.txt"; git commit -q -m "commit by $1"; '
              'git status --porcelain; git log --format=%s -1')
    procs = {name: subprocess.Popen(["ab-exec", "--wt", name, *GIT_ID_ARGS, "--", "sh", "-c", script, "sh", name],
                                    cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in paths}
    outputs = {name: p.communicate(timeout=120) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name][1].decode()
        assert outputs[name][0].decode() == f"commit by {name}\n"  # clean status, then the new commit
    # The host repo has both branches, each with its sandbox's commit on top of main's.
    for name, path in paths.items():
        assert git(repo, "log", "--format=%s", "-2", name).splitlines() == [f"commit by {name}", "init"]
        assert git(repo, "show", f"{name}:{name}.txt") == f"work of {name}\n"
        assert git(path, "status", "--porcelain") == ""
    assert set(git(repo, "branch", "--format=%(refname:short)").split()) >= set(paths)


def test_worktree_sandbox_sees_only_the_main_git_dir_and_cannot_change_hooks_or_config(repo, engine):
    path = wt_new(repo, "w")
    listing = in_sandbox("ls", "-a", str(repo), wt="w", cwd=repo)
    assert listing.returncode == 0 and set(listing.stdout.decode().split()) == {".", "..", ".git"}
    hook = in_sandbox("sh", "-c", f"echo evil > {repo}/.git/hooks/pre-commit", wt="w", cwd=repo)
    assert hook.returncode != 0 and not (repo / ".git" / "hooks" / "pre-commit").exists()
    in_sandbox("git", "config", "core.hooksPath", "/tmp", wt="w", cwd=repo)  # the sandbox's own config
    assert "hooksPath" not in (repo / ".git" / "config").read_text()
    status = in_sandbox("git", "status", "--short", "--branch", wt="w", cwd=repo)
    assert status.returncode == 0 and status.stdout.decode().startswith("## w"), status.stderr.decode()
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in inspect(engine, project.Project(path).sandbox)["Mounts"]}
    git_dir = str(repo / ".git")
    assert mounts["/run/agentsh/host-git"] == (git_dir, False)  # the host's git dir: read-only
    assert mounts[git_dir][0] != git_dir  # at its path: the sandbox's own
    assert mounts[f"{path}/.git"] == (f"{path}/.git", False)
    assert str(repo) not in mounts


def test_a_commit_through_ab_exec_in_a_plain_repo_is_a_host_commit(repo):
    proc = in_sandbox("sh", "-c", "echo inside > made.txt && git add made.txt && git commit -q -m 'from the sandbox'",
                      cwd=repo)
    assert proc.returncode == 0, proc.stderr.decode()
    assert git(repo, "log", "--format=%s", "-1") == "from the sandbox\n"
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "show", "HEAD:made.txt") == "inside\n"


def test_rm_refuses_then_removes_worktree_sandbox_and_home_volume(repo, engine):
    path = wt_new(repo, "r")
    name = project.Project(path).sandbox
    assert in_sandbox("sh", "-c", "echo draft > draft.txt", wt="r", cwd=repo).returncode == 0
    assert exists(engine, "volume", f"{name}-home")
    dirty = ab("ab-wt", "rm", "r", cwd=repo)
    assert dirty.returncode == 125 and b"uncommitted or untracked" in dirty.stderr
    assert in_sandbox("sh", "-c", "git add draft.txt && git commit -qm draft", wt="r", cwd=repo).returncode == 0
    unmerged = ab("ab-wt", "rm", "r", cwd=repo)
    assert unmerged.returncode == 125 and b"1 commit not merged" in unmerged.stderr
    assert os.path.isdir(path) and inspect(engine, name)["State"]["Status"] == "running"
    ab("ab-wt", "rm", "r", "--force", "--delete-branch", cwd=repo, check=True)
    assert not os.path.exists(path)
    assert not exists(engine, "container", name)
    assert not exists(engine, "volume", f"{name}-home")
    assert "r" not in git(repo, "branch", "--format=%(refname:short)").split()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_prune_forgets_a_worktree_deleted_by_hand_and_its_sandbox(repo, engine):
    path = wt_new(repo, "p")
    name = ab("ab-up", "--wt", "p", cwd=repo, check=True).stdout.decode().strip()
    shutil.rmtree(path)
    gone = ab("ab-exec", "--wt", "p", "--", "true", cwd=repo)
    assert gone.returncode == 125 and gone.stderr.decode().count("\n") == 1 and b"is gone" in gone.stderr
    out = ab("ab-wt", "prune", cwd=repo, check=True).stdout.decode()
    assert out == f"forgot p ({path})\n"
    assert not exists(engine, "container", name)
    assert not exists(engine, "volume", f"{name}-home")
    assert ab("ab-wt", "ls", "--json", cwd=repo, check=True).stdout.strip() == b"[]"
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
