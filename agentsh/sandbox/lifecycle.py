"""Keeping a project's container in step with its spec: up (idempotent), down, listing.

The spec itself (config + project + gathered inputs -> `run` arguments and
their hash) is `sandbox.spec`. `up()` is idempotent: a running sandbox whose
spec label matches is reused after one inspect; a changed spec is recreated;
creation happens under a per-sandbox lock so concurrent `ab-up`s make
exactly one container.
"""

import os  # noqa: F401 (the invoking uid is read through os, which tests replace)
import time

from agentsh.base import layout
from agentsh.base.errors import AgentshError, ConfigError, FileError, StateError
from agentsh.base.layout import CA_PATH, SANDBOX_HOME  # noqa: F401 (also for callers)
from agentsh.base.paths import data_dir
from agentsh.host import liveness
from agentsh.host.engine import BrokenContainer, NameInUse, NoSuchContainer
from agentsh.policy.trust import BuildCopy

RUNNING = "running"

# sandbox.spec's names, also for callers of this module. They are imported on
# first use: ab-exec's path loads this module for ensure_running alone.
_FROM_SPEC = frozenset(("CA_ENV", "HOST_CA_BUNDLES", "KEEPALIVE", "LABEL_MANAGED", "LABEL_PROJECT",
                        "LABEL_PUBLISH", "LABEL_SPEC", "MIN_CAPS", "Spec", "SpecInputs", "build",
                        "ca_bundle_source", "cap_add_args", "gather", "host_ca_bundle", "runs_as_root"))


