"""agentsh's own files under faults, injected by the test: a full state or data dir (a small tmpfs), a
read-only one (a read-only bind remount as root, chmod for a rootless user), records with wrong-typed fields.

Every OS error on our own files is one line naming the path and the fix, exit 125; a cache write that fails
never stops a command (ab-exec in a healthy running sandbox still works); no temp file is left; a failed
`ab-up --recreate` leaves the running sandbox and its record as they were.
"""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import ab, commit, inspect
from tests.reliability.faults import NO_TRACE, one_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs or a read-only bind: needs root")


def mount_small_tmpfs(path, size="4m"):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)


def fill(path):
    """Write a file into `path` until its filesystem is full."""
    subprocess.run(["dd", "if=/dev/zero", f"of={path / 'filler'}", "bs=64k"], capture_output=True)
    assert os.statvfs(path).f_bavail == 0


def make_read_only(path):
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)


def unmount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def last_line(err):
    """The error line that ends a command's stderr (ab-allow shows what it reviewed first); no traceback."""
    assert not any(m in err for m in NO_TRACE), err.decode(errors="replace")
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    assert lines and not any(line.startswith("ab-") for line in lines[:-1]), lines
    return lines[-1]


def temp_files(root):
    return [str(p) for p in Path(root).rglob("*") if ".tmp." in p.name or ".agentsh-tmp-" in p.name]


def prepare(repo):
    """A project with a sandbox, a credential, a project file and a commit: every command below has work."""
    commit(repo, "README", "hi\n", "init")
    (repo / ".agentsh.toml").write_text('pids = 512\n')
    ab("ab-allow", str(repo), check=True)
    ab("ab-creds", "set", "TOKEN_A", input=b"secret\n", check=True)
    name = json.loads(ab("ab-up", "--json", str(repo), check=True).stdout)["name"]
    assert ab("ab-exec", "--", "echo", "ok", cwd=repo).stdout == b"ok\n"
    return name


WRITERS = [  # commands that must write a state record: each fails with one line, 125, nothing changed
    ["ab-up", "--recreate"],
    ["ab-net", "allow", "example.com"],
    ["ab-creds", "grant", "TOKEN_A"],
    ["ab-wt", "new", "feat"],
    ["ab-allow"],
]


def check_faulted(repo, name, root, words, writers=WRITERS, must_fail=True):
    before = inspect(name)["Id"]
    ok = ab("ab-exec", "--", "echo", "ok", cwd=repo)
    assert (ok.returncode, ok.stdout) == (0, b"ok\n"), ok.stderr  # a cache write never stops a command
    assert not any(m in ok.stderr for m in NO_TRACE)
    assert ab("ab-up", str(repo)).returncode == 0  # the no-engine check of a running sandbox writes nothing
    for cmd in writers:
        proc = ab(*cmd, cwd=repo)
        if must_fail or proc.returncode != 0:
            assert proc.returncode == 125, (cmd, proc)
            line = last_line(proc.stderr)
            assert any(w in line for w in words), (cmd, line)
            assert str(root) in line, (cmd, line)  # it names the path
        info = inspect(name)
        assert info["State"]["Status"] == "running", cmd
        if proc.returncode != 0:
            assert info["Id"] == before, cmd  # a failed ab-up --recreate keeps the sandbox
        before = info["Id"]
    assert not temp_files(root)


@pytest.mark.parametrize("var", ["XDG_STATE_HOME", "XDG_DATA_HOME"])
def test_full_dir(sandbox_env, isolated_dirs, repo, var):
    root = isolated_dirs[var]
    mount_small_tmpfs(root, "8m" if var == "XDG_DATA_HOME" else "4m")
    try:
        name = prepare(repo)
        fill(root)
        state = var == "XDG_STATE_HOME"
        check_faulted(repo, name, root, ("No space left", "free some space"), must_fail=state)
        if state:  # a record that ab-up --recreate would have rewritten is still the one of the running sandbox
            from agentsh.base.state import Store

            assert Store().read(f"sandboxes/{name}.json")["name"] == name
        (root / "filler").unlink()
        proc = ab("ab-up", "--recreate", str(repo))
        assert proc.returncode == 0, proc.stderr
        assert ab("ab-exec", "--", "echo", "ok", cwd=repo).stdout == b"ok\n"
    finally:
        ab("ab-down", "--rm", "--volumes", str(repo))
        unmount(root)


