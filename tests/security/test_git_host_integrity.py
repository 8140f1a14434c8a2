"""What an agent writes in a repository's git dir never reaches host git (each test runs rootful and rootless)."""

import os

import pytest

pytestmark = pytest.mark.integration

FSMONITOR = "[core]\n\tfsmonitor = touch {marker}\n\tpager = touch {marker}; cat\n"


def _pwned(side, marker):
    return side.run("test", "-e", str(marker)).returncode == 0


def _host_git_everything(side, repo):
    """What a user does next on the host: status, a commit, log through a pager, diff."""
    side.run("sh", "-c", "echo more >> file", cwd=repo, check=True)
    side.git(repo, "status")
    side.git(repo, "commit", "-qam", "host commit", check=False)
    side.run("sh", "-c", "PAGER= GIT_PAGER= git -c core.pager=cat log -1 >/dev/null", cwd=repo)
    side.run("sh", "-c", "git -p log -1 >/dev/null 2>&1", cwd=repo)


def test_dot_git_cannot_be_renamed_or_replaced_from_inside(side):
    repo = side.repo()
    proc = side.inside(repo, "mv .git .git-orig", check=False)
    assert proc.returncode != 0
    proc = side.inside(repo, "rm -rf .git 2>/dev/null; echo 'gitdir: .wt/x' > .git", check=False)
    assert proc.returncode != 0
    assert os.path.isdir(repo / ".git") and not (repo / ".git-orig").exists()
    assert side.git(repo, "rev-parse", "--git-dir").strip() == ".git"


def test_config_and_hooks_written_inside_never_run_on_the_host(side):
    repo = side.repo()
    marker = side.base / f"pwned-{repo.name}"
    side.inside(repo, f"printf '{FSMONITOR.format(marker=marker)}' >> .git/config; "
                      "rm -f .git/hooks; mkdir -p .git/hooks; "
                      f"printf '#!/bin/sh\\ntouch {marker}\\n' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit; "
                      "git config core.hooksPath .git/hooks")
    _host_git_everything(side, repo)
    assert not _pwned(side, marker)
    assert "fsmonitor" not in (repo / ".git" / "config").read_text()
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()


def test_a_fake_git_dir_made_in_place_of_dot_git_is_never_read_by_host_git(side):
    """The rename attack: copy HEAD, objects, refs, index into a new .git with a hostile config."""
    repo = side.repo()
    marker = side.base / f"pwned-{repo.name}"
    side.inside(repo, "mkdir -p /tmp/fake && cp -r .git/HEAD .git/refs .git/index /tmp/fake/ 2>/dev/null; "
                      f"printf '{FSMONITOR.format(marker=marker)}' > /tmp/fake/config; "
                      "mv .git .git-orig 2>/dev/null; mv /tmp/fake .git 2>/dev/null; "
                      "echo 'gitdir: /tmp/fake' > .git 2>/dev/null; true")
    _host_git_everything(side, repo)
    assert not _pwned(side, marker)
    assert os.path.isdir(repo / ".git") and not (repo / ".git-orig").exists()


def test_host_git_rewriting_its_config_does_not_open_it_to_the_sandbox(side):
    """git replaces .git/config by rename (remote add, branch -D): a file mount would detach."""
    repo = side.repo()
    marker = side.base / f"pwned-{repo.name}"
    side.sandbox(repo)
    side.git(repo, "remote", "add", "origin", "https://example.invalid/x.git")
    side.git(repo, "branch", "tmp")
    side.git(repo, "branch", "-D", "tmp")
    side.inside(repo, f"printf '{FSMONITOR.format(marker=marker)}' >> .git/config")
    _host_git_everything(side, repo)
    assert not _pwned(side, marker)
    assert "fsmonitor" not in (repo / ".git" / "config").read_text()


def test_a_planted_commondir_never_reaches_the_host_git_dir(side):
    repo = side.repo()
    other = side.repo("other")
    marker = side.base / f"pwned-{repo.name}"
    side.inside(repo, f"mkdir -p .evil && printf '{FSMONITOR.format(marker=marker)}' > .evil/config; "
                      "echo ../.evil > .git/commondir; "
                      f"mkdir -p .git/agentsh-quarantine; ln -s {other}/.git .git/agentsh-quarantine/20260101T000000")
    assert not (repo / ".git" / "commondir").exists()
    assert not (repo / ".git" / "agentsh-quarantine").exists()
    _host_git_everything(side, repo)
    side.git(other, "status")
    assert not _pwned(side, marker)
    assert not (other / ".git" / "commondir").exists()


def test_host_git_never_writes_through_links_planted_in_the_git_dir(side):
    repo = side.repo()
    outside = side.base / f"outside-{repo.name}"
    side.run("sh", "-c", f"echo precious > {outside}", check=True)
    side.inside(repo, f"ln -sf {outside} .git/COMMIT_EDITMSG; mkdir -p .git/logs; ln -sf {outside} .git/logs/HEAD; "
                      f"ln -sf {outside} .git/SQUASH_MSG; ln -sf {outside} .git/ORIG_HEAD")
    _host_git_everything(side, repo)
    side.git(repo, "commit", "-q", "--allow-empty", "-m", "again")
    assert outside.read_text() == "precious\n"
    assert not os.path.islink(repo / ".git" / "COMMIT_EDITMSG")


