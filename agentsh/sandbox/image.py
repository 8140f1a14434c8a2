"""The default sandbox image: choosing its base, building it, listing images.

`build()` makes `localhost/agentsh:latest` from the Containerfile shipped in
`agentsh/data`. The base is a registry image (Debian bookworm-slim) by default;
with `bootstrap=True`, or when the registry cannot be reached, it is a Debian
root filesystem made here and imported as `localhost/agentsh-base:bookworm`
(reused until `refresh=True`): with mmdebstrap where it is installed, which
needs no root (`--mode=unshare`, the same subordinate ids rootless Podman
uses), else with debootstrap as root.

`probe()` starts one throwaway container from an image and lists which of
the given programs it holds; `ab doctor` and a finished build remember a
passed probe (keyed on the engine, its settings, the boot and the image id),
so the next `ab doctor` need not start a container from a 2 GB image again.

The host's CA bundle (config `ca_bundle`) reaches the RUN steps as a build
secret, so a build works behind TLS-intercepting proxies without the bundle
ending up in the image.
"""

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque

from agentsh.base import layout
from agentsh.base.errors import AgentshError, EngineError, StateError, UsageError
from agentsh.host import rootless
from agentsh.host.engine import RootlessSetup, which
from agentsh.policy import agents
from agentsh.policy.agents import _q
from agentsh.policy.config import DEFAULT_IMAGE
from agentsh.sandbox.spec import ca_bundle_source

