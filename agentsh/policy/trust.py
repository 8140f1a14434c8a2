"""direnv-style opt-in for project files.

A project file is honoured only while the hash of (its real path + its bytes,
and those of the devcontainer.json and Dockerfile it brings) matches what
`ab-allow` recorded; any edit makes it untrusted again. A denial is keyed by
the path alone, so it survives edits. Records live in the state store:
trust/allow/<path hash>.json and trust/deny/<path hash>.json.
`ab-allow --session` trusts the bytes for one shell session only (the id the
cd hook exports as AGENTSH_SESSION): trust/session/<id>/<path hash>.json.

Everything here reads files the sandbox can write, so each is opened without
following a symlink, must be a regular file, and is read exactly once: what
is hashed is what is parsed (`Covered`).

A devcontainer build reads more than its Dockerfile: its whole context. The
allow record also holds a digest of that context (after .dockerignore); it is
compared when a build is about to run (`BuildCopy`, which builds from a
private copy of exactly the bytes it hashed) and by `ab-status`, never on the
cd hook's or ab-exec's path, where it would cost a walk of the tree.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time

from agentsh.base import layout
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError, ConfigError
from agentsh.base.paths import home_dir
from agentsh.base.safefs import (  # noqa: F401 (read_project_file, NotRegular: also for callers)
    _READ_FLAGS,
    MAX_PROJECT_FILE,
    NotRegular,
    _read_fd,
    _read_or_none,
    read_file,
    read_project_file,
)
from agentsh.policy import devcontainer_files

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    import hashlib
    from collections.abc import Mapping

    from agentsh.base.state import Store
    from agentsh.host.project import Project
    from agentsh.policy.devcontainer import Devcontainer

ALLOWED = "allowed"
DENIED = "denied"
BLOCKED = "blocked"  # present but never allowed, or changed since
SESSION_ENV = "AGENTSH_SESSION"
_SESSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
PROJECT_FILE = ".agentsh.toml"


def _path_key(real_path: str) -> str:
    return sha256_hex(real_path)


def session_id(environ: Mapping[str, str] | None = None) -> str | None:
    """This shell session's id (exported by the cd hook), or None if absent or malformed.

    It names a directory in the store, so anything but a plain token is refused.
    """
    value = (os.environ if environ is None else environ).get(SESSION_ENV, "")
    return value if 8 <= len(value) <= 64 and _SESSION_CHARS.issuperset(value) else None


def _session_rel(session: str, key: str) -> str:
    return layout.trust_session_record(session, key)


def was_allowed(store: Store, real_path: str) -> bool:
    """Whether ab-allow ever recorded this path (to tell "changed" from "never allowed")."""
    return os.path.exists(store.path(layout.trust_allow_record(_path_key(real_path))))


# -- what a trust record covers ------------------------------------------------------


def anchor(project: Project, choice: str | None = None) -> str | None:
    """The file a project's trust is recorded for: its project file, else its devcontainer.json.

    A devcontainer.json decides what runs as much as the project file does,
    so a project with only one still needs `ab-allow` before it is honoured.
    `choice`: which of several devcontainer configs (devcontainer.find).
    """
    if project.config_file:
        return project.config_file

    return devcontainer_files.find(project.root, choice)


class Covered:
    """An anchor's bytes and those of every file its trust covers, each read once.

    `files`: [(path, bytes or None when unreadable)] besides the anchor, in hash
    order; `devcontainer`: the Devcontainer parsed from exactly those bytes
    (None when there is none, or `error` says why it could not be read).
    """

    def __init__(self, anchor_path: str, data: bytes) -> None:
        self.anchor = anchor_path
        self.data = data
        self.files = []
        self.devcontainer = None
        self.error = None

    def paths(self) -> list[str]:
        return [p for p, _ in self.files]


def cover(anchor_path: str, data: bytes | None = None, choice: str | None = None) -> Covered:
    """The Covered snapshot of an anchor (its bytes given, or read now); `choice` as for anchor()."""
    from agentsh.policy import devcontainer  # lazy: the devcontainer reader, only when covering an anchor

    if data is None:
        data = read_project_file(anchor_path)
    out = Covered(anchor_path, data)
    if os.path.basename(anchor_path) == PROJECT_FILE:
        root = os.path.dirname(anchor_path)
        dc_path = devcontainer.find(root, choice)
        dc_data = None
        if dc_path:
            try:
                dc_data = read_project_file(dc_path)
            except AgentshError as e:
                out.error = e if isinstance(e, ConfigError) else ConfigError(e.message, e.fix)
            out.files.append((dc_path, dc_data))
    else:  # the anchor is the devcontainer.json itself
        dc_path, dc_data = anchor_path, data
        root = devcontainer.config_root(dc_path)
    if dc_path and dc_data is not None:
        try:
            out.devcontainer = devcontainer.from_bytes(dc_path, dc_data, root)
        except ConfigError as e:
            out.error = e  # its own bytes are still covered; loading it says what is wrong
        else:
            # compose files, their .env and env_files: the bytes the Devcontainer was read from
            out.files += out.devcontainer.compose_files
            if out.devcontainer.dockerfile:
                out.files.append((out.devcontainer.dockerfile, _read_or_none(out.devcontainer.dockerfile)))
            for feature in out.devcontainer.features:  # the bytes read once, which a build installs
                if feature.oci is not None:
                    continue  # a registry feature: its reference is in the devcontainer.json, its digest pinned
                for rel, mode, file_data in feature.files:
                    out.files.append((os.path.join(feature.folder, rel), b"%o\0" % mode + file_data))
            if out.devcontainer.registry_features():
                _cover_lock(out, dc_path)
    return out


def _cover_lock(out: Covered, dc_path: str) -> None:
    """The spec's devcontainer-lock.json, when there is one: it pins registry features, so trust covers it."""
    from agentsh.policy.devcontainer_oci import lock_path  # lazy: only for a file with registry features

    path = lock_path(dc_path)
    if not os.path.lexists(path):
        return
    try:
        data = read_project_file(path)
    except AgentshError as e:
        out.files.append((path, None))
        out.error = e if isinstance(e, ConfigError) else ConfigError(e.message, e.fix)
        return
    out.files.append((path, data))
    try:
        out.devcontainer.pins_from(path, data)
    except ConfigError as e:
        out.error = e