def test_a_gitfile_in_a_subdirectory_cannot_mount_host_directories(side):
    """A planted sub/.git whose commondir names the user's config dir: ab-exec from sub/ mounts nothing of it."""
    repo = side.repo()
    target = side.base / f"target-{repo.name}"
    side.run("mkdir", "-p", str(target), check=True)
    side.inside(repo, f"mkdir -p sub .wt/x && echo 'gitdir: ../.wt/x' > sub/.git && echo {target} > .wt/x/commondir "
                      f"&& echo {repo}/sub/.git > .wt/x/gitdir")
    name = side.sandbox(repo)
    proc = side.ab("ab-exec", "--", "sh", "-c", f"ls {target} >/dev/null 2>&1 && echo SEEN; pwd", cwd=repo / "sub")
    assert proc.returncode == 0 and b"SEEN" not in proc.stdout and proc.stdout.strip() == str(repo / "sub").encode()
    assert str(target) not in side.mount_sources(name)
    assert os.listdir(target) == []  # nothing made there (hooks/, config, worktrees/)
    assert not any(str(target) in s for r in side.run("podman", "ps", "-aq").stdout.decode().split()
                   for s in side.mount_sources(r))


def test_a_gitfile_pointing_anywhere_but_a_verified_worktree_gets_no_git_mounts(side):
    """First sight of a checkout whose .git names another repo's git dir: that dir is not mounted."""
    victim = side.repo("victim")
    forged = side.base / f"forged-{victim.name}"
    side.run("mkdir", "-p", str(forged), check=True)
    side.made.append(forged)
    side.run("sh", "-c", f"echo 'gitdir: {victim}/.git' > .git", cwd=forged, check=True)
    name = side.sandbox(forged)
    sources = side.mount_sources(name)
    assert not any(s.startswith(str(victim)) for s in sources)


def test_commits_made_inside_land_on_the_host_branch_when_exec_returns(side):
    repo = side.repo()
    side.inside(repo, "echo two >> file && git commit -qam two")
    assert side.git(repo, "log", "-1", "--format=%s").strip() == "two"
    assert side.git(repo, "status", "--porcelain").strip() == ""
    side.run("sh", "-c", "echo host >> file", cwd=repo, check=True)
    side.git(repo, "commit", "-qam", "host")
    side.inside(repo, "git log -1 --format=%s | grep -qx host && echo three >> file && git commit -qam three")
    assert side.git(repo, "log", "--format=%s").split() == ["three", "host", "two", "one"]
    side.inside(repo, "git checkout -qb feature && echo f > f && git add f && git commit -qm feature")
    assert side.git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "feature"
    assert side.git(repo, "status", "--porcelain").strip() == ""
    side.git(repo, "checkout", "-q", "main")
    out = side.inside(repo, "git rev-parse --abbrev-ref HEAD").stdout
    assert out.strip() == b"main"


def test_a_branch_moved_on_both_sides_is_kept_aside_not_forced(side):
    repo = side.repo()
    name = side.sandbox(repo)
    ident = "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e"
    side.run("sh", "-c", f"export {ident}; ab-exec -- sh -c 'export {ident}; sleep 3; "
                         "git commit -q --allow-empty -m inside' & "
                         "sleep 1.5; git commit -q --allow-empty -m outside; wait", cwd=repo, check=True)
    assert side.git(repo, "log", "-1", "--format=%s", "main").strip() == "outside"
    aside = f"refs/agentsh/{name}/heads/main"
    assert side.git(repo, "log", "-1", "--format=%s", aside).strip() == "inside"


def test_an_agent_cannot_forge_a_bundle_ref_outside_branches_and_tags(side):
    repo = side.repo()
    before = side.git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    side.inside(repo, "git update-ref refs/remotes/origin/main HEAD; git update-ref refs/notes/x HEAD; "
                      "git symbolic-ref refs/heads/evil refs/heads/main 2>/dev/null; true")
    assert side.git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/remotes", "refs/notes") == ""
    assert before.strip() in side.git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def test_a_repo_the_agent_makes_in_a_plain_project_is_set_aside(side):
    plain = side.base / f"plain-{os.urandom(4).hex()}"
    side.run("mkdir", "-p", str(plain), check=True)
    side.made.append(plain)
    marker = side.base / f"pwned-{plain.name}"
    proc = side.inside(plain, f"git init -q . && printf '{FSMONITOR.format(marker=marker)}' >> .git/config")
    assert b"a .git appeared" in proc.stderr
    assert not (plain / ".git").exists()
    side.run("sh", "-c", "git status >/dev/null 2>&1; true", cwd=plain)
    assert not _pwned(side, marker)