REGISTRY_BASE = "docker.io/library/debian:bookworm-slim"
LOCAL_BASE = "localhost/agentsh-base:bookworm"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
CA_SECRET = "ca_bundle"
LIST_REFERENCE = "localhost/agentsh*"
LABEL_IMAGE = "io.agentsh.image"
# mmdebstrap leaves no host name or resolver of the build host in the base.
MMDEBSTRAP_HOOK = '--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf"'
# The environment a bootstrapped base gets (a registry image brings its own).
BASE_CHANGES = (
    "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD=["/bin/bash"]',
    f"LABEL={LABEL_IMAGE}=base",
)
# Seconds an engine may take before it is stopped (a build fetches ~1 GB).
PULL_TIMEOUT = 900
BUILD_TIMEOUT = 3600
REFERENCE = re.compile(r"[a-z0-9]+([._/-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
                       r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?\Z")
# Lines worth keeping on screen: the engine's steps and debootstrap's phases.
STEP_LINE = re.compile(r"(STEP \d+/\d+: |Step \d+/\d+ : |#\d+ \[.*\d+/\d+\] |COMMIT |I: |W: |E: )")
DEBOOTSTRAP_PACKAGE_LINE = re.compile(
    r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) [a-z0-9][a-z0-9+.:-]*(\.\.\.| [0-9]\S*)\Z")


def containerfile():
    """Path of the shipped Containerfile."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "Containerfile")


def is_step_line(line):
    """True for lines that mark progress (build steps, debootstrap phases)."""
    return bool(STEP_LINE.match(line)) and not DEBOOTSTRAP_PACKAGE_LINE.match(line)


def check_reference(ref, flag):
    if not REFERENCE.match(ref or ""):
        raise UsageError(f"{flag} {ref!r} is not a valid image name",
                         "use lowercase NAME[:TAG], e.g. localhost/agentsh:dev")
    return ref


def check_mirror(url):
    url = (url or "").rstrip("/")
    if not re.match(r"https?://[^\s/]+(/\S*)?\Z", url):
        raise UsageError(f"--mirror {url!r} is not an http(s) URL", f"e.g. --mirror {DEFAULT_MIRROR}")
    return url


def have_debootstrap():
    return which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.access(p, os.X_OK)), None)


def have_mmdebstrap():

    return which("mmdebstrap") or next(
        (p for p in ("/usr/bin/mmdebstrap", "/usr/sbin/mmdebstrap") if os.access(p, os.X_OK)), None)


def bootstrap_tool():
    """(name, path) of what makes the Debian base here: mmdebstrap (any user), else debootstrap (root only)."""
    mm = have_mmdebstrap()
    if mm:
        return "mmdebstrap", mm
    deb = have_debootstrap()
    if deb and os.geteuid() == 0:
        return "debootstrap", deb
    return None


def bootstrap_problem():
    """(message, fix) when no Debian base can be made here (no tool, or no user namespace), else None."""

    tool = bootstrap_tool()
    if tool is None:
        if os.geteuid() == 0:
            return ("making a Debian base needs mmdebstrap or debootstrap, and neither is installed",
                    f"{rootless.install_command('mmdebstrap')}, or build on a registry image with --base IMAGE")
        return ("making a Debian base without root needs mmdebstrap (debootstrap needs root), which is not "
                "installed", f"{rootless.install_command('mmdebstrap')}, then run 'ab-image build' again; or "
                "build on an image you have with --base IMAGE")
    if tool[0] == "mmdebstrap" and os.geteuid() != 0:
        found = rootless.userns_problems()
        if found:
            message, fix = rootless.summary(found)
            return f"making a Debian base without root (mmdebstrap --mode=unshare) needs {message}", \
                f"fix (once, as root): {fix}"
    return None


def source_lines(mirror):
    """apt's sources for the base: the suite, its updates and (from Debian's own mirror) security."""
    lines = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
    if mirror == DEFAULT_MIRROR:
        lines.append(f"deb {SECURITY_MIRROR} {SUITE}-security main")
    return lines


def stream_host(argv, on_line=None, keep=60):
    """Run a host command (debootstrap, tar), passing each output line to on_line.

    Returns (status, the last `keep` lines).
    """
    tail = deque(maxlen=keep)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        raise AgentshError(f"{argv[0]}: not found", "install it") from None
    try:
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n").rsplit("\r", 1)[-1]
                tail.append(line)
                if on_line:
                    on_line(line)
        return proc.wait(), list(tail)
    except BaseException:
        # Let it run its own clean-up (debootstrap unmounts what it mounted).
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
            proc.wait()
        raise


class Builder:
    """One `ab-image build`: the engine, the config, how to report progress.

    notify(message) gets one-line notices; on_line(line) every output line of
    the engine and of debootstrap. `host` runs host commands (tests replace it).
    """

    def __init__(self, engine, cfg, store=None, notify=None, on_line=None, host=None):
        self.engine = engine
        self.cfg = cfg
        self.store = store
        self.notify = notify or (lambda message: None)
        self.host = host or stream_host
        self.step = None  # the engine's last step line, for error messages
        self._on_line = on_line

    def on_line(self, line):
        if line.startswith(("STEP ", "Step ")):
            self.step = line
        if self._on_line:
            self._on_line(line)

    # -- the base -----------------------------------------------------------

    def choose_base(self, base=None, bootstrap=False, mirror=None, refresh=False):
        """(base image, how: "local" | "pulled" | "bootstrap"), making or pulling it if needed."""
        mirror = mirror or DEFAULT_MIRROR
        if bootstrap:
            return self.local_base(mirror, refresh), "bootstrap"
        ref = base or REGISTRY_BASE
        if not refresh and self.engine.image_exists(ref):
            return ref, "local"
        if base is None and not refresh and self.engine.image_exists(LOCAL_BASE):
            self.notify(f"using the local Debian base {LOCAL_BASE} (made by an earlier bootstrap); "
                        f"--refresh tries {REGISTRY_BASE} again")
            return LOCAL_BASE, "bootstrap"
        self.notify(f"pulling {ref}")
        try:
            self.engine.pull(ref, self.on_line, timeout=PULL_TIMEOUT)
            return ref, "pulled"
        except EngineError as e:
            if base is not None:
                raise EngineError(e.message, "check the name and your network, pick a local image "
                                  "with --base, or make a Debian base here with --bootstrap") from None
            problem = bootstrap_problem()
            if problem:
                raise EngineError(f"{e.message}; {problem[0]}", problem[1]) from None
            self.notify(f"{e.message}; making a local Debian base with {bootstrap_tool()[0]} instead")
        return self.local_base(mirror, refresh), "bootstrap"

    def local_base(self, mirror, refresh=False):
        """LOCAL_BASE, made here (mmdebstrap or debootstrap) unless it exists (and no refresh)."""
        lock = self.store.lock(layout.IMAGE_BASE_LOCK, timeout=1800) if self.store is not None else _nolock()
        with lock:
            if not refresh and self.engine.image_exists(LOCAL_BASE):
                return LOCAL_BASE
            self.bootstrap(mirror)
        return LOCAL_BASE

    def bootstrap(self, mirror):
        """Make a minimal Debian (mmdebstrap, else debootstrap as root) and import it as LOCAL_BASE."""
        problem = bootstrap_problem()
        if problem:
            raise AgentshError(*problem)
        name, path = bootstrap_tool()
        if name == "mmdebstrap":
            return self.mmdebstrap(path, mirror)
        return self.debootstrap(path, mirror)

    def mmdebstrap(self, mmdebstrap, mirror):
        """mmdebstrap straight into a tarball: in a user namespace of our own unless we are root."""

        mode = "root" if os.geteuid() == 0 else "unshare"
        work = tempfile.mkdtemp(prefix="agentsh-base-", dir=_big_tmp())
        try:
            tarball = os.path.join(work, "rootfs.tar")
            self.notify(f"making {LOCAL_BASE} with mmdebstrap --mode={mode} from {mirror} (under a minute)")
            status, tail = self.host([mmdebstrap, f"--mode={mode}", "--variant=minbase", "--format=tar",
                                      MMDEBSTRAP_HOOK, SUITE, tarball, *source_lines(mirror)], self.on_line)
            if status != 0:
                raise _failure("mmdebstrap failed", tail, "check the mirror (--mirror URL) and the network; "
                               "the lines above say which package or URL failed")
            self.engine.import_image(tarball, LOCAL_BASE, BASE_CHANGES)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def debootstrap(self, debootstrap, mirror):
        """debootstrap into a directory (as root), tidy it, pack it, import it."""

        work = tempfile.mkdtemp(prefix="agentsh-base-", dir=_big_tmp())
        try:
            rootfs = os.path.join(work, "rootfs")
            self.notify(f"making {LOCAL_BASE} with debootstrap from {mirror} (about half a minute)")
            status, tail = self.host([debootstrap, "--variant=minbase", SUITE, rootfs, mirror], self.on_line)
            if status != 0:
                raise _failure("debootstrap failed", tail, "check the mirror (--mirror URL) and the "
                               "network; the lines above say which package or URL failed")
            tidy_rootfs(rootfs, mirror)
            tarball = os.path.join(work, "rootfs.tar")
            status, tail = self.host(["tar", "--numeric-owner", "-C", rootfs, "-cf", tarball, "."], self.on_line)
            if status != 0:
                raise _failure("packing the Debian root filesystem failed", tail, "check free space in "
                               f"{os.path.dirname(work)} (set TMPDIR to use another directory)")
            self.engine.import_image(tarball, LOCAL_BASE, BASE_CHANGES)
        finally:
            if release_mounts(work):
                shutil.rmtree(work, ignore_errors=True)
            else:
                self.notify(f"left {work} in place: something is still mounted inside it")

    # -- the image ------------------------------------------------------------

    def remember_start(self, tag, image_id):
        """Start the new image once (as ab-doctor would) and remember the pass, so ab-doctor need not."""

        programs = [p for p in (agents.profile(n, self.cfg).program for n in agents.names(self.cfg)
                                if n != agents.SHELL) if p]
        error, present = probe(self.engine, tag, programs)
        if error is None:
            remember_probe(self.store, tag, probe_key(self.engine, image_id, engine_version(self.engine)), present)
        else:
            self.notify(f"{tag} is built, but a container from it does not start: {error}")

    def build(self, tag=DEFAULT_IMAGE, base=None, bootstrap=False, mirror=None, refresh=False, agents=True):
        """Build the image; returns its record (image, id, base, ...)."""
        if base and bootstrap:
            raise UsageError("--base and --bootstrap exclude each other",
                             "--bootstrap makes the base locally; --base names one to use")
        check_reference(tag, "--tag")
        if base:
            check_reference(base, "--base")
        if mirror:
            mirror = check_mirror(mirror)
        self.engine.exe  # a missing engine is the first thing to say
        if self.engine.is_podman and self.engine.rootless:

            found = rootless.problems()  # said now, not after minutes of bootstrapping and a failed RUN
            if found:
                message, fix = rootless.summary(found)
                raise EngineError(f"rootless {self.engine.name} cannot build here: {message}",
                                  f"fix (once, as root): {fix}")
        bundle = ca_bundle_source(self.cfg["ca_bundle"])
        started = time.monotonic()
        base_ref, how = self.choose_base(base, bootstrap, mirror, refresh)
        build_args = {"BASE": base_ref, "AGENTS": "1" if agents else "0"}
        if mirror:
            build_args["APT_MIRROR"] = mirror
        context = tempfile.mkdtemp(prefix="agentsh-build-")
        try:
            shutil.copyfile(containerfile(), os.path.join(context, "Containerfile"))
            self.notify(f"building {tag} on {base_ref}" + ("" if agents else " (without agent CLIs)"))
            try:
                self.engine.build(
                    context, tag, on_line=self.on_line, timeout=BUILD_TIMEOUT,
                    file=os.path.join(context, "Containerfile"), build_args=build_args,
                    secrets={CA_SECRET: bundle} if bundle else None,
                    labels={LABEL_IMAGE: "default", f"{LABEL_IMAGE}.base": base_ref,
                            f"{LABEL_IMAGE}.agents": "true" if agents else "false"},
                    no_cache=refresh)
            except EngineError as e:

                tail = getattr(e, "tail", None)
                if tail is None:
                    raise
                where = f" at {self.step.split(':', 1)[0]}" if self.step else ""
                if isinstance(e, RootlessSetup):  # the engine's "EOF" explained, with the fix
                    error = AgentshError(f"{self.engine.name} build of {tag} failed{where}: {e.message}", e.fix)
                    error.tail = list(tail)
                    raise error from None
                raise _failure(f"{self.engine.name} build of {tag} failed{where}", tail,
                               build_hint(tail, bundle), fallback=e.message) from None
        finally:
            shutil.rmtree(context, ignore_errors=True)
        info = self.engine.image_inspect(tag) or {}
        if self.store is not None and info.get("Id"):
            self.remember_start(tag, info["Id"])
        record = {
            "image": tag,
            "id": (info.get("Id") or "").removeprefix("sha256:")[:12],
            "size": info.get("Size"),
            "base": base_ref,
            "base_source": how,
            "agents": agents,
            "ca_bundle": bundle,
            "seconds": round(time.monotonic() - started, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if self.store is not None:
            self.store.write(f"images/{record_name(tag)}.json", record)
        return record


# -- a throwaway start, remembered -----------------------------------------------


def engine_version(engine):
    """The engine's version ("" when it does not say): part of what a remembered probe is keyed on."""
    fmt = "{{.Client.Version}}" if engine.is_podman else "{{.Server.Version}}"
    status, out, _ = engine.call("version", "--format", fmt, check=False)
    return out.strip() if status == 0 else ""


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def probe_key(engine, image_id, version):
    """What a passed probe depends on: the engine and its settings, this boot (device modes, sysctls), the image."""
    return {"engine": engine.exe, "version": version, "rootless": engine.rootless,
            "containers_conf": os.environ.get("CONTAINERS_CONF", ""), "boot": boot_id(), "image": image_id}


