"""Turning a project and its config into a container, and keeping them in step.

`spec()` is pure: config + project + engine facts -> the `run` arguments and a
hash of them. `up()` is idempotent: a running sandbox whose spec label matches
is reused after one inspect; a changed spec is recreated; creation happens
under a per-sandbox lock so concurrent `ab-up`s make exactly one container.
"""

import json
import os
import time

from agentsh.base import layout
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError, ConfigError, StateError
from agentsh.host import liveness
from agentsh.host.engine import NameInUse, NoSuchContainer

LABEL_MANAGED = "io.agentsh.managed"
LABEL_PROJECT = "io.agentsh.project"
LABEL_SPEC = "io.agentsh.spec"
LABEL_PUBLISH = "io.agentsh.publish"  # the `ab-up -p` ports, so later ups keep them
from agentsh.base.layout import CA_PATH, SANDBOX_HOME  # noqa: E402

CA_ENV = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO",
          "CURL_CA_BUNDLE")
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem")
# Capabilities kept after --cap-drop=all when the sandbox runs as root, and
# only then: enough for a root shell to own, chmod and chown files and for
# package managers to drop to their own users.
MIN_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID")
KEEPALIVE = ("sleep", "infinity")
RUNNING = "running"


def runs_as_root(run_args):
    """Whether a container made with run_args runs as uid 0, decided the way Podman decides it.

    The last --user wins; without one, keep-id runs as the invoking user and
    anything else as the image's user, taken to be root.
    """
    user = next((a[len("--user="):] for a in reversed(run_args) if a.startswith("--user=")), None)
    if user is None:
        return "--userns=keep-id" not in run_args
    return user.split(":")[0] in ("root", "0")


def cap_add_args(cfg, run_args):
    """The --cap-add flags that follow --cap-drop=all.

    Podman puts every --cap-add of a non-root user (and of keep-id) into all
    five capability sets, ambient included, so each process of that user and
    of every exec would hold them, and setuid(0) would work. A non-root
    sandbox therefore gets no --cap-add but what config cap_add names, and
    its bounding set is empty: an exec, even as root, gains nothing. Root
    gets MIN_CAPS (plus cap_add) in its effective, permitted and bounding
    sets, none inheritable or ambient.
    """
    wanted = {c.removeprefix("CAP_") for c in cfg["cap_add"]}
    if runs_as_root(run_args):
        wanted |= set(MIN_CAPS)
    return [f"--cap-add={c}" for c in sorted(wanted)]


class Spec:
    """What `run` needs: the argument list (minus the spec label) and its hash."""

    def __init__(self, name, project_root, image, run_args):
        self.name = name
        self.project_root = project_root
        self.image = image
        self.hash = sha256_hex(json.dumps(run_args))[:16]
        self.run_args = run_args

    def full_run_args(self):
        """run arguments with the spec label, ready for `run -d`."""
        *flags, image = self.run_args[: -len(KEEPALIVE)]
        return [*flags, "--label", f"{LABEL_SPEC}={self.hash}", image, *KEEPALIVE]


def host_ca_bundle():
    """The host's own CA bundle (its real path), if one of the usual files is a PEM bundle; else None."""
    from agentsh.policy.config import ca_bundle_copy

    for path in HOST_CA_BUNDLES:
        if os.path.isfile(path):
            real = os.path.realpath(path)
            try:
                ca_bundle_copy(real, "host")
            except ConfigError:
                continue  # not a PEM bundle agentsh could mount: look further
            return real
    return None


def ca_bundle_source(setting):
    """Host file to mount as the sandbox's CA bundle (and give `ab-image build`), or None ("image").

    Checked like user input: a regular file (opened without following a
    symlink into anything else) holding PEM certificates only, so a setting
    such as "/etc/shadow" is refused. What is returned is agentsh's own copy
    of exactly the bytes checked (config.ca_bundle_copy), never the file named.
    """
    from agentsh.policy.config import ca_bundle_copy

    if setting == "image":
        return None
    if setting in ("auto", "host"):
        found = host_ca_bundle()
        if found is None:
            if setting == "host":
                raise ConfigError("ca_bundle = \"host\" but no CA bundle was found on this host",
                                  "set ca_bundle to the bundle's path, or to \"image\"")
            return None
        return ca_bundle_copy(found, setting)
    return ca_bundle_copy(os.path.realpath(os.path.expanduser(setting)), setting)


