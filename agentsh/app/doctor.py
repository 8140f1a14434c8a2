"""Checks that tell a user what stands between them and a working sandbox.

Each check returns a Check: a name, ok / warn / fail, what was found, and the
fix. Checks never change anything; the CLI prints them or emits JSON.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

from agentsh.base import layout, paths
from agentsh.base.errors import AgentshError
from agentsh.base.lock import Timeout
from agentsh.base.state import Store
from agentsh.creds import vault as creds
from agentsh.host import project, rootless
from agentsh.host.engine import COMPAT_OPT_OUT, Engine, compat_conf, which
from agentsh.policy import agents, config
from agentsh.sandbox import execd, gitbridge, isolation
from agentsh.sandbox import image as images
from agentsh.sandbox.spec import host_ca_bundle

OK, WARN, FAIL = "ok", "warn", "fail"
LOCAL_CA_DIRS = ("/usr/local/share/ca-certificates", "/etc/pki/ca-trust/source/anchors")


class Check(dict):
    def __init__(self, name, status, detail, fix=""):
        super().__init__(name=name, status=status, detail=detail, fix=fix)


def run_checks(engine_factory=None, run_container=True, fresh=False, store=None):
    """All checks in order; later ones are skipped when an earlier one rules them out.

    Cheap on purpose (under a second or so with the image present): the
    engine's facts are asked for in parallel, the rootless prerequisites are
    read from files, and the throwaway start is remembered once it passed
    (sandbox.image.probe_key: engine, its settings, this boot, the image
    id); `fresh` starts one again anyway.
    """


    checks = []
    try:
        cfg = config.load()
        checks.append(Check("config", OK, f"{paths.user_config_file()} "
                            f"{'is valid' if os.path.exists(paths.user_config_file()) else 'absent (defaults)'}"))
    except AgentshError as e:
        checks.append(Check("config", FAIL, e.message, e.fix or "fix the file"))
        return checks
    engine = (engine_factory or Engine)(cfg["engine"])
    try:
        engine.exe
        with ThreadPoolExecutor(3) as pool:  # each is an engine process of its own: ask at once
            asked = [pool.submit(engine.info), pool.submit(engine.image_inspect, cfg["image"]),
                     pool.submit(images.engine_version, engine)]
        info, image_info, version = (f.result() for f in asked)
    except AgentshError as e:
        checks.append(Check("engine", FAIL, e.message, e.fix or ""))
        return checks
    host = info.get("host", info.get("Host", {})) if isinstance(info, dict) else {}
    rootless = (host.get("security") or {}).get("rootless", engine.rootless)
    if not engine.is_podman and isinstance(info, dict):  # Docker says so among its security options
        rootless = any("rootless" in str(o) for o in info.get("SecurityOptions") or ()) or engine.rootless
    where = f", remote: {engine.remote}" if engine.remote else ""
    checks.append(Check("engine", OK if rootless else WARN,
                        f"{engine.name} {version or ''} at {engine.exe}, {'rootless' if rootless else 'rootful'}{where}"
                        .replace("  ", " "),
                        "" if rootless else "run as an ordinary user for rootless Podman (see docs/security.md)"))
    if engine.is_podman and rootless:
        checks.append(rootless_check())
        checks.append(storage_check(info))
    checks.append(image_check(cfg["image"], image_info))
    image_ok = checks[-1]["status"] != FAIL
    if image_ok:
        checks.append(image_age_check(cfg["image"], image_info))
    present = None
    if run_container and image_ok:
        check, present = runtime_check(engine, cfg, image_info, version, store or Store(), fresh)
        checks.append(check)
    if engine.is_podman:
        checks.append(compat_check(engine))
    checks.append(exec_server_check())
    checks.append(gvisor_check(engine, cfg, cfg["image"] if run_container and image_ok else None))
    checks.append(half_made_check(engine))
    checks.append(ca_check(cfg["ca_bundle"]))
    checks.append(state_check())
    checks.append(key_check())
    checks.append(hook_check())
    if run_container and image_ok and checks_passed(checks, "runtime"):
        checks += agent_checks(cfg, present)
    return checks


def checks_passed(checks, name):
    return any(c["name"] == name and c["status"] == OK for c in checks)


def rootless_check():
    """What rootless Podman needs from the host that only root can give, read from files (no engine call)."""

    found = rootless.problems()
    if found:
        message, fix = rootless.summary(found)
        return Check("rootless", FAIL, message, f"once, as root: {fix}")
    return Check("rootless", OK, "subordinate ids, newuidmap/newgidmap, slirp4netns or pasta, /dev/net/tun: "
                 "all there")


NATIVE_OVERLAY_KERNEL = (5, 13)  # unprivileged overlay mounts that rootless Podman can use


def storage_check(info):
    """Rootless storage on vfs copies the whole image for every container: flag it with the switch to overlay."""
    store = info.get("store", info.get("Store", {})) if isinstance(info, dict) else {}
    driver = store.get("graphDriverName") or store.get("GraphDriverName") or ""
    if driver != "vfs":
        return Check("storage", OK, f"{driver or 'unknown'} storage driver")
    return Check("storage", WARN, "rootless storage uses the vfs driver: every new sandbox is a full copy of the "
                 "image (~2 GB, ~30 s) and each takes that much disk", overlay_fix())


def overlay_fix(release=None):
    """The commands that move this user's Podman storage to overlay (native, or fuse-overlayfs on old kernels)."""

    release = release or os.uname().release
    try:
        kernel = tuple(int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        kernel = (0, 0)
    text = '[storage]\\ndriver = "overlay"\\n'
    steps = []
    if kernel < NATIVE_OVERLAY_KERNEL:
        text += '[storage.options.overlay]\\nmount_program = "/usr/bin/fuse-overlayfs"\\n'
        if not which("fuse-overlayfs"):
            steps.append(rootless.install_command("fuse-overlayfs"))
    conf_dir = os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "containers")
    conf = os.path.join(conf_dir, "storage.conf")
    if os.path.exists(conf):
        steps.append(f'set driver = "overlay" under [storage] in {conf}'
                     + ("" if kernel >= NATIVE_OVERLAY_KERNEL else ' (and mount_program = "/usr/bin/fuse-overlayfs" '
                        "under [storage.options.overlay])"))
    else:
        steps.append(f"mkdir -p {conf_dir} && printf '{text}' > {conf}")
    steps.append("podman system reset -f && ab-image build")
    return " && ".join(steps) + " (the reset removes this user's images and containers)"