def covered_files(anchor_path: str) -> list[str]:
    """Files besides the anchor that the trust hash covers: devcontainer.json, its Dockerfile, its compose files."""
    try:
        return cover(anchor_path).paths()
    except AgentshError:
        return []


def content_hash(real_path: str, data: bytes, covered: Covered | None = None) -> str:
    """Hash of the anchor's path and bytes, and of every file it covers (none: as before)."""
    covered = covered if covered is not None else cover(real_path, data)
    base = os.path.dirname(real_path)
    out = b""
    for path, file_data in covered.files:
        out += b"\0" + os.path.relpath(path, base).encode("utf-8", "surrogateescape") + b"\0" + (
            b"<missing>" if file_data is None else file_data)
    return sha256_hex(real_path.encode("utf-8", "surrogateescape") + b"\0" + data + out)


def status(store: Store, real_path: str, data: bytes, session: str | None = None,
           covered: Covered | None = None) -> str:
    """ALLOWED, DENIED or BLOCKED for a project file's path and bytes.

    A session allow record counts too: `session` names the shell session
    (None: this process's AGENTSH_SESSION; False: permanent records only).
    """
    return status_record(store, real_path, data, session, covered)[0]


def status_record(store: Store, real_path: str, data: bytes, session: str | None = None,
                  covered: Covered | None = None) -> tuple[str, dict | None]:
    """(state, the allow record that matched or None): status() and the record whose build digest applies."""
    key = _path_key(real_path)
    if os.path.exists(store.path(layout.trust_deny_record(key))):
        return DENIED, None
    covered = covered if covered is not None else cover(real_path, data)
    wanted = content_hash(real_path, data, covered)
    record = store.read(layout.trust_allow_record(key))
    if record and record.get("hash") == wanted:
        return ALLOWED, record
    session = session_id() if session is None else session
    if session:
        record = store.read(_session_rel(session, key))
        if record and record.get("hash") == wanted:
            return ALLOWED, record
    # A linked worktree's copy inherits the main checkout's trust while it is
    # byte-identical to the main checkout's file, and git links the two both
    # ways through directories no sandbox can write (linked_main_file).
    main_file = linked_main_file(real_path)
    if main_file:
        main_data = _read_or_none(main_file)
        if main_data == data:
            main_covered = cover(main_file, main_data)
            if _relative_files(main_covered) == _relative_files(covered):
                state, record = status_record(store, main_file, main_data, session, main_covered)
                if state == ALLOWED:
                    return ALLOWED, record
    return BLOCKED, None


