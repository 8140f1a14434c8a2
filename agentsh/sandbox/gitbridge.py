"""The sandbox's own git dir, and the bridge that carries its commits to the host.

The host's git dir is never writable inside a sandbox. The sandbox gets:

- the host's git dir read-only at HOST_GIT (objects, refs, HEAD, config, as
  host git keeps them, live);
- at the repository's real git-dir path, a *private git dir* of its own
  (`<data dir>/git/<sandbox>`): objects shared through
  `objects/info/alternates` (read-only), its own refs, HEAD and index. Being
  a mount point, `.git` cannot be renamed or replaced from inside, and a
  linked worktree's gitfile (and a submodule's) is mounted read-only over
  itself for the same reason.

Every command runs through `run` (agentsh/data/sandbox/): before it, the
private dir takes in refs and HEAD that moved on the host; after it, what
moved in the sandbox is written as a git bundle plus a list of refs. Host
git then fetches that bundle with fsck on (reading no config, hook or
pointer from the sandbox: a bundle is objects and ref names only), and
`collect` moves the host's refs with a compare-and-swap against the value
the sandbox started from, so a commit made inside is on the host's branch
when the command that made it returns. A branch moved on both sides is kept
aside as `refs/agentsh/<sandbox>/...`, never forced.

Host code opens nothing in the private dir except the export files, always
relative to a descriptor it opened itself and with O_NOFOLLOW (safefs).
"""

import os
import re

from agentsh.base import layout, paths, safefs
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError
from agentsh.base.layout import HOST_GIT, LIB
from agentsh.host import gittopo
from agentsh.sandbox import execd

EXPORT = layout.GIT_EXPORT
MODULES_LIST = "agentsh-modules"
BUNDLE_LIMIT = 4 << 30
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?\Z")
_ZERO = re.compile(r"0+\Z")
_GIT_ENV = (*gittopo.GIT_LOCATION_ENV, "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
            "GIT_CONFIG_COUNT", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM")


def private_dir(sandbox, locked=False):
    return os.path.join(paths.data_dir(), layout.private_git_dir(sandbox, locked))


_LIB_FILES = ("run", "gitsync", "execd.c", "shrc")


def _lib_sources():
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sandbox")
    out = {}
    for name in _LIB_FILES:
        with open(os.path.join(here, name), "rb") as f:
            out[name] = f.read()
    return out


_LIB_DIGEST = []  # the sources' digest, read and hashed once per process (ab-up asks for it several times)


def lib_dir():
    """Where the in-sandbox scripts of this agentsh version live (named by their content)."""
    if not _LIB_DIGEST:
        sources = _lib_sources()
        _LIB_DIGEST.append(sha256_hex(b"\0".join(sources[n] for n in _LIB_FILES))[:12])
    return os.path.join(paths.data_dir(), layout.lib_dir(_LIB_DIGEST[0]))


# -- the container spec ------------------------------------------------------


def spec_args(topo, sandbox, locked=False):
    """(-v arguments, env) giving the sandbox its private git dir and the host's read-only."""
    args = ["-v", f"{lib_dir()}:{LIB}:ro"]
    if topo.kind == gittopo.NONE:
        return args, {}
    args += ["-v", f"{private_dir(sandbox, locked)}:{topo.common}",
             "-v", f"{topo.common}:{HOST_GIT}:ro"]
    for gitfile in [*([os.path.join(topo.root, ".git")] if topo.kind == gittopo.LINKED else []),
                    *submodule_gitfiles(topo)]:
        args += ["-v", f"{gitfile}:{gitfile}:ro"]  # a mount point: the agent cannot re-point it
    return args, {"AGENTSH_GIT": topo.common, "AGENTSH_GIT_OWN": topo.own_rel}


def submodule_gitfiles(topo):
    """The `.git` gitfiles of the checkout's submodules (from the host's modules/*/config core.worktree)."""
    if topo.kind != gittopo.MAIN:
        return []
    found = []
    for rel in gittopo.modules(topo.common):
        text = gittopo.read_small(os.path.join(topo.common, rel, "config"), 65536) or ""
        match = re.search(r"^\s*worktree\s*=\s*(.+?)\s*$", text, re.M)
        if not match:
            continue
        work = os.path.normpath(os.path.join(topo.common, rel, match.group(1).strip('"')))
        gitfile = os.path.join(work, ".git")
        if work.startswith(topo.root + "/") and os.path.isfile(gitfile) and not os.path.islink(gitfile) \
                and ":" not in gitfile:
            found.append(gitfile)
    return found


# -- host side: before a sandbox is made ---------------------------------------


def _rmtree(path):
    """Remove a directory tree if it is there (shutil only when it is: ab-up's cold path)."""
    if os.path.lexists(path):
        import shutil  # lazy: bz2 and lzma come with it; a cold ab-up rarely has anything to remove

        shutil.rmtree(path, ignore_errors=True)


def install_lib():
    """Put the in-sandbox scripts where the sandbox mounts them read-only (once per version)."""
    target = lib_dir()
    if os.path.isdir(target):
        return
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    tmp = f"{target}.new.{os.getpid()}"
    _rmtree(tmp)
    os.mkdir(tmp, 0o755)
    for name, data in _lib_sources().items():
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(tmp, name), 0o755)
    execd.build(tmp)  # the exec server; where it cannot be built, execs take the engine's path
    try:
        os.rename(tmp, target)
    except OSError:  # installed meanwhile
        _rmtree(tmp)