def compat_check(engine):
    """Whether agentsh applies its own Podman settings on this host (runc, lower ulimits), and why."""
    if engine.compat:
        return Check("engine settings", OK, f"this host's Podman cannot start containers with its defaults; "
                     f"agentsh applies {compat_conf()} (opt out: {COMPAT_OPT_OUT}=0)")
    if os.environ.get("CONTAINERS_CONF"):
        return Check("engine settings", OK, f"CONTAINERS_CONF={os.environ['CONTAINERS_CONF']} (yours)")
    return Check("engine settings", OK, "Podman's own defaults")


def half_made_check(engine):
    """Sandboxes whose container exists only in the engine's storage (an ab-up killed half-way)."""

    try:
        names = [n for n in engine.storage_only("ab-") if n.startswith("ab-")]
    except AgentshError as e:
        return Check("sandboxes", WARN, f"cannot list the engine's storage: {e.message}")
    if not names:
        return Check("sandboxes", OK, "no half-made sandbox")
    return Check("sandboxes", WARN, f"half-made (only in the engine's storage, after an interrupted ab-up): "
                 f"{', '.join(names)}", "run 'ab-up' (it removes and remakes it) or 'ab-down --rm' in its project, "
                 f"or: podman rm -f {' '.join(names)}")


def exec_server_check():
    """Whether sandboxes get the exec server (fast ab-exec) or the engine's exec, and why."""
    lib = gitbridge.lib_dir()
    if execd.available(lib):
        return Check("exec server", OK, "built: ab-exec talks to each sandbox's own server")
    try:
        with open(os.path.join(lib, execd.MISSING)) as f:
            why = f.read().strip()
    except OSError:
        why = "not built yet (the next ab-up builds it)"
    return Check("exec server", WARN, f"not available: {why}; ab-exec uses the engine's exec",
                 "install a C compiler with static libc (Debian: apt-get install gcc libc6-dev), "
                 f"then: rm -r {lib}; ab-up --recreate")