def _relative_files(covered: Covered) -> list[tuple[str, bytes | None]]:
    base = os.path.dirname(covered.anchor)
    return [(os.path.relpath(p, base), d) for p, d in covered.files]


# -- linked worktrees ----------------------------------------------------------------


def _checkout_top(start: str) -> str | None:
    """The nearest directory at or above `start` holding `.git` (never home or /), or None."""
    home = home_dir()
    d = start
    while d not in (home, "/", ""):
        if os.path.lexists(os.path.join(d, ".git")):
            return d
        d = os.path.dirname(d)
    return None


def linked_main_file(path: str) -> str | None:
    """For a file in a linked worktree, the same relative path in the main checkout M; else None.

    The checkout counts as a linked worktree of M only when all of this holds:
    its `.git` is a regular file (no symlink) whose `gitdir:` names
    M/.git/worktrees/NAME through real directories only (no symlink on the
    way), M/.git is a real directory of a repository's own (no `commondir`),
    M/.git/worktrees/NAME/gitdir names this checkout's `.git` back and its
    `commondir` names M/.git. Those files are written by host git in a
    directory no sandbox can write; a gitfile and a `commondir` the agent wrote
    in its own tree prove nothing.
    """
    from agentsh.host import gittopo  # lazy: only for a linked worktree's project file

    top = _checkout_top(os.path.dirname(path))
    if top is None:
        return None
    topo = gittopo.detect(top)  # the same checks agentsh makes before it mounts a worktree's git dir
    if topo.kind != gittopo.LINKED or topo.main_root == top:
        return None
    main = topo.main_root
    return os.path.join(main, os.path.relpath(path, top))


# -- recording ------------------------------------------------------------------------


def allow(store: Store, real_path: str, session: str | None = None, covered: Covered | None = None,
          build: dict | None = None) -> None:
    """Trust the file's current bytes (and lift a denial of its path).

    With `session`, only for that shell session, and a denial stays in force.
    `covered` (and `build`, its build_digest) are what the caller showed the
    user; by default both are read now.
    """
    if covered is None:
        covered = cover(real_path)
    if build is None:
        build = build_info(covered)
    key = _path_key(real_path)
    record = {"path": real_path, "hash": content_hash(real_path, covered.data, covered),
              "allowed_at": int(time.time())}
    if build is not None:
        record["build"] = build
    if session:
        with store.lock():
            if os.path.exists(store.path(layout.trust_deny_record(key))):
                raise AgentshError(f"{real_path} is denied",
                                   "run 'ab-allow' without --session to lift the denial")
            store.write(_session_rel(session, key), {**record, "session": session})
        return
    with store.lock():
        store.remove(layout.trust_deny_record(key))
        store.write(layout.trust_allow_record(key), record)


def deny(store: Store, real_path: str) -> None:
    """Block the path whatever its content, until allowed again."""
    key = _path_key(real_path)
    with store.lock():
        store.remove(layout.trust_allow_record(key))
        store.write(layout.trust_deny_record(key), {"path": real_path, "denied_at": int(time.time())})


# -- the build context -----------------------------------------------------------------

IGNORE_FILES = (".containerignore", ".dockerignore")  # the engines' order: the first present applies
_BUILD_FORMAT = b"agentsh-build-1\n"