@pytest.mark.parametrize("var", ["XDG_STATE_HOME", "XDG_DATA_HOME"])
def test_read_only_dir(sandbox_env, isolated_dirs, repo, var):
    root = isolated_dirs[var]
    name = prepare(repo)
    make_read_only(root)
    try:
        check_faulted(repo, name, root, ("Read-only file system", "read-only filesystem"),
                      must_fail=var == "XDG_STATE_HOME")
    finally:
        unmount(root)
    assert ab("ab-up", "--recreate", str(repo)).returncode == 0
    ab("ab-down", "--rm", "--volumes", str(repo))


def test_rootless_read_only_state_dir(rootless_user):
    user = rootless_user
    repo = user.mkdir(f"work/state-{uuid.uuid4().hex[:8]}")
    user.run("git", "init", "-q", str(repo), check=True)
    state = Path(user.env["XDG_STATE_HOME"]) / "agentsh"
    try:
        name = json.loads(user.run("ab-up", "--json", str(repo), check=True).stdout)["name"]
        user.run("chmod", "-R", "a-w", str(state), check=True)
        ok = user.run("ab-exec", "--", "echo", "ok", cwd=repo)
        assert (ok.returncode, ok.stdout) == (0, b"ok\n"), ok.stderr
        for cmd in (["ab-up", "--recreate"], ["ab-net", "allow", "example.com"]):
            proc = user.run(*cmd, cwd=repo)
            assert proc.returncode == 125, (cmd, proc)
            line = one_line(proc.stderr)
            assert "Permission denied" in line and str(state) in line and "chmod u+rwx" in line, line
        info = json.loads(user.run("podman", "container", "inspect", name, check=True).stdout)[0]
        assert info["State"]["Status"] == "running"
    finally:
        user.run("chmod", "-R", "u+w", str(state))
        user.run("ab-down", "--rm", "--volumes", str(repo))
        user.run("rm", "-rf", str(repo))
    assert not temp_files(state)


def _only(pattern):
    from agentsh.base.state import Store

    found = list(Path(Store().root).glob(pattern))
    assert len(found) == 1, found
    return found[0]


def _rewrite(file, **fields):
    record = json.loads(file.read_text())
    record.update(fields)
    file.write_text(json.dumps(record))


@pytest.mark.committed
def test_wrong_typed_records_are_named_not_crashed(sandbox_env, repo):
    name = json.loads(ab("ab-up", "--json", str(repo), check=True).stdout)["name"]
    ab("ab-creds", "set", "TOKEN_A", input=b"secret\n", check=True)
    ab("ab-creds", "grant", "TOKEN_A", cwd=repo, check=True)
    ab("ab-wt", "new", "feat", cwd=repo, check=True)

    grant = _only("grants/*.json")
    _rewrite(grant, names=None)
    for cmd in (["ab-exec", "--", "true"], ["ab-creds", "ls"], ["ab-status"]):
        proc = ab(*cmd, cwd=repo)
        assert not any(m in proc.stderr for m in NO_TRACE), proc.stderr
        if proc.returncode != 0:
            assert proc.returncode == 125 and str(grant) in one_line(proc.stderr)
    assert ab("ab-exec", "--", "true", cwd=repo).returncode == 125
    grant.unlink()

    worktree = _only("worktrees/*/feat.json")
    _rewrite(worktree, path={})
    for cmd in (["ab-wt", "ls"], ["ab-wt", "path", "feat"], ["ab-wt", "new", "feat"]):
        proc = ab(*cmd, cwd=repo)
        assert proc.returncode == 125, (cmd, proc)
        line = one_line(proc.stderr)
        assert str(worktree) in line and "'path'" in line, line
    _rewrite(worktree, path=str(repo.parent / "gone"), branch=7)
    proc = ab("ab-wt", "ls", cwd=repo)
    assert proc.returncode == 125 and "'branch'" in one_line(proc.stderr)

    record = _only(f"sandboxes/{name}.json")
    _rewrite(record, publish={"a": 1})
    proc = ab("ab-up", str(repo))  # only a cache of what the engine knows: named, then rewritten
    assert proc.returncode == 0, proc.stderr
    assert str(record) in one_line(proc.stderr) and "'publish'" in proc.stderr.decode()
    assert json.loads(record.read_text())["publish"] == []
    assert ab("ab-exec", "--", "echo", "ok", cwd=repo).stdout == b"ok\n"
