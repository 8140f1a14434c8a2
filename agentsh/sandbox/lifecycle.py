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
from agentsh.base.errors import AgentshError, StateError
from agentsh.base.layout import CA_PATH, SANDBOX_HOME  # noqa: F401 (also for callers)
from agentsh.host import liveness
from agentsh.host.engine import NameInUse, NoSuchContainer
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


def prepare_host(project, topo, locked=False):
    """What the mounts need on the host: the in-sandbox scripts and the sandbox's private git dir."""
    from agentsh.sandbox import execd, gitbridge  # lazy: shutil, subprocess; ab-exec uses only ensure_running

    gitbridge.prepare(topo, project.sandbox, locked)
    execd.prepare(project.sandbox)


def ensure_running(project, cfg, engine, store, notify):
    """Before an exec: start the sandbox unless its init process is known to run.

    The known case costs no engine call. Engines whose containers are not
    local processes keep the old way: exec, and start on failure.
    """
    if not engine.is_local or liveness.sandbox_running(store, project.sandbox):
        return
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

    lockdown.prepare_host(project, cfg)
    gitbridge.install_lib()  # before the spec, which names what it holds (one stat when installed)
    topo = gittopo.recorded(store, project, again=recreate)
    record = _up_container(project, cfg, engine, store, recreate, notify, publish, topo)
    network.attach(project, cfg, engine, store, notify)
    dev = getattr(cfg, "devcontainer", None)
    if attach and dev is not None and dev.lifecycle.get("postAttachCommand"):
        from agentsh.sandbox import (
            devcontainer_run,  # lazy: only for a devcontainer's lifecycle commands, pulls and feature builds
        )
        from agentsh.sandbox import spec as specs  # lazy: the spec (json, re); ab-exec uses only ensure_running

        want = specs.build(project, cfg, engine, specs.gather(project, cfg, engine, topo), record.get("publish", ()))
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
            inputs = inputs or specs.gather(project, cfg, engine, topo)
            want = specs.build(project, cfg, engine, inputs, ports)
        return want

    want = inputs = None
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
    elif want.pull and (info is None or recreate or not _matches(info, want)):
        from agentsh.sandbox import (
            devcontainer_run,  # lazy: only for a devcontainer's lifecycle commands, pulls and feature builds
        )

        devcontainer_run.ensure_image(engine, want.image, notify)
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
        if started and getattr(want, "lifecycle", None):
            from agentsh.sandbox import (
                devcontainer_run,  # lazy: only for a devcontainer's lifecycle commands, pulls and feature builds
            )

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
    from agentsh.sandbox import (
        devcontainer_run,  # lazy: only for a devcontainer's lifecycle commands, pulls and feature builds
    )
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


def _create(engine, store, project, want, notify=None):
    from agentsh.host import gittopo  # lazy: ab-exec uses only ensure_running
    from agentsh.sandbox import devcontainer_run  # lazy: only for lifecycle commands, pulls, feature builds

    prepare_host(project, want.topo or gittopo.detect(project.root), want.locked)
    # NameInUse: made by a process that held no lock, or under another state
    # dir; the caller inspects it and decides.

    notify = notify or (lambda msg: None)
    cid = engine.run_detached(want.full_run_args(devcontainer_run.resolve_late_env(engine, want)))
    try:  # onCreate, updateContent and postCreate once per creation; a failure removes the sandbox again
        devcontainer_run.run(engine, want, devcontainer_run.CREATE, notify)
    except AgentshError:
        engine.remove(want.name)  # the next ab-up makes it again and runs the commands again
        raise
    devcontainer_run.run(engine, want, ("postStartCommand",), notify)
    store.write(layout.sandbox_record(want.name), {
        "name": want.name, "project": project.root, "image": want.image,
        "spec": want.hash, "publish": list(want.publish), "id": cid, "created": int(time.time()),
    })
    return {"name": want.name, "id": cid, "project": project.root, "image": want.image, "state": RUNNING,
            "started": True, "new": True}


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
            from agentsh.sandbox import gitbridge  # lazy: shutil; ab-exec uses only ensure_running

            gitbridge.forget(volume[:-len("-home")])
    return done


def listing(engine):
    """Every agentsh sandbox the engine knows: name, project, state, image, created."""
    from agentsh.sandbox.spec import LABEL_MANAGED, LABEL_PROJECT  # lazy: json, re; ab-exec uses only ensure_running

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