def _mount_arg(arg):
    """A `-v` value (or flag) whose host path holds no ':' that would split it differently."""
    if arg.startswith("-") or arg.count(":") <= 2:
        return arg
    raise AgentshError(f"{arg.split(':')[0]} contains ':', which container engines cannot mount",
                       "rename or move the directory")


def _mount_source(path):
    if ":" in path:
        raise AgentshError(f"{path} contains ':', which container engines cannot mount",
                           "rename or move the directory")
    return path


def spec(project, cfg, engine, publish=(), topo=None):
    """The container spec for a project under a config (pure, no engine call).

    `publish`: `ab-up -p` ports, kept with the sandbox (LABEL_PUBLISH) until the next `-p`.
    `topo`: the project's recorded git topology (gittopo.recorded); default: what the disk says.
    """
    root = _mount_source(project.root)
    args = [
        "--name", project.sandbox,
        "--hostname", project.slug,
        "--label", f"{LABEL_MANAGED}=true",
        "--label", f"{LABEL_PROJECT}={root}",
        "--init",
        "--cap-drop=all",  # its --cap-add flags follow once the user is known
        "--security-opt=no-new-privileges",
        f"--pids-limit={cfg['pids']}",
    ]
    if cfg["memory"]:
        args.append(f"--memory={cfg['memory']}")
    if cfg["cpus"]:
        args.append(f"--cpus={cfg['cpus']}")
    if engine.is_podman:
        args.append("--pull=never")
        args.append("--userns=keep-id" if engine.rootless else f"--user={os.getuid()}:{os.getgid()}")
    elif not engine.rootless:
        args.append(f"--user={os.getuid()}:{os.getgid()}")
    from agentsh.egress import network
    from agentsh.policy import lockdown

    net_args, net_env = network.run_args(cfg)  # none / allow / learn: loopback only (+ proxy env)
    args += net_args
    locked = lockdown.is_locked(cfg)
    args += ["-v", f"{root}:{root}" + lockdown.project_mount_suffix(project, cfg)]  # lockdown: copy-on-write
    # The host's git dir read-only, a private one of the sandbox's own at its path (gitbridge).
    from agentsh.host import gittopo
    from agentsh.sandbox import gitbridge

    git_args, git_env = gitbridge.spec_args(topo or gittopo.detect(project.root), project.sandbox, locked)
    args += [_mount_arg(a) for a in git_args]
    if locked:  # an ephemeral home: nothing persists, nothing of other runs is seen
        owner = "U" if engine.is_podman else f"uid={os.getuid()},gid={os.getgid()}"
        args += ["--tmpfs", f"{SANDBOX_HOME}:rw,nosuid,nodev,mode=0700,{owner}"]
    else:
        args += ["-v", f"{project.home_volume}:{SANDBOX_HOME}"]
    for m in cfg["mounts"]:
        host, _, rest = m.partition(":")
        host = os.path.realpath(os.path.expanduser(host))
        if not os.path.exists(host):
            raise ConfigError(f"mounts: {host} does not exist", "create it or remove the entry from 'mounts'")
        args += ["-v", f"{_mount_source(host)}:{rest}"]
    extra = _additions(project, cfg, publish)  # ports, caches, instructions, devcontainer
    args += extra.args
    if extra.user:
        args = [a for a in args if not a.startswith("--user=")] + [f"--user={extra.user}"]
    at = args.index("--cap-drop=all") + 1
    args[at:at] = cap_add_args(cfg, args)
    env = {**extra.env, **net_env, **git_env, "HOME": SANDBOX_HOME, "AGENTSH_SANDBOX": project.sandbox, "AGENTSH_PROJECT": root}
    bundle = ca_bundle_source(cfg["ca_bundle"])
    if bundle:
        args += ["-v", f"{_mount_source(bundle)}:{CA_PATH}:ro"]
        env.update(dict.fromkeys(CA_ENV, CA_PATH))
    from agentsh.creds.delivery import sandbox_additions

    secrets_args, secrets_env = sandbox_additions(project, engine)  # secrets tmpfs, SSH agent socket
    if locked:
        secrets_args, secrets_env = lockdown.without_ssh_agent(secrets_args, secrets_env)
    args += secrets_args
    env.update(secrets_env)
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    args += ["-w", root, extra.image, *KEEPALIVE]
    out = Spec(project.sandbox, root, extra.image, args)
    out.build, out.post_create, out.publish = extra.build, extra.post_create, list(publish)
    out.topo, out.locked = topo, locked
    return out


