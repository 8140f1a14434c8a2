"""Worktrees and ab-agent go through the same guarded pipeline as ab-exec (rootful and rootless)."""

import json

import pytest

pytestmark = pytest.mark.integration


def test_two_worktree_agents_commit_in_parallel_onto_their_own_branches(side):
    repo = side.repo()
    a = side.ab("ab-wt", "new", "a", cwd=repo, check=True).stdout.decode().strip()
    b = side.ab("ab-wt", "new", "b", cwd=repo, check=True).stdout.decode().strip()
    ident = "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e"
    side.run("sh", "-c", f"export {ident}; "
                         f"(cd {a} && ab-exec -- sh -c 'export {ident}; echo a > a && git add a && git commit -qm in-a') & "
                         f"(cd {b} && ab-exec -- sh -c 'export {ident}; echo b > b && git add b && git commit -qm in-b') & "
                         "wait",
             check=True)
    assert side.git(repo, "log", "-1", "--format=%s", "a").strip() == "in-a"
    assert side.git(repo, "log", "-1", "--format=%s", "b").strip() == "in-b"
    assert side.git(repo, "log", "-1", "--format=%s", "main").strip() == "one"
    assert side.run("git", "-C", a, "status", "--porcelain").stdout == b""
    for wt in (a, b):  # a worktree's gitfile is a mount point inside: it cannot be re-pointed
        proc = side.ab("ab-exec", "--", "sh", "-c", "echo 'gitdir: /tmp/x' > .git", cwd=wt)
        assert proc.returncode != 0
    for name in ("a", "b"):
        side.ab("ab-wt", "rm", "--force", name, cwd=repo)


def test_ab_agent_takes_commits_to_the_host_like_ab_exec(side):
    repo = side.repo()
    config = ('[agents.committer]\ncommand = ["sh", "-c", "echo x >> file && '
              'GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e '
              'git commit -qam by-agent"]\n')
    side.run("sh", "-c", f"cat >> \"$XDG_CONFIG_HOME/agentsh/config.toml\" <<'EOF'\n{config}EOF", check=True)
    proc = side.ab("ab-agent", "committer", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert side.git(repo, "log", "-1", "--format=%s").strip() == "by-agent"
    listing = json.loads(side.ab("ab-agent", "--list", "--json", cwd=repo, check=True).stdout)
    assert any(p["name"] == "committer" for p in listing)


def test_commits_inside_carry_the_hosts_git_identity_which_stays_out_of_inspect(side):
    repo = side.repo()
    side.git(repo, "config", "user.name", "Host Person")
    side.git(repo, "config", "user.email", "host@example.invalid")
    proc = side.ab("ab-exec", "--", "sh", "-c", "echo y >> file && git commit -qam via-identity", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert side.git(repo, "log", "-1", "--format=%an <%ae>").strip() == "Host Person <host@example.invalid>"
    assert "Host Person" not in json.dumps(side.inspect(side.sandbox(repo)))
