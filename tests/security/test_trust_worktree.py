"""Trust is never inherited through a worktree link the agent forged (rootful and rootless).

A linked worktree's byte-identical project file inherits the main checkout's
trust. Before, "linked" was decided from files in the worktree's own tree: an
unallowed repo whose `.git` named an allowed repo's git dir (or its
`.git/worktrees/x`, or a private git dir whose `commondir` named it), plus a
copy of the allowed `.agentsh.toml`, received that repo's trust and so its
host mounts. Now only the link host git makes counts: the gitfile names
M/.git/worktrees/NAME through real directories, and that directory's own
`gitdir` (written by host git, in a dir no sandbox can write) names this
checkout back.
"""

import json

import pytest

from tests.security.test_config_ca_bundle import write

pytestmark = pytest.mark.integration


@pytest.fixture
def allowed(side):
    """An allowed repo whose project file mounts a host directory, and a real linked worktree of it."""
    secret = side.base / "host-secret-dir"
    write(side, secret / "key", "not for other repos\n")
    repo = side.repo("allowed")
    write(side, repo / ".agentsh.toml", f'mounts = ["{secret}:/secret:ro"]\n')
    side.git(repo, "add", ".agentsh.toml")
    side.git(repo, "commit", "-qm", "project file")
    side.ab("ab-allow", str(repo), check=True)
    worktree = side.base / f"{repo.name}-wt"
    side.git(repo, "worktree", "add", "-q", str(worktree))
    side.made.append(worktree)
    return repo, worktree, secret


def trust_and_mounts(side, checkout):
    report = json.loads(side.ab("ab-status", "--json", "--no-engine", str(checkout), check=True).stdout)
    proc = side.ab("ab-up", "--json", str(checkout))
    assert proc.returncode == 0, proc.stderr.decode()
    return report["trust"], side.mount_sources(json.loads(proc.stdout)["name"])


def test_a_real_linked_worktree_inherits_trust(side, allowed):
    _, worktree, secret = allowed
    state, mounts = trust_and_mounts(side, worktree)
    assert state == "allowed" and str(secret) in mounts


@pytest.mark.parametrize("forgery", ["worktree-dir", "git-dir", "own-commondir"])
def test_forged_worktree_link_does_not_inherit_trust(side, allowed, forgery):
    repo, worktree, secret = allowed
    fake = side.base / f"forged-{forgery}"
    side.run("mkdir", "-p", str(fake), check=True)
    side.made.append(fake)
    side.run("cp", str(repo / ".agentsh.toml"), str(fake / ".agentsh.toml"), check=True)  # byte-identical
    if forgery == "worktree-dir":
        gitfile = f"gitdir: {repo}/.git/worktrees/{worktree.name}\n"
    elif forgery == "git-dir":
        gitfile = f"gitdir: {repo}/.git\n"
    else:  # the reproduction: a private git dir whose commondir names the allowed repo
        own = fake / ".wt" / "x"
        write(side, own / "commondir", f"{repo}/.git\n")
        write(side, own / "gitdir", f"{fake}/.git\n")
        write(side, own / "HEAD", "ref: refs/heads/main\n")
        gitfile = "gitdir: .wt/x\n"
    write(side, fake / ".git", gitfile)
    state, mounts = trust_and_mounts(side, fake)
    assert state == "blocked"
    assert str(secret) not in mounts and not any(m.startswith(str(secret)) for m in mounts)
    assert str(repo) not in mounts and f"{repo}/.git" not in mounts
