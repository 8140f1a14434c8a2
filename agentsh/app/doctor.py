"""Checks that tell a user what stands between them and a working sandbox.

Each check returns a Check: a name, ok / warn / fail, what was found, and the
fix. Checks never change anything; the CLI prints them or emits JSON.
"""

import os

from agentsh.base import layout

OK, WARN, FAIL = "ok", "warn", "fail"
LOCAL_CA_DIRS = ("/usr/local/share/ca-certificates", "/etc/pki/ca-trust/source/anchors")


class Check(dict):
    def __init__(self, name, status, detail, fix=""):
        super().__init__(name=name, status=status, detail=detail, fix=fix)


def run_checks(engine_factory=None, run_container=True):
    """All checks in order; later ones are skipped when an earlier one rules them out."""
    from agentsh.base import paths
    from agentsh.base.errors import AgentshError
    from agentsh.host.engine import Engine
    from agentsh.policy import config

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
        info = engine.info()
    except AgentshError as e:
        checks.append(Check("engine", FAIL, e.message, e.fix or ""))
        return checks
    host = info.get("host", info.get("Host", {})) if isinstance(info, dict) else {}
    rootless = (host.get("security") or {}).get("rootless", engine.rootless)
    checks.append(Check("engine", OK if rootless else WARN,
                        f"{engine.name} at {engine.exe}, {'rootless' if rootless else 'rootful'}",
                        "" if rootless else "run as an ordinary user for rootless Podman (see docs/security.md)"))
    checks.append(image_check(engine, cfg["image"]))
    image_ok = checks[-1]["status"] != FAIL
    if image_ok:
        checks.append(image_age_check(engine, cfg["image"]))
    runtime_ok = False
    if run_container and image_ok:
        checks.append(runtime_check(engine, cfg["image"]))
        runtime_ok = checks[-1]["status"] == OK
    if engine.is_podman:
        checks.append(compat_check(engine))
    checks.append(exec_server_check())
    checks.append(half_made_check(engine))
    checks.append(ca_check(cfg["ca_bundle"]))
    checks.append(state_check())
    checks.append(key_check())
    checks.append(hook_check())
    if runtime_ok:
        checks += agent_checks(engine, cfg)
    return checks


def compat_check(engine):
    """Whether agentsh applies its own Podman settings on this host (runc, lower ulimits), and why."""
    from agentsh.host.engine import COMPAT_OPT_OUT, compat_conf

    if engine.compat:
        return Check("engine settings", OK, f"this host's Podman cannot start containers with its defaults; "
                     f"agentsh applies {compat_conf()} (opt out: {COMPAT_OPT_OUT}=0)")
    if os.environ.get("CONTAINERS_CONF"):
        return Check("engine settings", OK, f"CONTAINERS_CONF={os.environ['CONTAINERS_CONF']} (yours)")
    return Check("engine settings", OK, "Podman's own defaults")


def half_made_check(engine):
    """Sandboxes whose container exists only in the engine's storage (an ab-up killed half-way)."""
    from agentsh.base.errors import AgentshError

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
    from agentsh.sandbox import execd, gitbridge

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


def image_check(engine, image):
    if engine.image_exists(image):
        return Check("image", OK, f"{image} is present")
    return Check("image", FAIL, f"{image} is not there", "build it: ab-image build")


def runtime_check(engine, image):
    """Start a throwaway container from the image: the proof that runs work."""
    status, _, err = engine.call("run", "--rm", "--pull=never", "--network=none", image, "true", check=False)
    if status == 0:
        return Check("runtime", OK, "a throwaway container ran")
    e = engine.error(err, "run")
    return Check("runtime", FAIL, e.message, e.fix or "")


def local_ca_certificates():
    found = []
    for d in LOCAL_CA_DIRS:
        for root, _, files in os.walk(d):
            found += [os.path.join(root, f) for f in files if f.endswith((".crt", ".pem"))]
    return found


def ca_check(setting):
    """Detect a host that trusts extra CAs (a TLS-intercepting proxy, usually)."""
    from agentsh.sandbox.spec import host_ca_bundle

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
    from agentsh.base.lock import Timeout
    from agentsh.base.state import Store

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


def image_age_check(engine, image):
    """An old image means old agent CLIs and unpatched packages."""
    import time

    info = engine.image_inspect(image) or {}
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
    from agentsh.creds import vault as creds

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


def agent_checks(engine, cfg):
    """Each agent profile: its program in the image (one throwaway container) and its credentials."""
    from agentsh.base.errors import AgentshError
    from agentsh.creds import vault as creds
    from agentsh.host import project
    from agentsh.policy import agents

    profiles = [agents.profile(n, cfg) for n in agents.names(cfg) if n != agents.SHELL]
    probe = "; ".join(f"command -v {agents._q(p.program)} >/dev/null 2>&1 && echo {agents._q(p.name)}"
                      for p in profiles)
    status, out, err = engine.call("run", "--rm", "--pull=never", "--network=none", "--entrypoint", "sh",
                                   cfg["image"], "-c", probe + "; true", check=False)
    present = set(out.split()) if status == 0 else None
    try:
        here = project.find()
    except AgentshError:
        here = None
    checks = []
    for p in profiles:
        problems, fixes = [], []
        if present is not None and p.name not in present:
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