class _Additions:
    """Spec pieces from ports, shared caches, the instructions file and a devcontainer.json."""

    def __init__(self, image):
        self.args, self.env, self.image, self.user = [], {}, image, None
        self.build = None  # {"context", "file", "args", "tag"} when the image is built from a Dockerfile
        self.post_create = []  # argv lists run once after the container is made


def _additions(project, cfg, publish):
    from agentsh.policy import caches, ports
    from agentsh.sandbox import instructions

    extra = _Additions(cfg["image"])
    dev = cfg.devcontainer
    wanted_ports = [*cfg.get("ports", ()), *(dev.ports if dev else ()), *publish]
    mode = cfg["network"]["mode"]
    if wanted_ports and mode != "full":
        raise ConfigError(f"ports ({', '.join(map(str, wanted_ports))}) cannot be published when "
                          f"[network] mode = \"{mode}\": the sandbox has loopback only",
                          "drop the ports, or use mode = \"full\" for this project")
    extra.args += ports.publish_args(list(dict.fromkeys(wanted_ports)), project.root)
    if publish:
        extra.args += ["--label", f"{LABEL_PUBLISH}={','.join(publish)}"]
    cache_args, extra.env = caches.spec_additions(cfg.get("caches", ()))
    extra.args += cache_args + instructions.mount_args()
    if dev is None:
        return extra
    for m in dev.mounts:
        host, _, rest = m.partition(":")
        host = os.path.realpath(os.path.expanduser(host))
        if not os.path.exists(host):
            raise ConfigError(f"{dev.path}: mounts: {host} does not exist", "create it or remove the mount")
        extra.args += ["-v", f"{_mount_source(host)}:{rest}"]
    # Values naming host variables (${localEnv:...}) would copy host secrets into `inspect`: left out.
    extra.env = {**{k: v for k, v in dev.env.items() if "${" not in v}, **extra.env}
    extra.user = dev.user
    extra.post_create = dev.post_create_commands()
    if "image" not in cfg.flag_keys:  # --image beats the devcontainer
        if dev.dockerfile:
            with open(dev.dockerfile, "rb") as f:
                recipe = f.read()
            digest = sha256_hex(recipe + b"\0" + json.dumps(dev.build_args, sort_keys=True).encode()
                                + b"\0" + dev.context.encode("utf-8", "surrogateescape"))[:12]
            extra.image = f"localhost/agentsh-dc-{project.key}:{digest}"
            extra.build = {"context": dev.context, "file": dev.dockerfile, "args": dev.build_args,
                           "tag": extra.image}
        elif dev.image:
            extra.image = dev.image
    return extra


def prepare_host(project, topo, locked=False):
    """What the mounts need on the host: the in-sandbox scripts and the sandbox's private git dir."""
    from agentsh.sandbox import gitbridge

    gitbridge.prepare(topo, project.sandbox, locked)


def ensure_running(project, cfg, engine, store, notify):
    """Before an exec: start the sandbox unless its init process is known to run.

    The known case costs no engine call. Engines whose containers are not
    local processes keep the old way: exec, and start on failure.
    """
    if not engine.is_local or liveness.sandbox_running(store, project.sandbox):
        return
    start(project, cfg, engine, store, notify)


def start(project, cfg, engine, store, notify):
    """ab-up for a sandbox an exec found (or may find) not running; says so when it started it."""
    if up(project, cfg, engine, store, notify=notify).get("started"):
        notify(f"sandbox {project.sandbox} was not running; started it")


def describe(info, project, image=None):
    """The ab-up / ab-ls record for an inspect dict."""
    state = info.get("State", {})
    return {
        "name": project.sandbox,
        "id": info.get("Id", ""),
        "project": project.root,
        "image": image or info.get("ImageName") or info.get("Config", {}).get("Image", ""),
        "state": state.get("Status", "unknown") if isinstance(state, dict) else str(state),
    }


def up(project, cfg, engine, store, recreate=False, notify=None, publish=None):
    """Make the project's sandbox run with the current spec (and its egress proxy, in
    network modes "allow" and "learn"); returns its record."""
    from agentsh.egress import network
    from agentsh.host import gittopo
    from agentsh.policy import lockdown

    lockdown.prepare_host(project, cfg)
    topo = gittopo.recorded(store, project, again=recreate)
    record = _up_container(project, cfg, engine, store, recreate, notify, publish, topo)
    network.attach(project, cfg, engine, store, notify)
    return record