def prepare(topo, sandbox, locked=False):
    """Make (or complete) the sandbox's private git dir from the host's, before the sandbox runs."""
    install_lib()
    if topo.kind == gittopo.NONE:
        return
    target = private_dir(sandbox, locked)
    mods = gittopo.modules(topo.common)
    if not os.path.isdir(target):
        parent = os.path.dirname(target)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        tmp = f"{target}.new.{os.getpid()}"
        _rmtree(tmp)
        os.mkdir(tmp, 0o700)
        _init(tmp, topo.common, HOST_GIT, topo.own_rel)
        for rel in mods:
            _init(os.path.join(tmp, rel), os.path.join(topo.common, rel), f"{HOST_GIT}/{rel}", "")
        try:
            os.rename(tmp, target)
        except OSError:  # made meanwhile by a concurrent ab-up
            _rmtree(tmp)
    fd = safefs.open_dir(target)
    try:
        for rel in mods:  # submodules the host has gained since: made through descriptors, links refused
            try:
                sub = safefs.open_dir(target, rel)
                os.close(sub)
                continue
            except FileNotFoundError:
                pass
            except OSError as e:
                raise AgentshError(f"{target}/{rel} is not a directory agentsh made ({e})",
                                   f"remove {target} (the sandbox's own git dir) and run 'ab-up' again") from None
            staging = os.path.join(os.path.dirname(target), f".module.{os.getpid()}")
            _rmtree(staging)
            os.mkdir(staging, 0o700)
            _init(staging, os.path.join(topo.common, rel), f"{HOST_GIT}/{rel}", "")
            parent = safefs.open_dir(target, os.path.dirname(rel), create=True)
            try:
                os.rename(staging, os.path.basename(rel), dst_dir_fd=parent)
            finally:
                os.close(parent)
        safefs.write(fd, MODULES_LIST, "".join(f"{rel}\n" for rel in mods).encode())
    finally:
        os.close(fd)


def _copy(src, dst):
    """Copy a host git file (if it is a regular file) into a fresh private dir."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    import shutil  # lazy: bz2 and lzma come with it; a cold ab-up with its private git dir made needs neither

    with os.fdopen(fd, "rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out)


def _init(dst, host_dir, inside, own_rel):
    """A private git dir at `dst` (fresh, host-made) sharing `host_dir`'s objects as seen at `inside`."""
    for d in ("objects/info", "refs/heads", "refs/tags", "info"):
        os.makedirs(os.path.join(dst, d), mode=0o755, exist_ok=True)
    head = gittopo.read_small(os.path.join(host_dir, "HEAD")) or "ref: refs/heads/main\n"
    with open(os.path.join(dst, "HEAD"), "w") as f:
        f.write(head if head.endswith("\n") else head + "\n")
    with open(os.path.join(dst, "config"), "w") as f:
        f.write(f"[include]\n\tpath = {inside}/config\n[core]\n\tbare = false\n\tfsmonitor = false\n")
    with open(os.path.join(dst, "objects/info/alternates"), "w") as f:
        f.write(f"{inside}/objects\n")
    for name in ("packed-refs", "shallow", "index"):
        _copy(os.path.join(host_dir, name), os.path.join(dst, name))
    os.symlink(f"{inside}/hooks", os.path.join(dst, "hooks"))  # the host's hooks run inside, not the reverse
    os.symlink(f"{inside}/info/exclude", os.path.join(dst, "info/exclude"))
    if own_rel:
        own = os.path.join(dst, own_rel)
        os.makedirs(own, mode=0o755)
        host_own = os.path.join(host_dir, own_rel)
        for name in ("HEAD", "index", "gitdir"):
            _copy(os.path.join(host_own, name), os.path.join(own, name))
        with open(os.path.join(own, "commondir"), "w") as f:
            f.write("../..\n")


