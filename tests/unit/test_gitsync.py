"""agentsh/data/sandbox/gitsync run by /bin/sh against temporary repositories, and its export
taken by the host (gitbridge.collect): pull and push when the host moved, the sandbox moved, or both.

The private git dir is made by gitbridge._init as ab-up makes it, except that
it names the host's git dir at its real path instead of the in-sandbox
mount (/run/agentsh/host-git), which does not exist here.
"""

import os
import subprocess
from pathlib import Path

import pytest

from agentsh.base.state import Store
from agentsh.host import gittopo
from agentsh.sandbox import gitbridge
from tests.conftest import GIT_ID, commit, git, git_init

GITSYNC = Path(gitbridge.__file__).resolve().parent.parent / "data" / "sandbox" / "gitsync"
SANDBOX = "ab-repo-0123abcd"


class Sandbox:
    """The host checkout `host`, and the sandbox's private git dir over the same working tree."""

    def __init__(self, host):
        self.host = host
        self.topo = gittopo.detect(str(host))
        self.private = Path(gitbridge.private_dir(SANDBOX))
        self.private.parent.mkdir(parents=True)
        gitbridge._init(str(self.private), self.topo.common, self.topo.common, "")
        self.notices = []
        self.tokens = 0

    def sh(self, function, *args):
        script = f'. "{GITSYNC}"; {function} "$@"'
        proc = subprocess.run(["/bin/sh", "-c", script, "gitsync", *args], capture_output=True, text=True,
                              env={**os.environ, **GIT_ID})
        assert proc.returncode == 0, proc.stderr
        return proc

    def pull(self):
        self.sh("ab_pull", self.topo.common, str(self.private), "")

    def push(self):
        """Export what moved inside; returns the token it was written under."""
        self.tokens += 1
        token = f"tok{self.tokens}"
        self.sh("ab_push", self.topo.common, str(self.private), "", token, "0", "")
        return token

    def git(self, *args):
        return subprocess.run(["git", f"--git-dir={self.private}", f"--work-tree={self.host}", *args],
                              capture_output=True, text=True, check=True, env={**os.environ, **GIT_ID}).stdout

    def commit(self, name, message):
        (self.host / name).write_text(message + "\n")
        self.git("add", name)
        self.git("commit", "-qm", message)
        return self.git("rev-parse", "HEAD").strip()

    def ref(self, name="refs/heads/main"):
        return self.git("rev-parse", "-q", "--verify", name).strip()

    def collect(self, token):
        gitbridge.collect(self.topo, SANDBOX, token, Store(), self.notices.append)

    def export(self):
        d = self.private / gitbridge.EXPORT
        return sorted(os.listdir(d)) if d.is_dir() else []


def host_ref(host, ref="refs/heads/main"):
    return git(host, "rev-parse", "-q", "--verify", ref).strip()


@pytest.fixture
def box(tmp_path):
    host = git_init(tmp_path / "host")
    git(host, "symbolic-ref", "HEAD", "refs/heads/main")
    commit(host, "README", "one\n", "one")
    s = Sandbox(host)
    s.pull()  # what `run` does before the first command
    return s


def test_the_first_pull_takes_the_hosts_branches_and_head(box):
    assert box.ref() == host_ref(box.host)
    assert (box.private / "HEAD").read_text() == "ref: refs/heads/main\n"
    base = (box.private / "agentsh-base").read_text()
    assert f"{host_ref(box.host)} refs/heads/main\n" in base and base.endswith("HEAD ref: refs/heads/main\n")


def test_nothing_moved_exports_nothing(box):
    box.push()
    assert box.export() == []


def test_the_host_moved_the_sandbox_takes_it_and_exports_nothing(box):
    commit(box.host, "host.txt", "h\n", "on the host")
    git(box.host, "branch", "feature")
    box.pull()
    assert box.ref() == host_ref(box.host) and box.ref("refs/heads/feature") == host_ref(box.host)
    assert box.git("status", "--porcelain") == ""  # the index moved with HEAD
    box.push()
    assert box.export() == []


def test_a_branch_deleted_on_the_host_goes_unless_the_sandbox_moved_it(box):
    git(box.host, "branch", "gone")
    git(box.host, "branch", "kept")
    box.pull()
    box.git("update-ref", "refs/heads/kept", box.commit("s.txt", "on kept"))
    box.git("reset", "-q", "--hard", host_ref(box.host))
    box.push()
    git(box.host, "branch", "-D", "gone")
    box.pull()
    assert box.git("for-each-ref", "--format=%(refname)", "refs/heads/gone") == ""
    assert box.ref("refs/heads/kept") != ""