def gvisor_check(engine, cfg, image=None):
    """gVisor's runsc for isolation = "gvisor": present, its version and platform, and (given `image`) a real start."""
    wanted = cfg.get("isolation") == isolation.GVISOR
    path = isolation.runsc()
    if path is None:
        if wanted:
            return Check("gvisor", FAIL, "isolation = \"gvisor\" but gVisor's runsc is not installed", isolation.RUNSC_FIX)
        return Check("gvisor", OK, "runsc not installed (only isolation = \"gvisor\" needs it: apt-get install runsc)")
    if not engine.is_podman:
        return Check("gvisor", FAIL if wanted else OK, f"runsc at {path}, but {engine.name} runs only the runtimes its "
                     "daemon registers: isolation = \"gvisor\" needs Podman", "set engine = \"podman\"" if wanted else "")
    about = f"{isolation.version(path) or 'runsc (version unknown)'} at {path}, platform ptrace (runsc's default)"
    if image is None or not wanted:  # a start costs a second or more: only where the config asks for gVisor
        return Check("gvisor", OK, about + ("" if wanted else "; isolation = \"container\" (the default)"))
    error, release = isolation.probe(engine, image)
    if error is not None:
        return Check("gvisor", FAIL if wanted else WARN, f"{about}; a container does not start under it: "
                     f"{error.message}", error.fix or "see docs/security.md, \"A second kernel\"")
    return Check("gvisor", OK, f"{about}; a container from {image} started on gVisor's kernel {release}")


def image_check(image, info):
    if info:
        return Check("image", OK, f"{image} is present")
    return Check("image", FAIL, f"{image} is not there", "build it: ab-image build")


def runtime_check(engine, cfg, image_info, version, store, fresh=False):
    """A throwaway container from the image, the proof that starts work, remembered once it passed.

    Returns (check, the agent programs the image has, or None when unknown).
    """

    image = cfg["image"]
    key = images.probe_key(engine, image_info.get("Id", ""), version)
    record = None if fresh else images.remembered_probe(store, image, key)
    if record is not None:
        return Check("runtime", OK, f"a container from {image} started ({record.get('checked', '?')}; the pass is "
                     "remembered for this image, engine and boot; --fresh starts one again)"), record.get("present")
    error, present = images.probe(engine, image, agent_programs(cfg))
    if error is not None:
        return Check("runtime", FAIL, error.message, error.fix or ""), None
    if image_info.get("Id"):
        images.remember_probe(store, image, key, present)
    return Check("runtime", OK, f"a throwaway container from {image} started"), present


def agent_programs(cfg):

    return [p for p in (agents.profile(n, cfg).program for n in agents.names(cfg) if n != agents.SHELL) if p]


def local_ca_certificates():
    found = []
    for d in LOCAL_CA_DIRS:
        for root, _, files in os.walk(d):
            found += [os.path.join(root, f) for f in files if f.endswith((".crt", ".pem"))]
    return found


def ca_check(setting):
    """Detect a host that trusts extra CAs (a TLS-intercepting proxy, usually)."""
    local = local_ca_certificates()
    extra = os.environ.get("SSL_CERT_FILE") or os.environ.get("NODE_EXTRA_CA_CERTS")
    needs_host = bool(local or extra)
    why = (f"this host trusts {len(local)} local CA certificate(s) ({', '.join(local[:2])})" if local
           else f"SSL_CERT_FILE/NODE_EXTRA_CA_CERTS is set ({extra})" if extra else "no local CAs")
    if setting == "image":
        if needs_host:
            return Check("ca_bundle", WARN, f"ca_bundle = \"image\" but {why}: HTTPS inside will likely fail",
                         "set ca_bundle = \"host\" in config.toml")
        return Check("ca_bundle", OK, "the image's own CA certificates (no local CAs on this host)")
    bundle = host_ca_bundle() if setting in ("auto", "host") else os.path.expanduser(setting)
    if bundle and os.path.isfile(bundle):
        return Check("ca_bundle", OK, f"sandboxes and builds trust {bundle}; {why}")
    return Check("ca_bundle", FAIL if needs_host else WARN, f"no CA bundle found for ca_bundle = {setting!r}; {why}",
                 "set ca_bundle to your PEM bundle's path")


def state_check():
    store = Store()
    try:
        os.makedirs(store.root, mode=0o700, exist_ok=True)
        probe = store.path(".doctor-probe")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        return Check("state", FAIL, f"{store.root} is not writable: {e.strerror}", "fix its ownership or permissions")
    try:
        store.lock(timeout=2).acquire()
        store.lock().release()
    except Timeout:
        return Check("state", WARN, f"{store.root}: the lock is held by another agentsh process",
                     "wait for it, or find it with: fuser " + store.path(layout.lock_file(layout.STATE_LOCK)))
    return Check("state", OK, f"{store.root} is writable and its lock is free")


