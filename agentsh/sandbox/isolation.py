"""Config `isolation`: the sandbox on the host's kernel (a container, the default) or on gVisor's.

"gvisor" runs the same container under gVisor's runtime, runsc: the
sandbox's system calls are served by gVisor's own kernel (the Sentry), so a
host kernel bug reachable from a container is behind a second kernel. The
run arguments are the only difference, so a switch changes the spec (the
sandbox is recreated, its home volume kept) and nothing else a user sees.

runsc flags, and why (docs/security.md, "A second kernel"):

- `network=none` in network mode "none": gVisor's own loopback only, no
  use of the host's network stack at all.
- `network=host` in the other modes: gVisor's sockets are host sockets of
  the container's own network namespace (never the host's): there the egress
  proxy's handed-in listener, the DNS answerer and the steering rules work
  as under runc, and mode "full" gets the engine's network. (gVisor's own
  stack, `network=sandbox`, refuses the namespace rootful Podman gives it
  on hosts like these: "cannot run with network enabled in root network
  namespace".)
- `host-uds=create`: the exec server binds its socket in the host directory
  mounted for it, so ab-exec reaches it; `all` (also connecting to host
  sockets) only when an SSH agent socket is forwarded into the sandbox.
- `ignore-cgroups` for rootless Podman on cgroups v1, where no cgroup can
  be made (runc gets none there either).

Rootless, runsc cannot start in the user namespace `--userns=keep-id`
makes ("error converting mounts"), so the sandbox runs as uid 0 of rootless
Podman's own namespace instead, which is the invoking user on the host:
files it writes in the project are the user's, as with keep-id; its
capabilities are the same short list as any root sandbox's (sandbox.spec).

Podman keeps a container's runtime but not `--runtime-flag` (a flag of the
one podman process that gets it): a later `podman start` or `restart` would
run runsc without them. So the runtime named is a two-line wrapper agentsh
writes in its data directory (never in a mount the sandbox can write),
`runtimes/<hash of its text>/runsc`, which runs the real runsc with these
flags; the same flags, the same file.
"""

import os

from agentsh.base.digest import sha256_hex
from agentsh.base.errors import ConfigError
from agentsh.base.layout import RUNTIMES_DIR
from agentsh.base.paths import data_dir
from agentsh.host.engine import which

CONTAINER, GVISOR = "container", "gvisor"
CHOICES = (CONTAINER, GVISOR)
RUNSC = "runsc"
RUNSC_FIX = "install it ('apt-get install runsc' on Debian and Ubuntu), or set isolation = \"container\""


def runsc():
    """The runsc executable, or None."""
    return which(RUNSC) or next((p for p in ("/usr/bin/runsc", "/usr/local/bin/runsc") if os.access(p, os.X_OK)),
                                None)


def cgroups_v2():
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def runsc_flags(engine, mode, ssh_agent=False):
    flags = ["--network=none" if mode == "none" else "--network=host",
             "--host-uds=all" if ssh_agent else "--host-uds=create"]
    if engine.rootless and not cgroups_v2():
        flags.append("--ignore-cgroups")
    return flags


def wrapper(path, flags):
    """(where the wrapper goes, its text): runsc at `path` with `flags`."""
    text = ("#!/bin/sh\n# agentsh: gVisor's runsc with the flags of isolation = \"gvisor\" (docs/security.md)\n"
            f"exec {path} {' '.join(flags)} \"$@\"\n")
    return os.path.join(data_dir(), RUNTIMES_DIR, sha256_hex(text)[:12], RUNSC), text


def run_args(cfg, engine, mode, ssh_agent=False):
    """(the `run` arguments config `isolation` adds, the runtime wrapper to install or None)."""
    if cfg.get("isolation", CONTAINER) != GVISOR:
        return [], None
    if not engine.is_podman:
        raise ConfigError(f"isolation = \"gvisor\" is not available with {engine.name}: Docker runs only the "
                          "runtimes its daemon registers",
                          "use Podman (engine = \"podman\"), or set isolation = \"container\"")
    path = runsc()
    if path is None:
        raise ConfigError("isolation = \"gvisor\" needs gVisor's runsc, which is not installed", RUNSC_FIX)
    target, text = wrapper(path, runsc_flags(engine, mode, ssh_agent))
    return ["--runtime", target], (target, text)


def install(runtime):
    """Write the runtime wrapper (target, text) unless it is there (one stat)."""
    if runtime is None:
        return
    target, text = runtime
    if os.path.isfile(target):
        return
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    tmp = f"{target}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


def version(path):
    """`runsc --version`'s first line ("runsc version 0.0~20221219.0"), or an empty string."""
    import subprocess  # lazy: only for ab-doctor

    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.splitlines() or [""])[0].strip()


def probe(engine, image):
    """Start one throwaway container from `image` under runsc (no network): (None, the kernel release it
    reports, "4.4.0" for gVisor's) or (an EngineError, None). The flags go on this one command line: a
    probe needs no wrapper, and ab-doctor writes nothing."""
    path = runsc()
    flags = [a for f in runsc_flags(engine, "none") for a in ("--runtime-flag", f[2:])]
    user = ["--user=0:0"] if engine.rootless else []
    status, out, err = engine.call(*flags, "run", "--rm", "--pull=never", "--network=none", "--runtime", path,
                                   *user, "--entrypoint", "sh", image, "-c", "uname -r", check=False, what="run")
    if status != 0:
        return engine.error(err, "run"), None
    return None, out.strip()