def _up_container(project, cfg, engine, store, recreate=False, notify=None, publish=None, topo=None):
    """Make the project's sandbox run with the current spec; returns its record.

    `publish`: `ab-up -p` ports; None keeps the ones the sandbox was made with.
    The common case, a running sandbox whose spec is unchanged, needs no engine
    call: the sandbox record names the container's init process, and /proc
    says whether that very process still runs. Anything else asks the engine.
    """
    notify = notify or (lambda msg: None)

    def wanted(ports):  # the spec for these -p ports; computed again only when they change
        nonlocal want
        if want is None or want.publish != list(ports):
            want = spec(project, cfg, engine, ports, topo)
        return want

    want = None
    record = None if recreate else _read_record(store, project.sandbox, notify)
    if record is not None and engine.is_local:
        wanted(record.get("publish", []) if publish is None else publish)
        if record.get("spec") == want.hash and liveness.alive(record.get("pid"), record.get("pid_start")):
            return {"name": want.name, "id": record.get("id", ""), "project": project.root,
                    "image": want.image, "state": RUNNING}
    # Without a record there is usually no container either: go straight to
    # creating it, and look only if the engine says the name is taken.
    info = engine.inspect(project.sandbox) if record is not None or recreate else None
    wanted(kept_publish(info) if publish is None else publish)
    if info and not recreate and _matches(info, want) and info["State"]["Status"] == RUNNING:
        remember(store, project, want, info)
        return describe(info, project, want.image)
    lock = store.lock(layout.sandbox_lock(want.name))
    with _acquired(lock) as waited:
        if waited or info is not None:  # what we saw may be stale: look again
            info = engine.inspect(want.name)
        if info is None and not recreate:
            try:
                return _converge(engine, store, project, want, None, False, notify)
            except NameInUse:
                info = engine.inspect(want.name)
                wanted(kept_publish(info) if publish is None else publish)
        return _converge(engine, store, project, want, info, recreate, notify)


def _converge(engine, store, project, want, info, recreate, notify):
    """Bring an existing (or absent) container in line with `want`, under the sandbox lock."""
    if want.build and (info is None or recreate or not _matches(info, want)):
        build_image(engine, want.build, notify, force=recreate)
    if info is not None and (recreate or not _matches(info, want)):
        require_image(engine, want.image)  # never remove a sandbox we cannot replace
        notify(f"{'recreating' if recreate else 'spec changed; recreating'} sandbox {want.name}")
        engine.remove(want.name)
        info = None
    started = False
    if info is not None and info["State"]["Status"] not in (RUNNING, "paused"):
        try:
            engine.start(want.name)
            started = True
        except AgentshError as e:
            # A container that cannot start (made under other engine
            # settings, or half-made) is ours to replace; its home stays.
            notify(f"sandbox {want.name} does not start ({e.message}); recreating it")
            engine.remove(want.name)
            info = None
    elif info is not None and info["State"]["Status"] == "paused":
        engine.call("unpause", want.name)
    if info is not None:
        return {**describe(info, project, want.image), "state": RUNNING, "started": started}
    return _create(engine, store, project, want, notify)


def _read_record(store, name, notify=None):
    """The sandbox record; an unreadable one is only a cache of what the engine knows, so
    it is reported and treated as unknown ({}), and rewritten by this very ab-up."""
    try:
        return store.read(layout.sandbox_record(name))
    except StateError as e:
        if notify:
            notify(f"{e.message}; asking the engine instead and rewriting it")
        return {}


def remember(store, project, want, info):
    """Record what ab-up's next no-engine check needs: spec, ports, init pid and its start time."""
    pid = (info.get("State") or {}).get("Pid") or 0
    record = _read_record(store, want.name) or {}
    fresh = {"name": want.name, "project": project.root, "image": want.image, "spec": want.hash,
             "publish": list(want.publish), "id": info.get("Id", ""), "pid": pid,
             "pid_start": liveness.start_time(pid),
             "created": record.get("created") or int(time.time())}
    if {k: record.get(k) for k in fresh} != fresh or not liveness.sandbox_running(store, want.name):
        with store.lock():
            store.write(layout.sandbox_record(want.name), fresh)
            liveness.remember(store, want.name, pid)


def kept_publish(info):
    """The `ab-up -p` ports an existing sandbox was made with ([] when none or no sandbox)."""
    labels = ((info or {}).get("Config") or {}).get("Labels") or {}
    value = labels.get(LABEL_PUBLISH, "")
    return value.split(",") if value else []


