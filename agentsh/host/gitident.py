"""The host's git identity (user.name, user.email), for commits made inside a sandbox.

Resolved by host git itself in the project (so GIT_CONFIG_GLOBAL, includes
and includeIf are honoured), never anything else of the host's config:
no credential helper, no `url.*.insteadOf`, no signing key. The answer is
cached in the state dir under the identity (inode, size, mtime) of every
file git would read it from, so the common exec costs a few stat calls and
no git process. It reaches the sandbox as GIT_AUTHOR_* / GIT_COMMITTER_*
through the exec (never the container's create-time environment, so never
`podman inspect`).
"""

import os

from agentsh.base.state import atomic_write

CACHE = "git-identity"
FIELDS = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def _sources(project_root: str) -> str:
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files = [os.environ.get("GIT_CONFIG_GLOBAL") or os.path.join(home, ".gitconfig"),
             os.path.join(xdg, "git", "config"), "/etc/gitconfig", os.path.join(project_root, ".git", "config")]
    out = []
    for path in files:
        try:
            st = os.stat(path)
            out.append(f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            out.append(f"{path}:-")
    return "|".join(out)


def identity(store_root: str, project_root: str) -> dict[str, str]:
    """{GIT_AUTHOR_NAME: ..., ...} from the host's git config, or {} when it names nobody."""
    key = _sources(project_root).encode("utf-8", "surrogateescape")
    path = os.path.join(store_root, CACHE)
    try:
        with open(path, "rb") as f:
            cached = f.read().split(b"\0")
        if len(cached) == 3 and cached[0] == key:
            return _env(cached[1].decode("utf-8", "replace"), cached[2].decode("utf-8", "replace"))
    except OSError:
        pass
    name, email = _ask_git(project_root, "user.name"), _ask_git(project_root, "user.email")
    try:
        atomic_write(path, b"\0".join([key, name.encode(), email.encode()]))
    except OSError:
        pass
    return _env(name, email)


def _env(name: str, email: str) -> dict[str, str]:
    if not name or not email:
        return {}
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def _ask_git(project_root: str, key: str) -> str:
    import subprocess  # lazy: only on an identity cache miss

    from agentsh.host.gittopo import git_env  # lazy: only on an identity cache miss

    # Only the identity the user's own git would use: every GIT_* goes but GIT_CONFIG_GLOBAL, which names
    # the user's global config (ab-wt's git keeps more, agentsh's git on its own git dirs keeps less).
    env = git_env((), "GIT_", keep=("GIT_CONFIG_GLOBAL",))
    cwd = project_root if os.path.isdir(os.path.join(project_root, ".git")) else "/"  # never a repo found upward
    try:
        proc = subprocess.run(["git", "config", "--get", key], cwd=cwd, capture_output=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    value = proc.stdout.decode("utf-8", "replace").strip()
    return value if proc.returncode == 0 and "\n" not in value and "\0" not in value else ""