def forget(sandbox):
    """Remove a sandbox's private git dirs (what it committed is already in the host repo)."""
    for locked in (False, True):
        _rmtree(private_dir(sandbox, locked))


# -- host side: after a command ------------------------------------------------


def collect(topo, sandbox, token, store, notify, locked=False):
    """Take what the command `token` committed into the host repository (objects and refs only)."""
    if topo.kind == gittopo.NONE:
        return
    try:
        pfd = safefs.open_dir(private_dir(sandbox, locked))
    except OSError:
        return
    try:
        try:
            efd = safefs.open_dir(private_dir(sandbox, locked), EXPORT)
        except OSError:
            return
        try:
            mine = sorted(n for n in os.listdir(efd) if n.startswith(f"{token}-") and n.endswith(".refs"))
            if not mine:
                return
            if locked:  # a locked sandbox never writes the host repository
                for name in mine:
                    safefs.unlink(efd, name)
                    safefs.unlink(efd, name[:-5] + ".bundle")
                return
            with store.lock(layout.git_lock(sandbox)):
                for name in mine:
                    try:
                        _take(topo, sandbox, efd, name, store, notify)
                    finally:
                        safefs.unlink(efd, name)
                        safefs.unlink(efd, name[:-5] + ".bundle")
        finally:
            os.close(efd)
    finally:
        os.close(pfd)


class _Manifest:
    def __init__(self):
        self.rel, self.refs, self.head = "", [], None


def parse_manifest(data):
    """The export list a sandbox wrote, strictly checked; raises ValueError on anything odd."""
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].startswith("gitdir "):
        raise ValueError("no gitdir line")
    out = _Manifest()
    out.rel = lines[0][len("gitdir "):]
    for line in lines[1:]:
        parts = line.split(" ")
        if parts[0] == "ref" and len(parts) == 4 and _SHA.match(parts[1]) and _SHA.match(parts[2]) \
                and _ref_ok(parts[3]):
            out.refs.append((parts[3], parts[1], None if _ZERO.match(parts[2]) else parts[2]))
        elif parts[0] == "head" and len(parts) in (2, 3) and out.head is None \
                and all(_SHA.match(p) or _ref_ok(p, heads_only=True) for p in parts[1:]):
            out.head = (parts[1], parts[2] if len(parts) == 3 else None)
        else:
            raise ValueError(f"unexpected line {line[:80]!r}")
    return out


def _ref_ok(name, heads_only=False):
    prefixes = ("refs/heads/",) if heads_only else ("refs/heads/", "refs/tags/")
    if not name.startswith(prefixes) or len(name) > 1024:
        return False
    return gittopo.ref_problem(name.split("/", 2)[2]) is None