class IgnoreRules:
    """A .dockerignore, with the engines' semantics (moby's patternmatcher).

    Lines starting with '#' are comments; each pattern is cleaned like a path
    (a leading '/' dropped); '*' and '?' never match '/', '**' matches any
    number of directories; '!' makes an exception. The last pattern that
    matches a path or one of its parent directories decides. An excluded
    directory is not entered unless an exception pattern names something
    inside it by its literal prefix (as the engines decide what to send).
    """

    def __init__(self, text: str = "", source: str = ".dockerignore") -> None:
        import re  # lazy: only for a devcontainer build's .dockerignore

        self.patterns = []  # (exception, compiled regex, cleaned text)
        for n, line in enumerate(text.splitlines()):
            if n == 0:
                line = line.lstrip("\ufeff")
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            exception = line.startswith("!")
            if exception:
                line = line[1:].strip()
                if not line:
                    raise ConfigError(f"{source}: line {n + 1}: a '!' with no pattern",
                                      "remove the line or name what to keep")
            if line.startswith("/"):
                line = "/" + line.lstrip("/")
            line = posixpath.normpath(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
            try:
                regex = re.compile(self._regex(line), re.DOTALL)
            except re.error as e:
                raise ConfigError(f"{source}: line {n + 1}: {line!r} is not a valid pattern ({e})",
                                  "fix the pattern (see the .dockerignore reference)") from None
            self.patterns.append((exception, regex, line))
        self.exceptions = [p for e, _, p in self.patterns if e]

    @staticmethod
    def _regex(pattern: str) -> str:
        out = ["^"]
        i, n = 0, len(pattern)
        while i < n:
            ch = pattern[i]
            if ch == "*":
                if i + 1 < n and pattern[i + 1] == "*":
                    i += 2
                    if i < n and pattern[i] == "/":
                        i += 1
                    out.append(".*" if i >= n else "(.*/)?")
                    continue
                out.append("[^/]*")
            elif ch == "?":
                out.append("[^/]")
            elif ch in ".+()|{}$^":
                out.append("\\" + ch)
            elif ch == "\\":
                if i + 1 < n:
                    i += 1
                    out.append("\\" + pattern[i])
                else:
                    out.append("\\\\")
            else:
                out.append(ch)
            i += 1
        out.append("$")
        return "".join(out)

    def excluded(self, rel: str) -> bool:
        """Whether the relative path `rel` ('/'-separated) is left out of the context."""
        matched = False
        parents = rel.split("/")[:-1]
        for exception, regex, _ in self.patterns:
            if exception != matched:
                continue  # only a pattern that could change the answer is evaluated
            match = regex.match(rel) is not None
            if not match:
                for i in range(len(parents)):
                    if regex.match("/".join(parents[:i + 1])):
                        match = True
                        break
            if match:
                matched = not exception
        return matched

    def prunes(self, rel_dir: str) -> bool:
        """Whether an excluded directory can be skipped whole (no exception names a path inside it)."""
        prefix = rel_dir + "/"
        return not any((p + "/").startswith(prefix) for p in self.exceptions)


def _open_under(root: str, path: str, directory: bool = True) -> int:
    """An fd for `path`, opened component by component from `root` without following a symlink."""
    rel = os.path.relpath(path, root)
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        raise ConfigError(f"{path} is outside the project {root}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    parts = [] if rel == "." else rel.split("/")
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            flags |= os.O_DIRECTORY if (directory or not last) else os.O_NONBLOCK
            try:
                new = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                raise ConfigError(f"{path}: cannot open {part!r} without following a symlink: {e.strerror}",
                                  "the build context and Dockerfile must be real files and directories "
                                  "inside the project") from None
            os.close(fd)
            fd = new
        return fd
    except BaseException:
        os.close(fd)
        raise


class _Changed(AgentshError):
    pass


def build_digest(dockerfile: str, context: str, root: str, copy_to: str | None = None) -> dict:
    """{"dockerfile", "context", "hash", "files", "bytes"} of a devcontainer build.

    The digest covers the Dockerfile's bytes and every entry of the context
    the engine would send (after .containerignore or .dockerignore): each
    directory, each symlink as its target string (never followed), each
    regular file's mode and bytes. `.git` is left out (a build never sees
    it). With `copy_to`, the same bytes are written there as they are read
    (copy_to/Dockerfile and copy_to/context), so a build from the copy sees
    exactly what was hashed.
    """
    from hashlib import sha256  # OpenSSL's: several times the builtin's speed, and this is no hot path

    h = sha256(_BUILD_FORMAT)
    rel_file, rel_context = os.path.relpath(dockerfile, root), os.path.relpath(context, root)
    h.update(os.fsencode(rel_file) + b"\0" + os.fsencode(rel_context) + b"\0")
    fd = _open_under(root, dockerfile, directory=False)
    try:
        recipe = _read_fd(fd, dockerfile, MAX_PROJECT_FILE)
    finally:
        os.close(fd)
    h.update(sha256(recipe).hexdigest().encode() + b"\n")
    stats = {"files": 0, "bytes": 0}
    copy_fd = None
    if copy_to is not None:
        with open(os.path.join(copy_to, "Dockerfile"), "wb") as f:
            f.write(recipe)
        os.mkdir(os.path.join(copy_to, "context"), 0o700)
        copy_fd = os.open(os.path.join(copy_to, "context"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    top = _open_under(root, context)
    try:
        rules = IgnoreRules()
        for name in IGNORE_FILES:
            try:
                ignore_fd = os.open(name, _READ_FLAGS, dir_fd=top)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise ConfigError(f"{os.path.join(context, name)}: cannot read it ({e.strerror}; a symlink?)",
                                  "make it a regular file") from None
            try:
                text = _read_fd(ignore_fd, os.path.join(context, name), MAX_PROJECT_FILE)
            finally:
                os.close(ignore_fd)
            rules = IgnoreRules(text.decode("utf-8", "surrogateescape"), os.path.join(context, name))
            break
        _walk(h, top, "", rules, stats, copy_fd, context)
    finally:
        os.close(top)
        if copy_fd is not None:
            os.close(copy_fd)
    return {"dockerfile": rel_file, "context": rel_context, "hash": h.hexdigest(), **stats}


def _walk(h: hashlib._Hash, dfd: int, prefix: str, rules: IgnoreRules, stats: dict[str, int], copy_fd: int | None,
          context: str) -> None:
    from hashlib import sha256  # lazy: OpenSSL's hashlib, only to hash a build context

    with os.scandir(dfd) as it:
        names = sorted(e.name for e in it)
    for name in names:
        if name == ".git":
            continue
        rel = prefix + name
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise _Changed(f"{context}/{rel} went away while agentsh read the build context", "try again") from None
        mode = st.st_mode
        perm = b"%o" % stat.S_IMODE(mode)
        erel = os.fsencode(rel)
        if stat.S_ISDIR(mode):
            if rules.excluded(rel) and rules.prunes(rel):
                continue
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                raise _Changed(f"{context}/{rel} changed while agentsh read the build context", "try again") from None
            sub_copy = None
            try:
                h.update(b"d\0" + erel + b"\0" + perm + b"\n")
                if copy_fd is not None:
                    os.mkdir(name, 0o700, dir_fd=copy_fd)
                    sub_copy = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=copy_fd)
                _walk(h, sub, rel + "/", rules, stats, sub_copy, context)
                if sub_copy is not None:
                    os.chmod(sub_copy, (stat.S_IMODE(mode) & 0o777) | 0o700)
            finally:
                os.close(sub)
                if sub_copy is not None:
                    os.close(sub_copy)
        elif rules.excluded(rel):
            continue
        elif stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=dfd)
            h.update(b"l\0" + erel + b"\0" + os.fsencode(target) + b"\n")
            if copy_fd is not None:
                os.symlink(target, name, dir_fd=copy_fd)
            stats["files"] += 1
        elif stat.S_ISREG(mode):
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            except OSError:
                raise _Changed(f"{context}/{rel} changed while agentsh read the build context", "try again") from None
            out = None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise _Changed(f"{context}/{rel} changed while agentsh read the build context", "try again")
                if copy_fd is not None:
                    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=copy_fd)
                file_hash = sha256()
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    file_hash.update(chunk)
                    stats["bytes"] += len(chunk)
                    if out is not None:
                        _write_all(out, chunk)
                if out is not None:
                    os.fchmod(out, (stat.S_IMODE(mode) & 0o777) | 0o600)
            finally:
                os.close(fd)
                if out is not None:
                    os.close(out)
            h.update(b"f\0" + erel + b"\0" + perm + b"\0" + file_hash.hexdigest().encode() + b"\n")
            stats["files"] += 1
        # sockets, FIFOs and devices: never sent to the engine, never read


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def build_info(covered: Covered) -> dict | None:
    """build_digest() of a Covered snapshot's devcontainer build, or None when it builds nothing."""
    dev = covered.devcontainer
    if dev is None or not dev.dockerfile:
        return None
    return build_digest(dev.dockerfile, dev.context, dev.root)


def build_problem(covered: Covered, record: dict | None, now: dict | None = None) -> str | None:
    """Why a trusted project's build is not covered by `record` (the allow record), or None.

    `now`: the build's digest if the caller has it already (else it is computed: a walk of the context).
    """
    dev = covered.devcontainer
    if dev is None or not dev.dockerfile:
        return None
    trusted = (record or {}).get("build")
    if not isinstance(trusted, dict) or "hash" not in trusted:
        return "allowed before trust covered the devcontainer build context; review it, then run ab-allow"
    if now is None:
        try:
            now = build_digest(dev.dockerfile, dev.context, dev.root)
        except AgentshError as e:
            return f"its devcontainer build cannot be read: {e.message}"
    if now["hash"] != trusted["hash"]:
        return (f"its devcontainer build ({now['dockerfile']} and the context {now['context']}) changed since "
                "it was allowed; review it, then run ab-allow")
    return None


# Builds this process found covered by an allowed project file, by (Dockerfile, context):
# config.load records them, sandbox.build_image asks before it builds.
_BUILDS = {}


def expect_build(dev: Devcontainer, record: dict | None) -> None:
    """Remember that `dev`'s build is trusted as far as `record` (the allow record that matched) covers it."""
    if dev is not None and dev.dockerfile:
        _BUILDS[(dev.dockerfile, dev.context)] = {"root": dev.root, "build": (record or {}).get("build")}


class BuildCopy:
    """A private copy of a trusted build's Dockerfile and context, checked against the allow record.

    with BuildCopy(dockerfile, context) as copy: engine.build(copy.context, file=copy.dockerfile)
    Refuses (ConfigError) a build no allowed project file covers, and one whose
    bytes differ from what was allowed. The engine reads only the copy, so
    nothing the sandbox writes meanwhile reaches the build.
    """

    def __init__(self, dockerfile: str, context: str) -> None:
        self.source_file, self.source_context = dockerfile, context
        entry = _BUILDS.get((dockerfile, context))
        if entry is None:
            raise ConfigError(f"{dockerfile}: no allowed project file covers this build",
                              "run 'ab-allow' in the project after reviewing its devcontainer")
        self.root, self.trusted = entry["root"], entry["build"]
        if not isinstance(self.trusted, dict) or "hash" not in self.trusted:
            raise ConfigError(f"{dockerfile}: the project was allowed before trust covered its build context",
                              "review the Dockerfile and its build context, then run 'ab-allow'")
        self.dir = self.dockerfile = self.context = None

    def __enter__(self) -> BuildCopy:
        import tempfile  # lazy: only for a devcontainer build

        self.dir = tempfile.mkdtemp(prefix="agentsh-build-")
        try:
            info = build_digest(self.source_file, self.source_context, self.root, copy_to=self.dir)
            if info["hash"] != self.trusted["hash"]:
                raise ConfigError(f"{self.source_context}: the devcontainer build ({info['dockerfile']} and its "
                                  f"context, {info['files']} files) changed since 'ab-allow'; not building it",
                                  "review the changes, then run 'ab-allow' to build from them")
        except BaseException:
            self._remove()
            raise
        self.dockerfile = os.path.join(self.dir, "Dockerfile")
        self.context = os.path.join(self.dir, "context")
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        import shutil  # lazy: only for a devcontainer build

        if self.dir:  # every directory of the copy keeps u+rwx, so nothing stops the removal
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
