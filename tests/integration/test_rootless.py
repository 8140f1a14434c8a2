"""The core flows as an ordinary user with rootless Podman (keep-id)."""

import json
import uuid

import pytest


@pytest.fixture
def user_repo(rootless_user):
    repo = rootless_user.mkdir(f"work/repo-{uuid.uuid4().hex[:8]}")
    rootless_user.run("git", "init", "-q", str(repo), check=True)
    yield repo
    rootless_user.run("ab-down", "--rm", "--volumes", str(repo))
    rootless_user.run("rm", "-rf", str(repo))


def test_rootless_up_uses_keep_id(rootless_user, user_repo):
    record = json.loads(rootless_user.run("ab-up", "--json", str(user_repo), check=True).stdout)
    assert record["state"] == "running"
    info = json.loads(rootless_user.run("podman", "container", "inspect", record["name"], check=True).stdout)[0]
    assert "--userns=keep-id" in info["Config"]["CreateCommand"]
    assert rootless_user.run("ab-exec", "--", "id", "-u", cwd=user_repo, check=True).stdout.strip() == \
        str(rootless_user.uid).encode()


def test_rootless_files_belong_to_the_user_on_the_host(rootless_user, user_repo):
    rootless_user.run("ab-exec", "--", "sh", "-c", "echo hi > made-inside && mkdir -p d/e && touch d/e/f",
                      cwd=user_repo, check=True)
    for path in (user_repo / "made-inside", user_repo / "d" / "e" / "f"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (rootless_user.uid, rootless_user.gid)
    assert (user_repo / "made-inside").read_text() == "hi\n"


def test_rootless_home_volume_is_writable_and_persists(rootless_user, user_repo):
    rootless_user.run("ab-exec", "--", "sh", "-c", "echo kept > ~/.history && ls -lna ~ | grep -q history",
                      cwd=user_repo, check=True)
    rootless_user.run("ab-down", "--rm", str(user_repo), check=True)
    out = rootless_user.run("ab-exec", "--", "cat", "/home/agent/.history", cwd=user_repo, check=True).stdout
    assert out == b"kept\n"


def test_rootless_exit_status_and_git_protection(rootless_user, user_repo):
    assert rootless_user.run("ab-exec", "--", "sh", "-c", "exit 9", cwd=user_repo).returncode == 9
    proc = rootless_user.run("ab-exec", "--", "sh", "-c", "echo x > .git/hooks/post-checkout", cwd=user_repo)
    assert proc.returncode != 0 and not (user_repo / ".git/hooks/post-checkout").exists()


def test_rootless_devcontainer_volume_is_the_users_and_lifecycle_commands_run(rootless_user, user_repo):
    """keep-id: a devcontainer volume belongs to the user; a command with a host value goes through the tmpfs."""
    dc = {"mounts": ["source=data,target=/data,type=volume"],
          "containerEnv": {"FROM_HOST": "${localEnv:LANG}"},
          "postCreateCommand": "echo \"$FROM_HOST ${localEnv:USER}\" > /data/made && id -u >> /data/made"}
    rootless_user.run("mkdir", "-p", str(user_repo / ".devcontainer"), check=True)
    rootless_user.run("sh", "-c", f"cat > {user_repo}/.devcontainer/devcontainer.json", input=json.dumps(dc).encode(),
                      check=True)
    rootless_user.run("ab-allow", str(user_repo), check=True)
    try:
        up = rootless_user.run("ab-up", str(user_repo), check=True)
        assert b"postCreateCommand" in up.stderr
        out = rootless_user.run("ab-exec", "--", "sh", "-c", "cat /data/made && touch /data/mine && echo ok",
                                cwd=user_repo, check=True).stdout.decode()
        assert out == f"C.UTF-8 {rootless_user.name}\n{rootless_user.uid}\nok\n"
    finally:
        rootless_user.run("ab-down", "--rm", "--volumes", str(user_repo))
        for row in json.loads(rootless_user.run("podman", "volume", "ls", "--format", "json").stdout or "[]"):
            if row.get("Name", "").startswith("agentsh-dc-"):
                rootless_user.run("podman", "volume", "rm", "-f", row["Name"])