def _take(topo, sandbox, efd, name, store, notify):
    try:
        m = parse_manifest(safefs.read(efd, name) or b"")
    except (ValueError, UnicodeDecodeError, OSError) as e:
        notify(f"WARNING: ignored what sandbox {sandbox} exported ({name}: {e}); nothing was taken")
        return
    if m.rel and m.rel not in gittopo.modules(topo.common):
        notify(f"WARNING: sandbox {sandbox} exported commits for an unknown submodule {m.rel[:80]!r}; ignored")
        return
    host = os.path.join(topo.common, m.rel) if m.rel else topo.common
    own = topo.own if not m.rel else host
    work = topo.root if not m.rel else None
    git = _Git(host)
    bundle = name[:-5] + ".bundle"
    incoming = f"refs/agentsh/incoming/{name[:-5]}"
    tmp_dir = os.path.join(store.root, "tmp")
    os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
    tmp = os.path.join(tmp_dir, f"{name[:-5]}.bundle")
    fetched = set()
    try:
        try:
            safefs.copy_out(efd, bundle, tmp, BUNDLE_LIMIT)
            have_bundle = True
        except FileNotFoundError:
            have_bundle = False
        except OSError as e:
            notify(f"WARNING: sandbox {sandbox}'s bundle was refused ({e}); its commits were not taken")
            return
        listed = set()
        if have_bundle and m.refs:
            status, out, _ = git("bundle", "list-heads", tmp)
            listed = {line.split(" ", 1)[1] for line in out.splitlines() if " " in line} if status == 0 else set()
        wanted = [ref for ref, _, _ in m.refs if ref in listed]  # a tip the host already has is left out
        if wanted:
            specs = [f"+{ref}:{incoming}/{ref}" for ref in wanted]
            status, _, err = git("-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true",
                                 "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                                 "--no-recurse-submodules", "--no-auto-gc", tmp, *specs)
            if status != 0:
                notify(f"WARNING: the commits sandbox {sandbox} made failed git's checks and were not taken: "
                       f"{_last(err)}")
                return
            fetched = set(wanted)
        head_before = git.commit(own, "HEAD")
        for ref, new, base in m.refs:
            if ref in fetched and git.value(f"{incoming}/{ref}") != new:
                notify(f"WARNING: sandbox {sandbox}'s bundle does not hold {ref} = {new}; not taken")
                continue
            if not git.has(new):
                continue
            _move(git, sandbox, ref, new, base, notify)
        if m.head is not None:
            _checkout(git, own, sandbox, *m.head, notify)
        head_after = git.commit(own, "HEAD")
        if head_before and head_after and head_before != head_after and work:
            status, _, err = git.at(own, "--work-tree", work, "read-tree", "-m", "-i", head_before, head_after)
            if status != 0:
                notify(f"the host's index was left as it was ({_last(err)}); 'git reset' makes it match HEAD")
    finally:
        for ref in fetched:
            git("update-ref", "-d", f"{incoming}/{ref}")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _move(git, sandbox, ref, new, base, notify):
    """Move the host's `ref` to `new` if it still is where the sandbox started (or `new` extends it)."""
    current = git.value(ref)
    if current == new:
        return
    if current == base or (ref.startswith("refs/heads/") and current and git.is_ancestor(current, new)):
        if git("update-ref", "-m", f"agentsh: from sandbox {sandbox}", ref, new, current or "0" * len(new))[0] == 0:
            return
        current = git.value(ref)
    aside = f"refs/agentsh/{sandbox}/{ref.removeprefix('refs/')}"
    if git.value(aside) == new:
        return
    git("update-ref", aside, new)
    notify(f"WARNING: {ref} moved on the host while sandbox {sandbox} moved it too; the sandbox's "
           f"commit is kept as {aside} ({new[:12]}): merge or reset to it yourself")


def _checkout(git, own, sandbox, new, base, notify):
    """Follow a checkout made inside (HEAD), if the host's HEAD is still where the sandbox found it."""
    status, out, _ = git.at(own, "symbolic-ref", "-q", "HEAD")
    current = out.strip() if status == 0 else git.commit(own, "HEAD")
    if current == new:
        return
    if current != base:
        notify(f"the sandbox checked out {new}, but the host's checkout moved meanwhile; host HEAD left at {current}")
        return
    if new.startswith("refs/heads/"):
        if git.value(new) is None:
            return
        git.at(own, "symbolic-ref", "-m", f"agentsh: checkout in sandbox {sandbox}", "HEAD", new)
    elif git.has(new):
        git.at(own, "update-ref", "--no-deref", "-m", f"agentsh: checkout in sandbox {sandbox}", "HEAD", new)


def _last(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no error text")[:300]


class _Git:
    """Host git on one of the host's own git dirs (named explicitly; nothing discovered from the tree)."""

    def __init__(self, git_dir):
        self.git_dir = git_dir
        # Stricter than ab-wt's git (app.worktree): this git moves commits across the sandbox boundary on
        # agentsh's own git dirs, so nothing in the environment may redirect it, add config or alternates,
        # or change what it discovers; every GIT_CONFIG_* goes too.
        self.env = gittopo.git_env(_GIT_ENV, "GIT_CONFIG_", LC_ALL="C", GIT_TERMINAL_PROMPT="0")

    def at(self, git_dir, *args):
        import subprocess  # lazy: not loaded by warm ab-up, which imports this module

        proc = subprocess.run(["git", f"--git-dir={git_dir}", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, env=self.env)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")

    def __call__(self, *args):
        return self.at(self.git_dir, *args)

    def value(self, ref):
        status, out, _ = self("rev-parse", "-q", "--verify", f"{ref}")
        return out.strip() if status == 0 and out.strip() else None

    def commit(self, git_dir, rev):
        status, out, _ = self.at(git_dir, "rev-parse", "-q", "--verify", f"{rev}^{{commit}}")
        return out.strip() if status == 0 and out.strip() else None

    def has(self, sha):
        return self("cat-file", "-e", sha)[0] == 0

    def is_ancestor(self, a, b):
        return self("merge-base", "--is-ancestor", a, b)[0] == 0
