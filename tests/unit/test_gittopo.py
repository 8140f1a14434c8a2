"""agentsh.host.gittopo: a checkout's git topology is read only in ways the tree cannot steer."""

import os

import pytest

from agentsh.host import gittopo
from tests.conftest import commit, git, git_init


@pytest.fixture
def main(tmp_path):
    repo = git_init(tmp_path / "main")
    commit(repo, "README")
    return repo


@pytest.fixture
def linked(main, tmp_path):
    wt = tmp_path / "wt"
    git(main, "worktree", "add", "-q", "-b", "side", str(wt))
    return wt


def test_a_plain_repository_is_main(main):
    topo = gittopo.detect(str(main))
    assert (topo.kind, topo.common, topo.own, topo.own_rel) == (gittopo.MAIN, f"{main}/.git", f"{main}/.git", "")
    assert topo.main_root == str(main)


def test_a_linked_worktree_whose_git_dir_names_it_back(main, linked):
    topo = gittopo.detect(str(linked))
    assert topo.kind == gittopo.LINKED
    assert topo.common == f"{main}/.git" and topo.own == f"{main}/.git/worktrees/wt"
    assert topo.own_rel == "worktrees/wt" and topo.main_root == str(main)


def test_no_git_at_all(tmp_path):
    topo = gittopo.detect(str(tmp_path))
    assert topo.kind == gittopo.NONE and topo.reason == "no .git"


def test_a_symlinked_git_dir_is_not_followed(main, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / ".git").symlink_to(main / ".git")
    topo = gittopo.detect(str(other))
    assert topo.kind == gittopo.NONE and "symlink" in topo.reason


def test_a_git_dir_with_commondir_is_refused(main):
    (main / ".git" / "commondir").write_text("/somewhere/else\n")
    topo = gittopo.detect(str(main))
    assert topo.kind == gittopo.NONE and "commondir" in topo.reason


def test_a_git_dir_without_head_is_refused(tmp_path):
    (tmp_path / "r" / ".git").mkdir(parents=True)
    assert gittopo.detect(str(tmp_path / "r")).reason.endswith("has no HEAD")


def test_a_forged_gitfile_pointing_at_another_repositorys_worktree_is_refused(main, linked, tmp_path):
    """The agent writes `gitdir:` naming a real worktree entry; its back-pointer names someone else."""
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / ".git").write_text(f"gitdir: {main}/.git/worktrees/wt\n")
    topo = gittopo.detect(str(forged))
    assert topo.kind == gittopo.NONE and "does not name" in topo.reason and str(forged) in topo.reason
    assert gittopo.detect(str(linked)).kind == gittopo.LINKED  # the real one still is


@pytest.mark.parametrize("target", ["../main/.git", "/etc", "{main}/.git/modules/x"])
def test_a_gitfile_not_naming_a_worktrees_entry_is_refused(main, tmp_path, target):
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / ".git").write_text(f"gitdir: {target.format(main=main)}\n")
    topo = gittopo.detect(str(forged))
    assert topo.kind == gittopo.NONE and "does not name a .git/worktrees/NAME directory" in topo.reason


def test_a_gitfile_that_is_not_one_is_refused(tmp_path):
    (tmp_path / ".git").write_text("not a gitfile\n")
    assert gittopo.detect(str(tmp_path)).reason.endswith("is not a gitfile")


def test_a_worktree_entry_reached_through_a_symlink_is_refused(main, linked, tmp_path):
    via = tmp_path / "via"
    via.symlink_to(main)
    (linked / ".git").write_text(f"gitdir: {via}/.git/worktrees/wt\n")
    topo = gittopo.detect(str(linked))
    assert topo.kind == gittopo.NONE and "through a symlink" in topo.reason


def test_a_worktree_whose_common_dir_has_a_commondir_is_refused(main, linked):
    (main / ".git" / "commondir").write_text(".\n")
    topo = gittopo.detect(str(linked))
    assert topo.kind == gittopo.NONE and "has a commondir" in topo.reason


def test_a_worktree_entry_whose_commondir_names_elsewhere_is_refused(main, linked, tmp_path):
    (main / ".git" / "worktrees" / "wt" / "commondir").write_text(f"{tmp_path}/elsewhere/.git\n")
    topo = gittopo.detect(str(linked))
    assert topo.kind == gittopo.NONE and "commondir is not" in topo.reason


def test_check_refuses_a_topology_that_changed_on_disk(main):
    recorded = gittopo.detect(str(main))
    assert gittopo.check(recorded, str(main)) is recorded
    (main / ".git" / "commondir").write_text("x\n")
    with pytest.raises(gittopo.AgentshError, match="no longer matches"):
        gittopo.check(recorded, str(main))


