"""agentsh.sandbox.gitbridge on the host side: the export list, ref names, the compare-and-swap
that moves a host branch, and collect refusing links a sandbox planted in its export."""

import os

import pytest

from agentsh.base.state import Store
from agentsh.host import gittopo
from agentsh.sandbox import gitbridge
from tests.conftest import commit, git, git_init

A, B, Z = "a" * 40, "b" * 40, "0" * 40
SANDBOX = "ab-repo-0123abcd"


# -- parse_manifest and _ref_ok ---------------------------------------------------------


def test_a_manifest_with_refs_and_head():
    m = gitbridge.parse_manifest(
        f"gitdir \nref {A} {B} refs/heads/main\nref {A} {Z} refs/tags/v1\nhead refs/heads/x refs/heads/main\n".encode())
    assert m.rel == "" and m.refs == [("refs/heads/main", A, B), ("refs/tags/v1", A, None)]
    assert m.head == ("refs/heads/x", "refs/heads/main")


def test_a_manifest_for_a_submodule_and_a_detached_head():
    m = gitbridge.parse_manifest(f"gitdir modules/lib\nhead {A}\n".encode())
    assert m.rel == "modules/lib" and m.refs == [] and m.head == (A, None)


def test_a_sha256_object_name_is_accepted():
    assert gitbridge.parse_manifest(f"gitdir \nref {'c' * 64} {Z} refs/heads/m\n".encode()).refs[0][1] == "c" * 64


@pytest.mark.parametrize("text", [
    "",
    f"ref {A} {B} refs/heads/main\n",  # no gitdir line first
    f"gitdir \nref {A} {B} refs/remotes/origin/main\n",  # only branches and tags
    f"gitdir \nref {A} {B} refs/heads/../../config\n",
    f"gitdir \nref {A} {B} refs/heads/a b\n",
    f"gitdir \nref {A} {B} refs/heads/x.lock\n",
    f"gitdir \nref {A} {B} HEAD\n",
    f"gitdir \nref {A[:39]} {B} refs/heads/main\n",  # not an object name
    f"gitdir \nref {A.upper()} {B} refs/heads/main\n",
    f"gitdir \nref {A} {B} refs/heads/main extra\n",
    f"gitdir \nhead {A}\nhead {B}\n",  # one head line at most
    "gitdir \nhead refs/tags/v1\n",  # HEAD names a branch or a commit
    "gitdir \nhook /bin/sh\n",
    f"gitdir \nref {A} {B} refs/heads/{'x' * 1020}\n",
])
def test_anything_odd_in_a_manifest_is_refused(text):
    with pytest.raises(ValueError):
        gitbridge.parse_manifest(text.encode())


def test_a_manifest_that_is_not_utf8_is_refused():
    with pytest.raises(UnicodeDecodeError):
        gitbridge.parse_manifest(b"gitdir \xff\n")


@pytest.mark.parametrize("name, heads_only, ok", [
    ("refs/heads/main", False, True), ("refs/tags/v1.0", False, True), ("refs/heads/a/b", True, True),
    ("refs/tags/v1", True, False), ("refs/notes/x", False, False), ("refs/heads/", False, False),
    ("refs/heads/-x", False, False), ("refs/heads/a..b", False, False), ("refs/heads/.x", False, False),
    ("heads/main", False, False), ("refs/heads/" + "x" * 1014, False, False),
])
def test_ref_ok(name, heads_only, ok):
    assert gitbridge._ref_ok(name, heads_only=heads_only) is ok


# -- _move: compare-and-swap, fast-forward, or aside -----------------------------------


@pytest.fixture
def host(tmp_path):
    repo = git_init(tmp_path / "host")
    git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
    commit(repo, "one", "1\n", "one")
    return repo


def rev(repo, ref="HEAD"):
    return git(repo, "rev-parse", ref).strip()


def side_commit(repo, name):
    """A commit on top of main, not on any branch (what a sandbox's bundle brings in)."""
    tree = rev(repo, "HEAD^{tree}")
    return git(repo, "commit-tree", "-p", "main", "-m", name, tree).strip()


def move(host, ref, new, base):
    notices = []
    gitbridge._move(gitbridge._Git(str(host / ".git")), SANDBOX, ref, new, base, notices.append)
    return notices


def test_move_when_the_host_branch_is_still_at_the_base(host):
    base, new = rev(host), side_commit(host, "inside")
    assert move(host, "refs/heads/main", new, base) == []
    assert rev(host, "main") == new
    assert "agentsh: from sandbox" in git(host, "reflog", "-1", "--format=%gs", "main")


def test_move_a_new_branch_and_tag(host):
    new = side_commit(host, "inside")
    assert move(host, "refs/heads/fresh", new, None) == [] and rev(host, "fresh") == new
    assert move(host, "refs/tags/v1", new, None) == [] and rev(host, "v1") == new


def test_move_fast_forwards_a_branch_the_host_moved_when_the_new_commit_contains_it(host):
    base = rev(host)
    commit(host, "two", "2\n", "host moved")
    new = side_commit(host, "on top of the host")
    assert move(host, "refs/heads/main", new, base) == [] and rev(host, "main") == new