def build_image(engine, build, notify, force=False):
    """Build a devcontainer's Dockerfile into its per-project tag, unless that tag exists.

    Only a build an allowed project file covers, and only from a private copy
    of exactly the Dockerfile and context bytes that were allowed
    (trust.BuildCopy): an edit since `ab-allow` (a script the Dockerfile
    COPYs and RUNs, say) is refused before the engine runs anything, and
    nothing the sandbox writes during the build reaches it.
    """
    if not force and engine.image_exists(build["tag"]):
        return
    from agentsh.policy.trust import BuildCopy

    with BuildCopy(build["file"], build["context"]) as copy:
        notify(f"building {build['tag']} from {build['file']}")
        engine.build(copy.context, build["tag"], file=copy.dockerfile, build_args=build["args"],
                     labels={LABEL_MANAGED: "true"}, on_line=lambda line: notify(f"  | {line}"))


def post_create(engine, want, notify):
    """Run the devcontainer's postCreateCommand in a new sandbox; a failure removes it again."""
    for cmd in want.post_create:
        notify(f"postCreateCommand: {' '.join(cmd)}")
        status, tail = engine.stream(engine.argv("exec", "-w", want.project_root, want.name, *cmd),
                                     on_line=lambda line: notify(f"  | {line}"))
        if status != 0:
            engine.remove(want.name)  # the next ab-up makes it again and runs the command again
            raise AgentshError(f"postCreateCommand {' '.join(cmd)!r} failed with exit status {status}",
                               "fix it in .devcontainer/devcontainer.json, then run 'ab-up' again")


def _create(engine, store, project, want, notify=None):
    from agentsh.host import gittopo

    prepare_host(project, want.topo or gittopo.detect(project.root), want.locked)
    # NameInUse: made by a process that held no lock, or under another state
    # dir; the caller inspects it and decides.
    cid = engine.run_detached(want.full_run_args())
    if want.post_create:
        post_create(engine, want, notify or (lambda msg: None))
    store.write(layout.sandbox_record(want.name), {
        "name": want.name, "project": project.root, "image": want.image,
        "spec": want.hash, "publish": list(want.publish), "id": cid, "created": int(time.time()),
    })
    return {"name": want.name, "id": cid, "project": project.root, "image": want.image, "state": RUNNING,
            "started": True}


class _acquired:
    """Hold a FileLock; `as` gives whether we had to wait for another holder."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        from agentsh.base.lock import Timeout

        try:
            self.lock.acquire(timeout=0)
            return False
        except Timeout:
            self.lock.acquire()
            return True

    def __exit__(self, *exc):
        self.lock.release()


def require_image(engine, image):
    if not engine.image_exists(image):
        raise AgentshError(f"image {image} is not there",
                           "build it with 'ab-image build', or pick another with --image or config 'image'")


def _matches(info, want):
    labels = (info.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_SPEC) == want.hash


def down(engine, names, remove=False, volumes=(), store=None):
    """Stop (and remove) sandboxes; returns the names acted on."""
    done = []
    for name in names:
        if remove:
            engine.remove(name)
            if store is not None:
                store.remove(layout.sandbox_record(name))
        else:
            try:
                engine.stop(name)
            except NoSuchContainer:
                continue
        done.append(name)
    for volume in volumes:
        engine.volume_remove(volume)
        if volume.endswith("-home"):  # the sandbox's state goes with its home: its private git dirs too
            from agentsh.sandbox import gitbridge

            gitbridge.forget(volume[:-len("-home")])
    return done


def listing(engine):
    """Every agentsh sandbox the engine knows: name, project, state, image, created."""
    rows = []
    for c in engine.list({LABEL_MANAGED: "true"}):
        labels = c.get("Labels") or {}
        if isinstance(labels, str):  # docker: "k=v,k=v"
            labels = dict(kv.split("=", 1) for kv in labels.split(",") if "=" in kv)
        names = c.get("Names") or []
        created = c.get("Created") or c.get("CreatedAt")
        if isinstance(created, (int, float)):
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        rows.append({
            "name": names[0] if isinstance(names, list) and names else str(names),
            "id": c.get("Id") or c.get("ID", ""),
            "project": labels.get(LABEL_PROJECT, ""),
            "state": c.get("State", ""),
            "image": c.get("Image", ""),
            "created": created or "",
        })
    return sorted(rows, key=lambda r: r["name"])