@pytest.mark.parametrize("record", [None, [], {"kind": "evil", "root": "/r"}, {"kind": "main", "root": "/other"}])
def test_from_dict_refuses_a_record_for_another_root_or_kind(record):
    assert gittopo.from_dict(record, "/r") is None


@pytest.mark.parametrize("name, ok", [
    ("main", True), ("feature/x", True), ("a.b", True),
    ("", False), ("-x", False), ("HEAD", False), ("@", False), ("a b", False), ("a~1", False),
    ("a..b", False), ("a@{1}", False), ("a.", False), ("a/", False), ("a//b", False), ("/a", False),
    (".hidden", False), ("a/.b", False), ("x.lock", False), ("a/b.lock/c", False), ("a\x7f", False),
    ("a:b", False), ("a*", False), ("a[", False), ("a\\b", False), ("a?", False), ("a^", False),
])
def test_ref_problem_follows_check_ref_format(name, ok):
    assert (gittopo.ref_problem(name) is None) == ok


def test_modules_finds_nested_submodule_git_dirs_and_skips_links(main, tmp_path):
    modules = main / ".git" / "modules"
    for rel in ("lib", "lib/modules/inner", "group/name"):
        git_init(tmp_path / "src" / rel)
        d = modules / rel
        d.mkdir(parents=True)
        (d / "HEAD").write_text("ref: refs/heads/main\n")
        (d / "objects").mkdir()
    (modules / "linked").symlink_to(modules / "lib")
    assert gittopo.modules(str(main / ".git")) == ["modules/group/name", "modules/lib", "modules/lib/modules/inner"]


def test_read_small_reads_only_a_regular_file(tmp_path):
    (tmp_path / "f").write_text("text")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    os.mkfifo(tmp_path / "fifo")
    assert gittopo.read_small(str(tmp_path / "f")) == "text"
    assert gittopo.read_small(str(tmp_path / "link")) is None
    assert gittopo.read_small(str(tmp_path / "fifo")) is None  # and does not block
    assert gittopo.read_small(str(tmp_path)) is None


def test_set_aside_moves_a_planted_git_dir_and_says_where(main):
    notices = []
    gittopo.set_aside(str(main), notices.append)
    assert not os.path.lexists(main / ".git")
    (moved,) = [p for p in os.listdir(main) if p.startswith(".agentsh-untrusted-git-")]
    assert os.path.isfile(main / moved / "HEAD") and f"{main}/{moved}" in notices[0]


def test_set_aside_moves_a_symlink_itself_not_its_target(main, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / ".git").symlink_to(main / ".git")
    gittopo.set_aside(str(other), [].append)
    (moved,) = os.listdir(other)
    assert os.path.islink(other / moved) and os.path.isdir(main / ".git")


def test_set_aside_warns_when_there_is_nothing_to_move(tmp_path):
    notices = []
    gittopo.set_aside(str(tmp_path), notices.append)
    assert len(notices) == 1 and "could not be moved aside" in notices[0]


def test_known_roots_keeps_only_absolute_paths_and_tolerates_no_file(tmp_path):
    path = tmp_path / "roots"
    assert gittopo.known_roots(str(path)) == []
    path.write_bytes(b"/a/b\0relative\0\0/c d\0")
    assert gittopo.known_roots(str(path)) == ["/a/b", "/c d"]


def test_remember_root_appends_once(tmp_path):
    class Store:
        def path(self, rel):
            return str(tmp_path / "state" / rel)

    store = Store()
    gittopo.remember_root(store, "/p/one")
    gittopo.remember_root(store, "/p/one")
    gittopo.remember_root(store, "/p/two")
    path = store.path(gittopo.ROOTS)
    assert gittopo.known_roots(path) == ["/p/one", "/p/two"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_git_env_drops_what_each_caller_names_and_sets_the_rest(monkeypatch):
    for name in ("GIT_DIR", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_COUNT", "GIT_NAMESPACE", "GIT_AUTHOR_NAME"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("KEEP_ME", "1")
    wt = gittopo.git_env(LC_ALL="C")  # ab-wt: only the location names go
    assert "GIT_DIR" not in wt and wt["GIT_CONFIG_GLOBAL"] == "x" and wt["GIT_NAMESPACE"] == "x"
    assert wt["LC_ALL"] == "C" and wt["KEEP_ME"] == "1"
    bridge = gittopo.git_env(("GIT_DIR", "GIT_NAMESPACE"), "GIT_CONFIG_")  # agentsh's git: no config either
    assert not {"GIT_DIR", "GIT_NAMESPACE", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_COUNT"} & set(bridge)
    assert bridge["GIT_AUTHOR_NAME"] == "x"
    ident = gittopo.git_env((), "GIT_", keep=("GIT_CONFIG_GLOBAL",))  # identity: only the global config's name
    assert [k for k in ident if k.startswith("GIT_")] == ["GIT_CONFIG_GLOBAL"] and ident["KEEP_ME"] == "1"