def __getattr__(name):
    if name in _FROM_SPEC:
        from agentsh.sandbox import spec as specs  # lazy: the spec (json, re); ab-exec uses only ensure_running

        return getattr(specs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def spec(project, cfg, engine, publish=(), topo=None, inputs=None):
    """The container spec for a project under a config: the inputs gathered, then the pure build.

    `inputs`: SpecInputs already gathered (what `up` passes when ports change);
    `topo`: the project's recorded git topology (gittopo.recorded); default: what the disk says.
    """
    from agentsh.sandbox import spec as specs  # lazy: the spec (json, re); ab-exec uses only ensure_running

    return specs.build(project, cfg, engine, inputs or specs.gather(project, cfg, engine, topo), publish)


def prepare_host(project, topo, locked=False, runtime=None):
    """What the mounts need on the host: the in-sandbox scripts and the sandbox's private git dir (and
    `runtime`, the wrapper of isolation = "gvisor")."""
    from agentsh.sandbox import (  # lazy: shutil, subprocess; ab-exec uses only ensure_running
        execd,
        gitbridge,
        isolation,
    )

    try:
        gitbridge.prepare(topo, project.sandbox, locked)
        execd.prepare(project.sandbox)
        isolation.install(runtime)
    except FileError:
        raise
    except OSError as e:  # names relative to a directory descriptor say too little: name the directory
        where = os.path.join(data_dir(), layout.private_git_dir(project.sandbox, locked))
        name = e.filename if isinstance(e.filename, str) else ""
        raise FileError(name if name.startswith("/") else os.path.join(where, name), e) from None


def prepare_volumes(engine, project, want):
    """What Docker needs made before `run` that Podman's mount options do themselves.

    A home volume the sandbox user owns (Podman: keep-id, or the user is root), and in
    lockdown the volume that mounts the project's copy-on-write overlay (Podman: `:O`).
    """
    if engine.is_podman:
        return
    from agentsh.policy import lockdown  # lazy: re and the rules; ab-exec uses only ensure_running

    if want.locked:
        upper, work = lockdown.overlay_dirs(project)
        engine.overlay_volume(lockdown.overlay_volume(project), project.root, upper, work)
        return
    uid, gid = os.getuid(), os.getgid()
    if uid != 0 and f"--user={uid}:{gid}" in want.run_args:
        engine.volume_owned(project.home_volume, want.image, uid, gid)


def ensure_running(project, cfg, engine, store, notify):
    """Before an exec: start the sandbox unless its init process is known to run.

    The known case costs no engine call. Engines whose containers are not
    local processes keep the old way: exec, and start on failure.
    """
    if liveness.sandbox_running(store, project.sandbox) or not engine.is_local:
        return  # (a remote engine's sandbox not seen here: the exec starts it on failure)
    start(project, cfg, engine, store, notify)


def start(project, cfg, engine, store, notify):
    """ab-up for a sandbox an exec found (or may find) not running; says whether it made or started one."""
    record = up(project, cfg, engine, store, notify=notify)
    if record.get("new"):  # made just now (ab-up --json says "new": true)
        notify(f"created sandbox {project.sandbox}")
    elif record.get("started"):
        notify(f"sandbox {project.sandbox} was not running; started it")
    return record


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


def up(project, cfg, engine, store, recreate=False, notify=None, publish=None, attach=False):
    """Make the project's sandbox run with the current spec (and its egress proxy, in
    network modes "allow" and "learn"); returns its record.

    `attach`: an explicit `ab-up`, which runs a devcontainer's postAttachCommand.
    """
    from agentsh.egress import network  # lazy: re and the rules; ab-exec uses only ensure_running
    from agentsh.host import gittopo  # lazy: ab-exec uses only ensure_running
    from agentsh.policy import lockdown  # lazy: re and the rules; ab-exec uses only ensure_running
    from agentsh.sandbox import gitbridge  # lazy: shutil; ab-exec uses only ensure_running

    if cfg["network"]["mode"] in network.PROXIED:
        network.require_plantable(engine)  # before any container changes: a refusal leaves the sandbox as it was
    lockdown.prepare_host(project, cfg)
    gitbridge.install_lib()  # before the spec, which names what it holds (one stat when installed)
    topo = gittopo.recorded(store, project, again=recreate)
    dev = getattr(cfg, "devcontainer", None)
    if dev is not None and dev.siblings and "image" not in cfg.flag_keys:
        from agentsh.sandbox import compose  # lazy: only for a compose-based devcontainer with siblings

        compose.up(project, cfg, engine, store, dev, notify or (lambda msg: None), force=recreate)  # makes the network
    record = _up_container(project, cfg, engine, store, recreate, notify, publish, topo)
    network.attach(project, cfg, engine, store, notify)
    dev = getattr(cfg, "devcontainer", None)
    if attach and dev is not None and dev.lifecycle.get("postAttachCommand"):
        from agentsh.sandbox import devcontainer_run  # lazy: only for lifecycle commands, pulls, feature builds
        from agentsh.sandbox import spec as specs  # lazy: the spec (json, re); ab-exec uses only ensure_running

        want = specs.build(project, cfg, engine, specs.gather(project, cfg, engine, topo, fetch=True, notify=notify),
                           record.get("publish", ()))
        devcontainer_run.run(engine, want, ("postAttachCommand",), notify or (lambda msg: None))
    return record


def _up_container(project, cfg, engine, store, recreate=False, notify=None, publish=None, topo=None):
    """Make the project's sandbox run with the current spec; returns its record.

    `publish`: `ab-up -p` ports; None keeps the ones the sandbox was made with.
    The common case, a running sandbox whose spec is unchanged, needs no engine
    call: the sandbox record names the container's init process, and /proc
    says whether that very process still runs. Anything else asks the engine.
    """
    from agentsh.sandbox import spec as specs  # lazy: the spec (json, re); ab-exec uses only ensure_running

    notify = notify or (lambda msg: None)

    def wanted(ports):  # the spec for these -p ports; built again only when they change
        nonlocal want, inputs
        if want is None or want.publish != list(ports):
            inputs = inputs or specs.gather(project, cfg, engine, topo, fetch=True, notify=notify)
            want = specs.build(project, cfg, engine, inputs, ports)
        return want

    want = inputs = None
    record = None if recreate else _read_record(store, project.sandbox, notify)
    if record is not None and (engine.is_local or record.get("pid")):  # pid: seen as a process of this host
        wanted(record.get("publish", []) if publish is None else publish)
        if record.get("spec") == want.hash and liveness.alive(record.get("pid"), record.get("pid_start")):
            return {"name": want.name, "id": record.get("id", ""), "project": project.root,
                    "image": want.image, "state": RUNNING}
    # Without a record there is usually no container either: go straight to
    # creating it, and look only if the engine says the name is taken.
    info = _inspect(engine, project.sandbox, notify) if record is not None or recreate else None
    wanted(kept_publish(info) if publish is None else publish)
    pending = bool((record or {}).get("pending"))  # cut short before: settled under the lock below
    if info and not recreate and not pending and _matches(info, want) and info["State"]["Status"] == RUNNING:
        remember(store, project, want, info, engine)
        return describe(info, project, want.image)
    lock = store.lock(layout.sandbox_lock(want.name))
    with _acquired(lock) as waited:
        # A pending record: an ab-up was cut short making or replacing the container; what it left goes first.
        cut_short = (_read_record(store, want.name) or {}).get("pending") and _remove_leftovers(engine, want.name)
        if waited or info is not None or cut_short:  # what we saw may be stale: look again
            info = _inspect(engine, want.name, notify)
        if pending and info and not recreate and _matches(info, want) and info["State"]["Status"] == RUNNING:
            remember(store, project, want, info, engine)
            return describe(info, project, want.image)
        if info is None and not recreate:
            try:
                return _converge(engine, store, project, want, None, False, notify)
            except NameInUse:
                info = _inspect(engine, want.name, notify)
                if info is None:  # the name is taken by a container only the engine's storage holds
                    _remove_half_made(engine, want.name, notify)
                    return _converge(engine, store, project, want, None, False, notify)
                wanted(kept_publish(info) if publish is None else publish)
        return _converge(engine, store, project, want, info, recreate, notify)


def _inspect(engine, name, notify):
    """engine.inspect; a container left half-removed (a `rm` cut short) is removed and counts as none."""
    try:
        return engine.inspect(name)
    except BrokenContainer:
        notify(f"sandbox {name} was left half-removed (an interrupted removal); removing it")
        engine.remove(name)
        return None


def _remove_half_made(engine, name, notify):
    """Remove our sandbox `name` when it exists only in the engine's storage (an ab-up killed half-way)."""
    if name not in engine.storage_only(name):
        raise AgentshError(f"the name {name} is taken by a container the engine does not list",
                           "run 'ab-down --rm' in the project, then 'ab-up' again")
    notify(f"sandbox {name} was half-made (it exists only in the engine's storage, after an interrupted "
           "ab-up); removing it")
    engine.remove(name)


def _converge(engine, store, project, want, info, recreate, notify):
    """Bring an existing (or absent) container in line with `want`, under the sandbox lock."""
    if want.build and (info is None or recreate or not _matches(info, want)):
        build_image(engine, want.build, notify, force=recreate)
    elif want.pull and (info is None or recreate or not _matches(info, want)):
        from agentsh.sandbox import devcontainer_run  # lazy: only for lifecycle commands, pulls, feature builds

        devcontainer_run.ensure_image(engine, want.image, notify)
    if info is not None and (recreate or not _matches(info, want)):
        require_image(engine, want.image)  # never remove a sandbox we cannot replace
        check_spec(want)
        notify(f"{'recreating' if recreate else 'spec changed; recreating'} sandbox {want.name}")
        return _replace(engine, store, project, want, info, notify)
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
        if started and getattr(want, "lifecycle", None):
            from agentsh.sandbox import devcontainer_run  # lazy: only for lifecycle commands, pulls, feature builds

            devcontainer_run.run(engine, want, ("postStartCommand",), notify)
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


def remember(store, project, want, info, engine=None):
    """Record what ab-up's next no-engine check needs: spec, ports, init pid and its start time.

    An engine reached through a connection gets the pid recorded only when that process of
    this host is the container's init (a service on a local socket): elsewhere a pid means nothing here.
    """
    pid = (info.get("State") or {}).get("Pid") or 0
    if engine is not None and not engine.is_local and not liveness.is_container_process(pid, info.get("Id", "")):
        pid = 0
    record = _read_record(store, want.name) or {}
    fresh = {"name": want.name, "project": project.root, "image": want.image, "spec": want.hash,
             "publish": list(want.publish), "id": info.get("Id", ""), "pid": pid,
             "pid_start": liveness.start_time(pid),
             "created": record.get("created") or int(time.time())}
    if {k: record.get(k) for k in fresh} != fresh or record.get("pending") \
            or not liveness.sandbox_running(store, want.name):
        try:
            with store.lock():
                store.write(layout.sandbox_record(want.name), fresh)
                if pid:
                    liveness.remember(store, want.name, pid)
        except (AgentshError, OSError):
            pass  # only a cache of what the engine knows: the next ab-up asks the engine again


def kept_publish(info):
    """The `ab-up -p` ports an existing sandbox was made with ([] when none or no sandbox)."""
    from agentsh.sandbox.spec import LABEL_PUBLISH  # lazy: the spec (json, re); ab-exec uses only ensure_running

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
    from agentsh.sandbox import devcontainer_run  # lazy: only for lifecycle commands, pulls, feature builds
    from agentsh.sandbox.spec import LABEL_MANAGED  # lazy: the spec (json, re); ab-exec uses only ensure_running

    pull = build.get("pull", "never") == "missing"
    features = build.get("features")
    tag = f"{build['tag']}-base" if features and build.get("file") else build["tag"]
    base = build.get("base")
    if build.get("file"):
        # Build args holding host values go by name (the engine reads them from its environment), never on argv.
        hidden = build.get("host_args", ())
        args = {k: v for k, v in build["args"].items() if k not in hidden}
        with BuildCopy(build["file"], build["context"]) as copy, devcontainer_run.environ(
                {k: build["args"][k] for k in hidden}):
            notify(f"building {tag} from {build['file']}")
            engine.build(copy.context, tag, file=copy.dockerfile, build_args=args,
                         labels={LABEL_MANAGED: "true"}, on_line=lambda line: notify(f"  | {line}"),
                         pull="missing" if pull else "never", target=build.get("target"),
                         cache_from=build.get("cache_from", ()),
                         options=[*build.get("options", ()), *(f"--build-arg={k}" for k in hidden)])
        base = tag
    elif pull:
        devcontainer_run.ensure_image(engine, base, notify)
    if features:
        devcontainer_run.build_features(engine, build, base, notify)


def _record(project, want, cid=None):
    """The sandbox record; without `cid` it is "pending": written before the container is made or replaced,
    so an ab-up cut short leaves a mark the next one acts on (_remove_leftovers)."""
    record = {"name": want.name, "project": project.root, "image": want.image, "spec": want.hash,
              "publish": list(want.publish), "id": cid or "", "created": int(time.time())}
    if cid is None:
        record["pending"] = True
    return record


def _create(engine, store, project, want, notify=None):
    from agentsh.host import gittopo  # lazy: ab-exec uses only ensure_running

    check_spec(want)
    prepare_host(project, want.topo or gittopo.detect(project.root), want.locked, getattr(want, "runtime", None))
    # The record before the container: a state dir that cannot be written fails here, with nothing made
    # (a record without a pid never passes ab-up's no-engine check, so it cannot stand for a container).
    store.write(layout.sandbox_record(want.name), _record(project, want))
    # NameInUse: made by a process that held no lock, or under another state
    # dir; the caller inspects it and decides.
    notify = notify or (lambda msg: None)
    args = want.full_run_args(_late_env(engine, want))
    prepare_volumes(engine, project, want)
    try:
        cid = engine.run_detached(args)
    except NameInUse:
        raise
    except AgentshError as e:
        _not_visible(engine, want, e)
        if not _remove_leftovers(engine, want.name):
            raise
        cid = engine.run_detached(args)  # a replacement interrupted half-way held its ports
    _created(engine, store, project, want, cid, notify)
    return {"name": want.name, "id": cid, "project": project.root, "image": want.image, "state": RUNNING,
            "started": True, "new": True}


def _late_env(engine, want):
    """The devcontainer env values resolved from the image (none without a devcontainer asking for them)."""
    if not getattr(want, "late_env", None):
        return {}
    from agentsh.sandbox import devcontainer_run  # lazy: only for lifecycle commands, pulls, feature builds

    return devcontainer_run.resolve_late_env(engine, want)


def _created(engine, store, project, want, cid, notify):
    """After a new container runs: its checks and lifecycle commands (_after_create), then its record.

    When the checks inspected it (local Docker), the record names its init
    already, so the next ab-up needs no engine call.
    """
    info = _after_create(engine, want, notify)
    if info is not None and info.get("Id") == cid:
        remember(store, project, want, info, engine)
    else:
        _record_id(store, project, want, cid)


def _after_create(engine, want, notify):
    """A devcontainer's onCreate, updateContent and postCreate (once per creation), then postStart.

    A failure removes the new sandbox: the next ab-up makes it again and runs the commands again.
    Returns the container's inspect dict when the checks asked for it, else None.
    """
    info = None
    if not engine.is_podman or not engine.is_local:
        info = _require_sh(engine, want)
    if not getattr(want, "lifecycle", None):
        return info
    from agentsh.sandbox import devcontainer_run  # lazy: only for lifecycle commands, pulls, feature builds

    try:
        devcontainer_run.run(engine, want, devcontainer_run.CREATE, notify)
    except AgentshError:
        engine.remove(want.name)
        raise
    devcontainer_run.run(engine, want, ("postStartCommand",), notify)
    return info


def _not_visible(engine, want, error):
    """A remote engine that cannot mount a path of ours (its machine has no such directory): say which, in one line."""
    text = error.message
    if engine.is_local or "no such file or directory" not in text.lower():
        return
    from agentsh.base.paths import data_dir  # lazy: only when a remote engine fails to make a sandbox

    for path, what in ((want.project_root, "the project"), (data_dir(), "agentsh's data dir")):
        if path in text:
            raise AgentshError(f"{what} {path} is not visible to the {engine.name} engine at {engine.remote} "
                               f"({text[-160:]})", _SHARE) from None


_SHARE = ("share it with the engine's machine at the same path (Podman machine: its mounts; Docker Desktop: file "
          "sharing), or run agentsh where the engine runs")
_SEEN = ('printf "/sh\\0"; [ -f "$2" ] && printf "/lib\\0"; '
         'for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\\0" "${f##*/}"; fi; done')


def _require_sh(engine, want):
    """A new sandbox must have the `sh` every command runs through, and (on a remote engine) see our files.

    Docker's exec reports a program it cannot find with status 126 and its raw
    OCI message on stdout, where ab-exec cannot tell it from the command's own
    output; so the one exec that could fail that way is tried once, here. An
    engine reached through a connection mounts the project from its own
    machine's filesystem: the same files must be there at the same path (a
    shared folder), or the sandbox would work on something else. One exec
    tells all three; a sandbox that fails is removed, with one line.

    A local Docker's sandbox is a process of this host: one inspect (a
    fifth of an exec's cost) names its init, and an `sh` found in that
    process's root ends the check (the inspect is returned, for the record);
    where it cannot be read there (a `docker`-group user may not look into
    root's processes), the exec decides.
    """
    from agentsh.base.layout import RUN_SCRIPT  # lazy: only when a sandbox is made

    if engine.is_local:
        info = engine.inspect(want.name)
        pid = ((info or {}).get("State") or {}).get("Pid")
        if pid and liveness.is_container_process(pid, info.get("Id", "")) and _has_sh(f"/proc/{int(pid)}/root"):
            return info

    status, out, err = engine.exec_bytes(want.name, ["sh", "-c", _SEEN, "sh", want.project_root, RUN_SCRIPT],
                                         timeout=60)
    said = out + err.encode()
    fix = None
    if status in (126, 127) and (b"executable file not found" in said or b"no such file or directory" in said):
        message, fix = (f"image {want.image} has no sh, which agentsh runs every command with",
                        "use an image with a POSIX shell (/bin/sh), or add one to it")
    elif not engine.is_local:
        seen = out.split(b"\0")
        where = f"the {engine.name} engine at {engine.remote}"
        share = _SHARE
        try:
            here = sorted(os.fsencode(n) for n in os.listdir(want.project_root))
        except OSError:
            here = None
        if status != 0 or b"/sh" not in seen:
            message, fix = f"{where} could not run sh in the new sandbox ({said.decode(errors='replace')[-200:]})", \
                "check the engine ('ab-doctor')"
        elif here is not None and sorted(n for n in seen if n not in (b"/sh", b"/lib", b"")) != here:
            message, fix = f"the project {want.project_root} is not visible to {where} (it sees other files there)", share
        elif b"/lib" not in seen:
            from agentsh.base.paths import data_dir  # lazy: only when a sandbox is made

            message, fix = f"agentsh's data dir {data_dir()} is not visible to {where}", share
    if fix is not None:
        engine.remove(want.name)
        raise AgentshError(message, fix)
    return None


# Where `sh` is on Docker's default PATH (an image's own PATH rarely puts it elsewhere; if it does, the exec decides)
_SH_PATHS = ("/usr/local/sbin/sh", "/usr/local/bin/sh", "/usr/sbin/sh", "/usr/bin/sh", "/sbin/sh", "/bin/sh")


def _has_sh(root):
    """Whether the container filesystem at `root` (a /proc/PID/root) has an executable `sh` on the default PATH.

    Symlinks are followed inside `root` (an absolute one names the container's root, not ours).
    """
    import stat  # lazy: only when a sandbox is made

    for path in _SH_PATHS:
        parts, where, hops = path.strip("/").split("/"), "", 0
        try:
            while parts:
                part = parts.pop(0)
                if part in ("", "."):
                    continue
                if part == "..":
                    where = where.rsplit("/", 1)[0]
                    continue
                st = os.lstat(f"{root}{where}/{part}")
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > 16:
                        break
                    target = os.readlink(f"{root}{where}/{part}")
                    if target.startswith("/"):
                        where = ""
                    parts = target.split("/") + parts
                    continue
                where = f"{where}/{part}"
            else:
                st = os.stat(f"{root}{where}")
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                    return True
        except OSError:
            continue
    return False


def _record_id(store, project, want, cid):
    try:
        store.write(layout.sandbox_record(want.name), _record(project, want, cid))
    except (AgentshError, OSError):
        pass  # the record written before the container stands; the id is only shown


NEXT, PREVIOUS = ".next", ".prev"  # a replacement's temporary names: NAME.next (new), NAME.prev (old)


def _remove_leftovers(engine, name):
    """Settle what a replacement cut short left (NAME.next, NAME.prev); whether there was any.

    NAME.prev is the sandbox that worked: unless a NAME runs (the new one
    had started), it gets its name back, so nothing is lost; NAME.next
    never ran and goes.
    """
    from agentsh.sandbox.spec import LABEL_MANAGED  # lazy: the spec (json, re); ab-exec uses only ensure_running

    states = {}
    for c in engine.list({LABEL_MANAGED: "true"}):
        for n in c.get("Names") or []:
            if n in (name, name + NEXT, name + PREVIOUS):
                states[n] = str(c.get("State", "")).lower()
    if not ({name + NEXT, name + PREVIOUS} & set(states)):
        return False
    if name + PREVIOUS in states and states.get(name) != RUNNING:
        engine.remove(*[n for n in (name, name + NEXT) if n in states] or [name])
        engine.rename(name + PREVIOUS, name)
    else:
        engine.remove(*[n for n in (name + NEXT, name + PREVIOUS) if n in states])
    return True


def _named(args, name):
    """`run` arguments with the container's --name replaced."""
    args = list(args)
    i = args.index("--name")
    args[i + 1] = name
    return args


def _replace(engine, store, project, want, info, notify):
    """Recreate the sandbox so that a new spec the engine refuses changes nothing.

    The new container is made under a temporary name (the engine checks
    the whole spec then) while the old one runs; the two swap names, the
    new one starts, and only then is the old one removed. A new one that
    does not start is removed and the old one gets its name back (and is
    started again, when it had to be stopped to free its published ports).
    """
    from agentsh.host import gittopo  # lazy: ab-exec uses only ensure_running

    name, new, old = want.name, want.name + NEXT, want.name + PREVIOUS
    if _remove_leftovers(engine, name):  # an earlier replacement was cut short: start from what it left
        info = engine.inspect(name)
        if info is None:
            return _create(engine, store, project, want, notify)
    prepare_host(project, want.topo or gittopo.detect(project.root), want.locked, getattr(want, "runtime", None))
    prepare_volumes(engine, project, want)
    kept = _read_record(store, name)  # the running sandbox's record, put back if the new one fails
    store.write(layout.sandbox_record(name), _record(project, want))  # before any change (see _create)
    try:
        cid = engine.create(_named(want.full_run_args(_late_env(engine, want)), new))
    except AgentshError as e:
        engine.remove(new)
        _put_back(store, name, kept)
        raise AgentshError(f"the new spec cannot be used ({e.message}); sandbox {name} is unchanged",
                           e.fix or "fix the config (see docs/config.md), then run 'ab-up' again") from None
    was_running = (info.get("State") or {}).get("Status") in (RUNNING, "paused")
    stopped = False
    try:
        engine.rename(name, old)
    except AgentshError:  # an engine without rename: the old way (remove, then run)
        engine.remove(new)
        engine.remove(name)
        return _create(engine, store, project, want, notify)
    try:
        engine.rename(new, name)
        if was_running and "-p" in want.run_args:  # published ports are the old one's until it stops
            engine.stop(old, timeout=2)
            stopped = True
        engine.start(name)
    except AgentshError as e:
        engine.remove(name if engine.inspect(new) is None else new)
        engine.rename(old, name)
        if stopped:
            engine.start(name)
        _put_back(store, name, kept)
        raise AgentshError(f"the new sandbox does not start ({e.message}); sandbox {name} is kept as it was",
                           e.fix or "fix the config (see docs/config.md), then run 'ab-up' again") from None
    engine.remove(old)
    _created(engine, store, project, want, cid, notify)
    return {"name": name, "id": cid, "project": project.root, "image": want.image, "state": RUNNING,
            "started": True}


def _put_back(store, name, record):
    """The record of the sandbox that stays, as it was before a replacement that failed (none: removed)."""
    try:
        if record:
            store.write(layout.sandbox_record(name), {k: v for k, v in record.items() if k != "schema"})
        else:
            store.remove(layout.sandbox_record(name))
    except (AgentshError, OSError):
        pass  # a pending record stays: the next ab-up asks the engine (and settles what is left)


def check_spec(want):
    """Refuse a spec the engine would refuse that the config checks cannot see: two mounts on one path."""

    args, seen = want.run_args, {}
    for i, arg in enumerate(args[:-1]):
        if arg in ("-v", "--volume", "--tmpfs", "--mount"):
            value = args[i + 1]
            if arg == "--mount":
                fields = dict(f.split("=", 1) for f in value.split(",") if "=" in f)
                target = fields.get("target") or fields.get("destination") or fields.get("dst")
            elif arg == "--tmpfs":
                target = value.split(":", 1)[0]
            else:
                parts = value.split(":")
                target = parts[1] if len(parts) > 1 else parts[0]
            if not target:
                continue
            target = target.rstrip("/") or "/"
            if target in seen:
                raise ConfigError(f"two mounts have the same sandbox path {target} ({seen[target]} and {value})",
                                  "give each entry of 'mounts' (and devcontainer mounts) its own sandbox path, "
                                  "away from the project, the home and /run/agentsh")
            seen[target] = value


class _acquired:
    """Hold a FileLock; `as` gives whether we had to wait for another holder."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        from agentsh.base.lock import Timeout  # lazy: fcntl; ab-exec's path takes no lock

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
    from agentsh.sandbox.spec import LABEL_SPEC  # lazy: the spec (json, re); ab-exec uses only ensure_running

    labels = (info.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_SPEC) == want.hash


def down(engine, names, remove=False, volumes=(), store=None):
    """Stop (and remove) sandboxes; returns the names acted on."""
    done = []
    for name in names:
        siblings = store is not None and (os.path.exists(store.path(layout.compose_record(name)))
                                          or os.path.isdir(store.path(layout.compose_dir(name))))
        if remove:
            engine.remove(name)
            if store is not None:
                store.remove(layout.sandbox_record(name))
                _forget_egress(store, name, with_log=name + "-home" in volumes)
        else:
            try:
                engine.stop(name)
                stopped = True
            except NoSuchContainer:
                stopped = False
        if siblings:  # after the sandbox: the network they share goes only once neither is on it
            from agentsh.sandbox import compose  # lazy: only for a sandbox with compose siblings

            compose.down(engine, store, name, remove=remove, volumes=name + "-home" in volumes)
        if not remove and not stopped:
            continue
        done.append(name)
    if remove and not engine.is_podman:  # Docker: the volumes mounting a lockdown overlay (the upper dir stays)
        from agentsh.policy.lockdown import OVERLAY_VOLUME  # lazy: re and the rules; only for ab-down --rm

        for name in done:
            for volume in engine.volumes(name + OVERLAY_VOLUME):
                engine.volume_remove(volume)
    for volume in volumes:
        engine.volume_remove(volume)
        if volume.endswith("-home"):  # the sandbox's state goes with its home: its private git dirs too
            from agentsh.sandbox import gitbridge  # lazy: shutil; ab-exec uses only ensure_running

            gitbridge.forget(volume[:-len("-home")])
    return done


def _forget_egress(store, name, with_log):
    """A removed sandbox's egress files: the proxy's record and name map, its placeholder map, its
    interception CA and the bundles holding that CA."""
    from agentsh.egress import network  # lazy: only when a sandbox is removed
    from agentsh.sandbox import spec  # lazy: the spec (json, re); ab-exec uses only ensure_running

    network.forget(store, name, with_log=with_log)
    spec.forget_sandbox_ca(name)


def utc_timestamp(value):
    """An engine's creation time as ISO 8601 UTC to the second (2026-12-01T21:13:48Z), "" when unknown.

    Podman's `ps` gives seconds since the epoch; Docker's gives "2026-12-01 21:13:48 +0000 UTC"
    (the daemon's zone, which may be another), and an inspect "2026-12-01T21:13:48.123456789Z".
    """
    import datetime  # lazy: only for ab-ls

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    if not isinstance(value, str) or not value.strip():
        return ""
    text = value.strip()
    try:
        if text[10:11] == "T":  # RFC 3339, with up to nanoseconds (more digits than fromisoformat takes)
            head, _, frac = text.partition(".")
            zone = frac.lstrip("0123456789") if frac else ""
            when = datetime.datetime.fromisoformat((head + (zone or "")).replace("Z", "+00:00"))
        else:  # "DATE TIME[.frac] +HHMM ZONE"
            date, clock, offset = text.split()[:3]
            when = datetime.datetime.strptime(f"{date} {clock.split('.')[0]} {offset}", "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return text  # an engine's format not known here: shown as it is rather than hidden
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def listing(engine):
    """Every agentsh sandbox the engine knows: name, project, state, image, created."""
    from agentsh.sandbox.spec import LABEL_MANAGED, LABEL_PROJECT  # lazy: json, re; ab-exec uses only ensure_running

    rows = []
    for c in engine.list({LABEL_MANAGED: "true"}):
        labels = c.get("Labels") or {}
        if isinstance(labels, str):  # docker: "k=v,k=v"
            labels = dict(kv.split("=", 1) for kv in labels.split(",") if "=" in kv)
        names = c.get("Names") or []
        created = utc_timestamp(c.get("Created") or c.get("CreatedAt"))
        rows.append({
            "name": names[0] if isinstance(names, list) and names else str(names),
            "id": c.get("Id") or c.get("ID", ""),
            "project": labels.get(LABEL_PROJECT, ""),
            "state": c.get("State", ""),
            "image": c.get("Image", ""),
            "created": created or "",
        })
    return sorted(rows, key=lambda r: r["name"])