def probe(engine, image, programs=()):
    """Start one throwaway container from `image` (no network): (None, the programs it has) or (EngineError, None).

    One container answers both questions (does a start work, which agent
    programs are there), so a check costs one start: on vfs storage a start
    from the 2 GB default image copies all of it.
    """

    script = "; ".join([*(f"command -v {_q(p)} >/dev/null 2>&1 && echo {_q(p)}" for p in programs), "true"])
    status, out, err = engine.call("run", "--rm", "--pull=never", "--network=none", "--entrypoint", "sh",
                                   image, "-c", script, check=False)
    if status == 0:
        return None, sorted(set(out.splitlines()) & set(programs))
    again, _, err2 = engine.call("run", "--rm", "--pull=never", "--network=none", image, "true", check=False)
    if again == 0:  # it runs, but has no sh to ask
        return None, None
    return engine.error(err2 or err, "run"), None


def remembered_probe(store, image, key):
    """The probe record for `image` when it was made under `key`, else None."""

    try:
        record = store.read(layout.image_probe_record(record_name(image)))
    except StateError:
        return None
    return record if record and record.get("key") == key else None


def remember_probe(store, image, key, present):
    store.write(layout.image_probe_record(record_name(image)),
                {"key": key, "present": present, "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def tidy_rootfs(rootfs, mirror):
    """Trim a fresh debootstrap tree and point apt at the mirror (plus updates, security)."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/bootstrap.log", "etc/hostname", "etc/resolv.conf"):
        for path in glob.glob(os.path.join(rootfs, pattern)):
            if os.path.isfile(path) or os.path.islink(path):
                os.unlink(path)
    with open(os.path.join(rootfs, "etc/apt/sources.list"), "w") as f:
        f.write("\n".join(source_lines(mirror)) + "\n")


def mounts_under(path):
    """Mount points at or below path (deepest first), from /proc/self/mounts."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1:
                    target = fields[1].replace("\\040", " ")
                    if (target + "/").startswith(prefix):
                        found.append(target)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def release_mounts(path):
    """Unmount what an interrupted debootstrap left mounted (proc, sys, dev) under path.

    True when nothing is mounted there any more, so the tree can be removed
    without reaching into the host's /dev or /proc.
    """
    for target in mounts_under(path):
        subprocess.run(["umount", "-l", target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return not mounts_under(path)


def build_hint(tail, bundle):
    """What to try after a failed build, from its last lines."""
    text = "\n".join(tail).lower()
    if any(s in text for s in ("self-signed certificate", "self_signed_cert", "unable to get local issuer",
                               "certificate verify failed", "unable_to_get_issuer_cert")):
        if bundle:
            return (f"HTTPS failed certificate checks although {bundle} was given to the build; "
                    "if a proxy intercepts TLS, point config 'ca_bundle' at a bundle holding its CA")
        return ("HTTPS failed certificate checks (a TLS-intercepting proxy?): set config 'ca_bundle' to "
                "\"host\" or to a PEM file holding the proxy's CA, and build again")
    if any(s in text for s in ("temporary failure resolving", "could not resolve", "enotfound", "eai_again",
                               "network is unreachable", "connection timed out", "etimedout")):
        return "the network or a mirror could not be reached; check them, or try --mirror URL"
    if "no space left on device" in text:
        return "the disk is full; free space (e.g. 'podman image prune') and build again"
    return "the lines above show the failing step; fix the cause and run 'ab-image build' again"


ERROR_LINE = re.compile(r"(E: |npm ERR! |npm error |curl: \(\d+\)|fatal: |error: |ERROR: |.*: not found\Z"
                        r"|.*No space left on device)", re.IGNORECASE)


def failure_reason(tail, fallback=""):
    """The most telling line of a failed command's output."""
    lines = [t.strip() for t in tail if t.strip() and not t.startswith("Error: building at STEP")]
    for line in reversed(lines):
        if ERROR_LINE.match(line):
            return line
    for line in reversed(tail):
        if line.startswith("Error: building at STEP"):  # podman: ...: while running runtime: exit status N
            return line.rsplit(": ", 1)[-1]
    return fallback or (lines[-1] if lines else "")


def _failure(message, tail, fix, fallback=""):
    reason = failure_reason(tail, fallback).removeprefix("Error: ")
    error = AgentshError(f"{message}: {reason[-300:]}" if reason else message, fix)
    error.tail = list(tail)
    return error


def _big_tmp():
    """A directory for a root filesystem: $TMPDIR, else /var/tmp (often larger than /tmp)."""
    for d in (os.environ.get("TMPDIR"), "/var/tmp"):
        if d and os.path.isdir(d) and os.access(d, os.W_OK):
            return d
    return None


class _nolock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def record_name(tag):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)


def listing(engine):
    """agentsh images (localhost/agentsh*): name, id, created, size; one row per name."""
    rows = []
    for img in engine.images(LIST_REFERENCE):
        if engine.is_podman:
            names = [n for n in img.get("Names") or [] if n.startswith("localhost/agentsh")]
            created = img.get("Created")
            if isinstance(created, (int, float)):
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
            for name in names:
                rows.append({"name": name, "id": (img.get("Id") or "")[:12],
                             "created": created or img.get("CreatedAt", ""), "size": img.get("Size")})
        else:
            name = f"{img.get('Repository', '')}:{img.get('Tag', '')}"
            rows.append({"name": name, "id": (img.get("ID") or "").removeprefix("sha256:")[:12],
                         "created": img.get("CreatedAt", ""), "size": img.get("Size")})
    return sorted(rows, key=lambda r: r["name"])


def human_size(size):
    if not isinstance(size, (int, float)):
        return str(size or "")
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}".replace(".00 ", " ")
        size /= 1000
