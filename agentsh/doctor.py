"""Checks that tell a user what stands between them and a working sandbox.

Each check returns a Check: a name, ok / warn / fail, what was found, and the
fix. Checks never change anything; the CLI prints them or emits JSON.
"""

import os

OK, WARN, FAIL = "ok", "warn", "fail"
LOCAL_CA_DIRS = ("/usr/local/share/ca-certificates", "/etc/pki/ca-trust/source/anchors")


class Check(dict):
    def __init__(self, name, status, detail, fix=""):
        super().__init__(name=name, status=status, detail=detail, fix=fix)


def run_checks(engine_factory=None, run_container=True):
    """All checks in order; later ones are skipped when an earlier one rules them out."""
    from . import config, paths
    from .engine import Engine
    from .errors import AgentshError

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
    if run_container and checks[-1]["status"] == OK:
        checks.append(runtime_check(engine, cfg["image"]))
    checks.append(ca_check(cfg["ca_bundle"]))
    checks.append(state_check())
    return checks


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
    from .sandbox import host_ca_bundle

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
    from .lock import Timeout

    from .state import Store

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
                     "wait for it, or find it with: fuser " + store.path("locks/state.lock"))
    return Check("state", OK, f"{store.root} is writable and its lock is free")