IMAGE_MAX_AGE_DAYS = 30


def image_age_check(image, info):
    """An old image means old agent CLIs and unpatched packages."""

    info = info or {}
    created = info.get("Created", "")
    try:
        # "2024-05-01T10:20:30.123456789Z" or with an offset: the date and time are enough
        stamp = time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except (TypeError, ValueError):
        return Check("image_age", WARN, f"cannot tell when {image} was built ({created or 'no date'})")
    days = int((time.time() - stamp) // 86400)
    if days > IMAGE_MAX_AGE_DAYS:
        return Check("image_age", WARN, f"{image} was built {days} days ago: its agent CLIs and packages are old",
                     "rebuild it: ab-image build --refresh")
    return Check("image_age", OK, f"{image} was built {days} day(s) ago")


def key_check():
    """The credential key (or passphrase parameters) must be the user's alone."""
    mode = creds.key_mode()
    if mode is None:
        return Check("credential_key", OK, "no credential cache yet (ab-creds creates the key on first use)")
    name = creds.PASSPHRASE_FILE if mode == "passphrase" else creds.KEY_FILE
    path = creds._config_path(name)
    try:
        creds._read_private(path, "credential key file" if mode == "key" else "passphrase parameters file")
    except creds.CredentialError as e:
        return Check("credential_key", FAIL, e.message, e.fix or "")
    return Check("credential_key", OK, f"{path} is readable by you alone")


HOOK_FILES = {"bash": "~/.bashrc", "zsh": "~/.zshrc", "xonsh": "~/.xonshrc"}


def hook_check(environ=None):
    """Is the cd hook loaded in the shell that runs us (it exports AGENTSH_SESSION), or at least installed?"""
    environ = os.environ if environ is None else environ
    shell = os.path.basename(environ.get("SHELL", ""))
    if "XONSH_VERSION" in environ:
        shell = "xonsh"
    rc = HOOK_FILES.get(shell)
    if rc is None:
        return Check("hook", WARN, f"shell {shell or '(unknown: $SHELL is unset)'} has no agentsh hook",
                     "use bash, zsh or xonsh for the cd hook (see docs/shell.md); ab-exec works everywhere")
    line = "xontrib load agentsh" if shell == "xonsh" else f'eval "$(ab-hook {shell})"'
    if environ.get("AGENTSH_SESSION"):
        return Check("hook", OK, f"the {shell} hook is loaded in this shell")
    path = os.path.expanduser(rc)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    if "ab-hook" in text or "xontrib load agentsh" in text:
        return Check("hook", WARN, f"the {shell} hook is in {rc} but not loaded in this shell",
                     "open a new shell, or run: " + line)
    return Check("hook", WARN, f"the {shell} hook is not installed", f"add to {rc}: {line}")


def agent_checks(cfg, present):
    """Each agent profile: its program in the image (as the runtime check's start found it) and its credentials."""

    profiles = [agents.profile(n, cfg) for n in agents.names(cfg) if n != agents.SHELL]
    present = None if present is None else set(present)
    try:
        here = project.find()
    except AgentshError:
        here = None
    checks = []
    for p in profiles:
        problems, fixes = [], []
        if present is not None and p.program not in present:
            problems.append(f"{p.program} is not in {cfg['image']}")
            fixes.append(f"install it in the sandbox ({p.install})" if p.install else "use an image that has it")
        if p.credentials:
            try:
                found = [n for n in p.credentials if creds.find(n, here) is not None]
            except AgentshError as e:
                found, problems = [], problems + [e.message]
            if not found:
                problems.append(f"no credential stored ({' or '.join(p.credentials)})")
                fixes.append(f"ab-creds import {p.imports[0]}" if p.imports else "ab-creds set NAME")
        if problems:
            checks.append(Check(f"agent:{p.name}", WARN, "; ".join(problems), "; ".join(fixes)))
        else:
            have = f"; credentials: {', '.join(found)}" if p.credentials else ""
            checks.append(Check(f"agent:{p.name}", OK, f"{p.program} is in the image{have}"))
    return checks