def test_move_sets_aside_when_both_moved(host):
    base = rev(host)
    new = side_commit(host, "inside")
    commit(host, "two", "2\n", "host moved")
    theirs = rev(host)
    notices = move(host, "refs/heads/main", new, base)
    aside = f"refs/agentsh/{SANDBOX}/heads/main"
    assert rev(host, "main") == theirs and rev(host, aside) == new
    assert len(notices) == 1 and aside in notices[0] and new[:12] in notices[0]
    assert move(host, "refs/heads/main", new, base) == []  # already aside: said once


def test_a_moved_tag_is_never_fast_forwarded(host):
    old = rev(host)
    git(host, "tag", "v1")
    new = side_commit(host, "inside")
    commit(host, "two", "2\n", "x")
    git(host, "tag", "-f", "v1", rev(host))
    notices = move(host, "refs/tags/v1", new, old)
    assert rev(host, "v1") != new and rev(host, f"refs/agentsh/{SANDBOX}/tags/v1") == new and notices


def test_move_a_branch_the_host_created_meanwhile_is_set_aside(host):
    new = side_commit(host, "inside")
    commit(host, "two", "2\n", "x")
    git(host, "branch", "late")
    move(host, "refs/heads/late", new, None)
    assert rev(host, "late") != new and rev(host, f"refs/agentsh/{SANDBOX}/heads/late") == new


def test_the_compare_and_swap_loses_to_a_host_move_after_the_check(host, monkeypatch):
    """The host moves the branch between _move's read and its update-ref: the update fails, aside instead."""
    base, new = rev(host), side_commit(host, "inside")
    git_ = gitbridge._Git(str(host / ".git"))
    real_value = git_.value
    calls = []

    def value(ref):
        calls.append(ref)
        current = real_value(ref)
        if len(calls) == 1:  # right after the first read, the user commits on the host
            commit(host, "two", "2\n", "host moved meanwhile")
        return current

    monkeypatch.setattr(git_, "value", value)
    notices = []
    gitbridge._move(git_, SANDBOX, "refs/heads/main", new, base, notices.append)
    assert rev(host, "main") not in (base, new)
    assert rev(host, f"refs/agentsh/{SANDBOX}/heads/main") == new and notices


# -- collect: the export, opened without following links -------------------------------


@pytest.fixture
def exported(host):
    """A private git dir with an export the host must not take through a link."""
    topo = gittopo.detect(str(host))
    private = gitbridge.private_dir(SANDBOX)
    os.makedirs(private)
    return topo, private


def collect(topo, token):
    notices = []
    gitbridge.collect(topo, SANDBOX, token, Store(), notices.append)
    return notices


def test_collect_refuses_a_symlinked_export_dir(exported, tmp_path, host):
    topo, private = exported
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "t-0.refs").write_text(f"gitdir \nref {side_commit(host, 'x')} {rev(host)} refs/heads/main\n")
    os.symlink(elsewhere, os.path.join(private, gitbridge.EXPORT))
    before = rev(host, "main")
    assert collect(topo, "t") == []
    assert rev(host, "main") == before and (elsewhere / "t-0.refs").exists()  # not read, not removed


def test_collect_refuses_a_symlinked_bundle_and_takes_nothing(exported, tmp_path, host):
    topo, private = exported
    export = os.path.join(private, gitbridge.EXPORT)
    os.mkdir(export)
    bundle = tmp_path / "real.bundle"
    git(host, "bundle", "create", str(bundle), "main")
    with open(os.path.join(export, "t-0.refs"), "w") as f:
        f.write(f"gitdir \nref {'c' * 40} {rev(host)} refs/heads/main\n")
    os.symlink(bundle, os.path.join(export, "t-0.bundle"))
    before = rev(host, "main")
    notices = collect(topo, "t")
    assert rev(host, "main") == before
    assert len(notices) == 1 and "bundle was refused" in notices[0]
    assert os.listdir(export) == [] and bundle.exists()  # the link itself is removed, not its target


def test_collect_refuses_a_symlinked_manifest(exported, tmp_path, host):
    topo, private = exported
    export = os.path.join(private, gitbridge.EXPORT)
    os.mkdir(export)
    target = tmp_path / "list"
    target.write_text(f"gitdir \nref {side_commit(host, 'x')} {rev(host)} refs/heads/main\n")
    os.symlink(target, os.path.join(export, "t-0.refs"))
    before = rev(host, "main")
    notices = collect(topo, "t")
    assert rev(host, "main") == before and "nothing was taken" in notices[0]


def test_collect_ignores_an_unknown_submodule(exported, host):
    topo, private = exported
    export = os.path.join(private, gitbridge.EXPORT)
    os.mkdir(export)
    with open(os.path.join(export, "t-0.refs"), "w") as f:
        f.write(f"gitdir modules/../../x\nref {A} {Z} refs/heads/main\n")
    notices = collect(topo, "t")
    assert "unknown submodule" in notices[0] and os.listdir(export) == []


def test_collect_without_a_private_dir_or_for_no_git_does_nothing(host, tmp_path):
    assert collect(gittopo.detect(str(host)), "t") == []
    assert collect(gittopo.detect(str(tmp_path)), "t") == []
