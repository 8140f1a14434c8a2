"""ab-wt's core against real git repositories (the engine is faked)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from agentsh.app import worktree
from agentsh.base.errors import AgentshError, UsageError
from agentsh.base.state import Store
from agentsh.host import project
from agentsh.policy import config, trust
from agentsh.sandbox import lifecycle as sandbox
from tests.conftest import ab, commit, git, git_init
from tests.unit.fake_engine import fake_engine

pytestmark = pytest.mark.committed  # the `repo` fixture (tests/conftest.py) starts with a commit


def branches(repo):
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split())


def worktree_paths(repo):
    return [line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def assert_nothing_made(repo, name, store):
    repo_obj = worktree.find_repo(str(repo))
    assert not os.path.lexists(repo_obj.path(name))
    assert store.read(repo_obj.record_rel(name)) is None
    assert worktree_paths(repo) == [str(repo)]


# -- names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/../b", "..", "-x", "--force", "a b", "a;b", "$(id)", "`id`", "a|b", "a>b",
                                  "a&b", "x'y", 'x"y', "a\nb", "a/.b", ".hidden", "x.lock", "a//b", "/abs", "a/",
                                  "HEAD", "", "a@{1}", "a~1", "a:b", "a*", "dir\\x", "é", "a" * 101])
def test_bad_names_are_refused_before_anything_happens(name, repo):
    store = Store()
    with pytest.raises(UsageError) as e:
        worktree.create(name, str(repo), store=store)
    assert "\n" not in str(e.value).replace(repr(name), "")
    assert worktree_paths(repo) == [str(repo)]
    assert branches(repo) == {git(repo, "branch", "--show-current").strip()}


@pytest.mark.parametrize("name", ["fix-login", "feat/search", "v1.2_rc", "JIRA-123/try.2"])
def test_good_names(name):
    assert worktree.name_problem(name) is None


# -- new ------------------------------------------------------------------------


def test_new_layout_branch_and_record(repo, isolated_dirs):
    store = Store()
    record = worktree.create("fix-1", str(repo), store=store)
    main = project.Project(str(repo))
    repo_id = f"{main.slug}-{main.key}"
    want = os.path.join(str(isolated_dirs["XDG_DATA_HOME"]), "agentsh", "worktrees", repo_id, "fix-1")
    assert record["path"] == want and os.path.isfile(os.path.join(want, "README"))
    assert store.read(f"worktrees/{repo_id}/fix-1.json")["path"] == want
    assert "fix-1" in branches(repo) and want in worktree_paths(repo)
    assert git(want, "branch", "--show-current").strip() == "fix-1"
    assert worktree.names(store, repo_id) == ["fix-1"]


def test_the_repo_is_the_same_from_a_subdir_and_from_inside_a_worktree(repo):
    (repo / "sub").mkdir()
    a = worktree.create("a", str(repo / "sub"))
    b = worktree.create("feat/b", a["path"])
    assert a["repo"] == b["repo"] == str(repo)
    assert os.path.dirname(os.path.dirname(b["path"])) == os.path.dirname(a["path"])
    assert worktree.path_of("feat/b", str(repo)) == b["path"]


def test_from_ref_and_branch_options(repo):
    first = git(repo, "rev-parse", "HEAD").strip()
    commit(repo, "second")
    record = worktree.create("old", str(repo), ref=first, branch="topic/old")
    assert record["branch"] == "topic/old"
    assert git(record["path"], "rev-parse", "HEAD").strip() == first


def test_an_existing_branch_is_checked_out_not_remade(repo):
    git(repo, "branch", "existing")
    record = worktree.create("e", str(repo), branch="existing")
    assert record["created_branch"] is False
    assert git(record["path"], "branch", "--show-current").strip() == "existing"


def test_from_with_an_existing_branch_is_refused_cleanly(repo):
    git(repo, "branch", "existing")
    with pytest.raises(AgentshError, match="already exists, so --from HEAD cannot apply"):
        worktree.create("existing", str(repo), ref="HEAD")
    assert_nothing_made(repo, "existing", Store())


def test_unresolvable_ref_leaves_no_branch_dir_or_record(repo):
    before = branches(repo)
    with pytest.raises(AgentshError) as e:
        worktree.create("x", str(repo), ref="no-such-ref")
    assert str(e.value).startswith("no-such-ref does not resolve to a commit")
    assert branches(repo) == before
    assert_nothing_made(repo, "x", Store())


def test_empty_repo_says_commit_first(tmp_path):
    empty = git_init(tmp_path / "empty")
    with pytest.raises(AgentshError, match="HEAD does not resolve.*commit something first"):
        worktree.create("x", str(empty))
    assert branches(empty) == set()


def test_existing_name_and_nesting_are_refused(repo):
    worktree.create("a", str(repo))
    with pytest.raises(AgentshError, match="worktree 'a' already exists"):
        worktree.create("a", str(repo), branch="other")
    with pytest.raises(AgentshError, match="would nest with worktree 'a'"):
        worktree.create("a/b", str(repo))
    assert branches(repo) == {"a", git(repo, "branch", "--show-current").strip()}


def test_a_branch_checked_out_elsewhere_is_refused_cleanly(repo):
    current = git(repo, "branch", "--show-current").strip()
    with pytest.raises(AgentshError, match=f"branch '{current}' is already checked out"):
        worktree.create("dup", str(repo), branch=current)
    assert_nothing_made(repo, "dup", Store())


def test_not_a_repo_and_missing_dir(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(AgentshError, match="is not in a git repository"):
        worktree.create("x", str(tmp_path / "plain"))
    with pytest.raises(AgentshError, match="does not exist"):
        worktree.find_repo(str(tmp_path / "nope"))


def test_a_failed_record_write_undoes_the_worktree_and_branch(repo, monkeypatch):
    store = Store()

    def broken(rel, record):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write", broken)
    with pytest.raises(OSError):
        worktree.create("x", str(repo), store=store)
    assert "x" not in branches(repo)
    assert_nothing_made(repo, "x", store)


def test_concurrent_new_of_different_names_all_succeed(repo):
    procs = [subprocess.Popen(["ab-wt", "new", f"c{i}"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(6)]
    results = [(p.wait(timeout=120), p.stdout.read().decode(), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert all(status == 0 for status, _, _ in results), results
    paths = {out.strip() for _, out, _ in results}
    assert len(paths) == 6 and all(os.path.isdir(p) for p in paths)
    assert {f"c{i}" for i in range(6)} <= branches(repo)
    assert sorted(r["name"] for r in worktree.listing(str(repo), engine=fake_engine()[0])) == \
        [f"c{i}" for i in range(6)]


# -- ls, path -----------------------------------------------------------------


def test_listing_shows_branch_head_dirty_and_sandbox_state(repo):
    engine, runner = fake_engine()
    a = worktree.create("a", str(repo))
    b = worktree.create("b", str(repo))
    Path(b["path"], "new-file").touch()
    rows = {r["name"]: r for r in worktree.listing(str(repo), engine=engine)}
    assert rows["a"]["dirty"] is False and rows["b"]["dirty"] is True
    assert rows["a"]["head"] == git(repo, "rev-parse", "HEAD").strip()
    assert rows["a"]["branch"] == "a" and rows["a"]["exists"] is True
    assert rows["a"]["sandbox"] == project.Project(a["path"]).sandbox
    assert rows["a"]["sandbox_state"] == "none"
    assert set(rows["a"]) == {"name", "path", "branch", "head", "dirty", "exists", "sandbox", "sandbox_state", "repo"}


def test_a_directory_deleted_by_hand_is_one_clear_line(repo):
    import shutil

    record = worktree.create("gone", str(repo))
    shutil.rmtree(record["path"])
    with pytest.raises(AgentshError) as e:
        worktree.path_of("gone", str(repo))
    assert "its directory" in str(e.value) and "is gone" in str(e.value) and "ab-wt prune" in str(e.value)
    row = worktree.listing(str(repo), engine=fake_engine()[0])[0]
    assert row["exists"] is False and row["dirty"] is None
    with pytest.raises(AgentshError, match="its directory is gone"):
        worktree.create("gone", str(repo))


# -- rm, prune ------------------------------------------------------------------


def removed_by_engine(runner):
    return [c for c in runner.calls if c[0] == "rm" or c[:2] == ["volume", "rm"]]


def test_rm_refuses_dirty_and_unmerged_without_force(repo):
    engine, runner = fake_engine()
    record = worktree.create("w", str(repo))
    Path(record["path"], "scratch").touch()
    with pytest.raises(AgentshError, match="uncommitted or untracked changes.*--force"):
        worktree.remove("w", str(repo), engine=engine)
    os.unlink(os.path.join(record["path"], "scratch"))
    worktree_dir = Path(record["path"])
    commit(worktree_dir, "work")
    with pytest.raises(AgentshError, match="1 commit not merged into the main checkout's HEAD.*--force"):
        worktree.remove("w", str(repo), engine=engine)
    assert os.path.isdir(worktree_dir) and removed_by_engine(runner) == []
    done = worktree.remove("w", str(repo), force=True, delete_branch=True, engine=engine)
    assert done["branch_deleted"] and "w" not in branches(repo)
    assert not os.path.exists(record["path"]) and worktree_paths(repo) == [str(repo)]
    name = project.Project(record["path"]).sandbox
    assert ["rm", "-f", name] in runner.calls and ["volume", "rm", "-f", f"{name}-home"] in runner.calls
    with pytest.raises(AgentshError, match="no worktree 'w'"):
        worktree.path_of("w", str(repo))


def test_rm_of_a_merged_clean_worktree_keeps_the_branch_unless_asked(repo):
    engine, _ = fake_engine()
    worktree.create("m", str(repo))
    done = worktree.remove("m", str(repo), engine=engine)
    assert done["branch_deleted"] is False and "m" in branches(repo)
    assert worktree.names(Store(), worktree.find_repo(str(repo)).id) == []


def test_prune_forgets_worktrees_whose_directories_are_gone(repo):
    import shutil

    engine, runner = fake_engine()
    keep = worktree.create("keep", str(repo))
    gone = worktree.create("feat/gone", str(repo))
    shutil.rmtree(gone["path"])
    pruned = worktree.prune(str(repo), engine=engine)
    assert [r["name"] for r in pruned] == ["feat/gone"]
    assert worktree_paths(repo) == [str(repo), keep["path"]]
    name = project.Project(gone["path"]).sandbox
    assert ["rm", "-f", name] in runner.calls
    assert [r["name"] for r in worktree.listing(str(repo), engine=engine)] == ["keep"]
    assert worktree.prune(str(repo), engine=engine) == []
    assert "feat/gone" in branches(repo)  # the branch (and its commits) stay


# -- git layout, sandbox spec, trust ----------------------------------------------


def test_git_dirs_of_a_linked_worktree(repo):
    record = worktree.create("w", str(repo))
    own, common = project.git_dirs(record["path"])
    assert common == str(repo / ".git") and own.startswith(str(repo / ".git" / "worktrees") + "/")
    wt = project.Project(record["path"])
    assert wt.git_dir() is None and wt.linked_common_dir() == str(repo / ".git")
    assert project.Project(str(repo)).linked_common_dir() is None


def test_sandbox_mounts_the_main_git_dir_read_only_and_nothing_else_of_the_main_checkout(repo):
    from agentsh.sandbox import gitbridge

    record = worktree.create("w", str(repo))
    engine, _ = fake_engine()
    wt = project.find(record["path"])
    args = sandbox.spec(wt, config.load(), engine).run_args
    volumes = [args[i + 1] for i, a in enumerate(args) if a == "-v"]
    git_dir = str(repo / ".git")
    assert f"{git_dir}:{gitbridge.HOST_GIT}:ro" in volumes
    assert f"{gitbridge.private_dir(wt.sandbox)}:{git_dir}" in volumes
    gitfile = f"{record['path']}/.git"
    assert f"{gitfile}:{gitfile}:ro" in volumes  # a mount point: it cannot be re-pointed from inside
    assert f"{record['path']}:{record['path']}" in volumes
    assert not any(v.split(":")[0] == str(repo) for v in volumes)


def test_a_worktree_inherits_trust_while_its_project_file_is_identical(repo):
    (repo / ".agentsh.toml").write_text("pids = 77\n")
    git(repo, "add", ".agentsh.toml")
    git(repo, "commit", "-qm", "project file")
    store = Store()
    trust.allow(store, str(repo / ".agentsh.toml"))
    record = worktree.create("t", str(repo))
    cfg = config.load(project.find(record["path"]), store)
    assert cfg.project_trust == trust.ALLOWED and cfg["pids"] == 77
    with open(os.path.join(record["path"], ".agentsh.toml"), "a") as f:
        f.write("memory = \"1g\"\n")
    cfg = config.load(project.find(record["path"]), store)
    assert cfg.project_trust == trust.BLOCKED and cfg["pids"] == 4096


def test_a_stray_gitfile_does_not_borrow_trust(repo, tmp_path):
    (repo / ".agentsh.toml").write_text("pids = 77\n")
    store = Store()
    trust.allow(store, str(repo / ".agentsh.toml"))
    record = worktree.create("t", str(repo))
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / ".git").write_text(open(os.path.join(record["path"], ".git")).read())
    (fake / ".agentsh.toml").write_text("pids = 77\n")
    assert worktree.main_checkout_path(str(fake / ".agentsh.toml")) is None
    assert config.load(project.find(str(fake)), store).project_trust == trust.BLOCKED


# -- CLI ------------------------------------------------------------------------


def test_cli_new_prints_only_the_path_and_errors_are_one_line(repo):
    proc = ab("ab-wt", "new", "cli", cwd=repo, check=True)
    path = proc.stdout.decode().strip()
    assert proc.stdout.decode() == path + "\n" and os.path.isdir(path)
    assert ab("ab-wt", "path", "cli", cwd=repo, check=True).stdout.decode().strip() == path
    listed = json.loads(ab("ab-wt", "ls", "--json", str(repo), check=True).stdout)
    assert [r["name"] for r in listed] == ["cli"]
    again = ab("ab-wt", "new", "cli", cwd=repo)
    assert again.returncode == 125 and again.stdout == b""
    assert again.stderr.decode().count("\n") == 1 and "already exists" in again.stderr.decode()
    bad = ab("ab-wt", "new", "--", "-x", cwd=repo)
    assert bad.returncode == 2 and bad.stderr.decode().count("\n") == 1
    assert ab("ab-wt", "frob").returncode == 2
    assert ab("ab-wt", "--help").returncode == 0


def test_wt_flag_on_exec_and_up_names_a_missing_worktree_in_one_line(repo):
    for argv in (["ab-exec", "--wt", "nope", "--", "true"], ["ab-up", "--wt", "nope"]):
        proc = ab(*argv, cwd=repo)
        assert proc.returncode == 125
        assert proc.stderr.decode().count("\n") == 1 and "no worktree 'nope'" in proc.stderr.decode()