def test_the_export_manifest_format(box):
    base = box.ref()
    new = box.commit("inside.txt", "inside")
    box.git("tag", "v1")
    token = box.push()
    assert box.export() == [f"{token}-0.bundle", f"{token}-0.refs"]
    manifest = (box.private / gitbridge.EXPORT / f"{token}-0.refs").read_text()
    assert sorted(manifest.splitlines()) == sorted([
        "gitdir ", f"ref {new} {base} refs/heads/main", f"ref {new} {'0' * 40} refs/tags/v1"])
    parsed = gitbridge.parse_manifest(manifest.encode())
    assert parsed.rel == "" and sorted(parsed.refs) == [("refs/heads/main", new, base), ("refs/tags/v1", new, None)]
    assert parsed.head is None
    heads = git(box.host, "bundle", "list-heads", str(box.private / gitbridge.EXPORT / f"{token}-0.bundle"))
    assert f"{new} refs/heads/main" in heads


def test_a_checkout_inside_is_a_head_line(box):
    box.git("checkout", "-q", "-b", "topic")
    token = box.push()
    manifest = (box.private / gitbridge.EXPORT / f"{token}-0.refs").read_text().splitlines()
    assert "head refs/heads/topic refs/heads/main" in manifest


def test_the_sandbox_moved_the_host_takes_it_and_the_export_is_consumed(box):
    new = box.commit("inside.txt", "inside")
    box.collect(box.push())
    assert host_ref(box.host) == new and box.notices == []
    assert box.export() == []
    assert git(box.host, "status", "--porcelain") == ""  # the host's index follows its HEAD
    box.pull()  # and the sandbox sees its own commit come back as the host's: nothing to do
    assert box.ref() == new


def test_an_export_of_another_command_is_left_for_it(box):
    box.commit("inside.txt", "inside")
    token = box.push()
    box.collect("other-token")
    assert box.export() == [f"{token}-0.bundle", f"{token}-0.refs"]


def test_both_moved_the_hosts_branch_stays_and_the_sandboxs_commit_is_kept_aside(box):
    mine = box.commit("inside.txt", "inside")
    commit(box.host, "host.txt", "h\n", "on the host")
    theirs = host_ref(box.host)
    box.collect(box.push())
    assert host_ref(box.host) == theirs
    aside = f"refs/agentsh/{SANDBOX}/heads/main"
    assert host_ref(box.host, aside) == mine
    assert len(box.notices) == 1 and aside in box.notices[0]
    box.pull()  # the host's answer comes back: its branch, the sandbox's commit aside
    assert box.ref() == theirs


def test_a_pull_keeps_a_sandbox_commit_not_yet_pushed_when_the_host_moved_elsewhere(box):
    mine = box.commit("inside.txt", "inside")
    commit(box.host, "host.txt", "h\n", "on the host")
    box.pull()
    assert box.ref() == mine


def test_a_pull_takes_a_host_branch_that_contains_the_sandboxs_unpushed_commit(box):
    mine = box.commit("inside.txt", "inside")
    git(box.host, "fetch", "-q", str(box.private), "refs/heads/main:refs/heads/from-box")
    git(box.host, "reset", "-q", "--hard", "from-box")
    commit(box.host, "host.txt", "h\n", "on top")
    box.pull()
    assert box.ref() == host_ref(box.host) != mine
    assert box.git("merge-base", "--is-ancestor", mine, "HEAD") == ""


def test_a_sandbox_commit_that_extends_a_moved_host_branch_is_taken(box):
    commit(box.host, "host.txt", "h\n", "on the host")
    box.pull()
    new = box.commit("inside.txt", "inside")
    box.collect(box.push())
    assert host_ref(box.host) == new and box.notices == []


def test_a_locked_sandbox_export_is_dropped_not_taken(box):
    before = host_ref(box.host)
    locked = Path(gitbridge.private_dir(SANDBOX, locked=True))
    os.rename(box.private, locked)
    box.private = locked
    box.commit("inside.txt", "inside")
    token = box.push()
    gitbridge.collect(box.topo, SANDBOX, token, Store(), box.notices.append, locked=True)
    assert host_ref(box.host) == before and box.export() == []
