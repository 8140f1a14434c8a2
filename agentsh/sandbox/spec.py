"""A project and its config -> the container's `run` arguments and their hash.

Two steps: `gather()` does every read the spec depends on (the git topology
and the in-sandbox scripts, mount sources, the CA bundle, the SSH agent
grant, the instructions file, a devcontainer's Dockerfile, the invoking
uid) and returns them as `SpecInputs`; `build()` is a pure function of
project, config, engine facts and those inputs. The same inputs give the
same arguments and so the same hash: a sandbox is recreated only when what
it would be made from changes.
"""

import json
import os

from agentsh.base import layout, paths
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError, ConfigError
from agentsh.base.layout import CA_PATH, SANDBOX_HOME
from agentsh.creds import delivery
from agentsh.egress import network
from agentsh.host import gittopo
from agentsh.policy import caches, lockdown, ports
from agentsh.policy.config import ca_bundle_copy
from agentsh.sandbox import execd, gitbridge, instructions, isolation

LABEL_MANAGED = "io.agentsh.managed"
LABEL_PROJECT = "io.agentsh.project"
LABEL_SPEC = "io.agentsh.spec"
LABEL_PUBLISH = "io.agentsh.publish"  # the `ab-up -p` ports, so later ups keep them

CA_ENV = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO",
          "CURL_CA_BUNDLE")
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem")
# Capabilities kept after --cap-drop=all when the sandbox runs as root, and
# only then: enough for a root shell to own, chmod and chown files and for
# package managers to drop to their own users.
MIN_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID")
KEEPALIVE = ("sleep", "infinity")


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

    def __init__(self, name, project_root, image, run_args, keepalive=KEEPALIVE):
        self.name = name
        self.keepalive = tuple(keepalive)
        self.project_root = project_root
        self.image = image
        self.hash = sha256_hex(json.dumps(run_args))[:16]
        self.run_args = run_args
        self.runtime = None  # (path, text) of the runtime wrapper isolation = "gvisor" names

    def full_run_args(self, late_env=None):
        """run arguments with the spec label, ready for `run -d`.

        `late_env`: values known only once the image is (a devcontainer's
        ${containerEnv:...}, resolved from the image's environment).
        """
        *flags, image = self.run_args[: -len(self.keepalive)]
        late = [a for k, v in (late_env or {}).items() for a in ("-e", f"{k}={v}")]
        return [*flags, *late, "--label", f"{LABEL_SPEC}={self.hash}", image, *self.keepalive]


# -- the reads ----------------------------------------------------------------------


def host_ca_bundle():
    """The host's own CA bundle (its real path), if one of the usual files is a PEM bundle; else None."""
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


def with_sandbox_ca(bundle, sandbox):
    """The checked bundle plus the sandbox's interception CA (egress.ca): the bundle a proxied sandbox mounts.

    The CA is made on the sandbox's first ab-up and then never changes; the
    combined copy is named by the bundle copy (itself named by its content)
    and the sandbox, so a warm ab-up only checks that it exists.
    """
    directory = os.path.dirname(bundle)
    combined = os.path.join(directory, f"{os.path.basename(bundle)[:-4]}-{sandbox}.pem")
    if os.path.isfile(combined) and os.path.isfile(os.path.join(paths.state_dir(), layout.sandbox_ca(sandbox),
                                                                "ca.crt")):
        return combined
    from agentsh.egress import ca  # lazy: cryptography, only when the sandbox's CA is made (not on warm ab-up)

    cert = ca.ensure(paths.state_dir(), sandbox)
    with open(bundle, "rb") as f:
        data = f.read()
    with open(cert, "rb") as f:
        data = data.rstrip(b"\n") + b"\n" + f.read()
    tmp = f"{combined}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, combined)
    return combined


def forget_sandbox_ca(sandbox):
    """Remove the combined bundles with_sandbox_ca made for a sandbox (its CA is gone with it)."""
    directory = os.path.join(paths.state_dir(), layout.CA_COPIES)
    suffix = f"-{sandbox}.pem"
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        head = name[:-len(suffix)]
        if name.endswith(suffix) and len(head) == 32 and all(c in "0123456789abcdef" for c in head):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass


class SpecInputs:
    """What a spec depends on beyond project, config and engine: everything gather() read.

    `mounts` / `dev_mounts`: (real host path, whether it exists, sandbox side)
    for config and devcontainer mounts; `ca_bundle`: the checked copy to
    mount, None, or the ConfigError that refused it; `secrets`: (run
    arguments, env) of the secrets tmpfs and, when granted and not in
    lockdown, the forwarded SSH agent; `recipe`: the devcontainer
    Dockerfile's bytes when the image is built from it; `execd`: (run
    arguments, keep-alive) for the exec server, or a plain sleep where it
    could not be built.
    """

    __slots__ = ("uid", "gid", "topo", "git_args", "git_env", "mounts", "dev_mounts", "ca_bundle",
                 "secrets", "instructions_args", "recipe", "execd")

    def __init__(self, **values):
        for name in self.__slots__:
            setattr(self, name, values.get(name))


def _resolved(entries):
    out = []
    for m in entries:
        host, _, rest = m.partition(":")
        host = os.path.realpath(os.path.expanduser(host))
        out.append((host, os.path.exists(host), rest))
    return out


def gather(project, cfg, engine, topo=None, fetch=False, notify=None):
    """Read everything build() needs from the host and the state store (see SpecInputs).

    `topo`: the project's recorded git topology (gittopo.recorded); default: what the disk says.
    `fetch`: a devcontainer's registry features not in the cache may be fetched (ab-up); without it
    (the cd hook's and ab-status's staleness check) such a feature is an AgentshError.
    """
    locked = lockdown.is_locked(cfg)
    topo = topo or gittopo.detect(project.root)
    git_args, git_env = gitbridge.spec_args(topo, project.sandbox, locked)
    dev = cfg.devcontainer
    try:
        ca_bundle = ca_bundle_source(cfg["ca_bundle"])
        if ca_bundle and cfg["network"]["mode"] in ("allow", "learn"):
            ca_bundle = with_sandbox_ca(ca_bundle, project.sandbox)
    except ConfigError as e:
        ca_bundle = e  # raised by build(), where the spec would have failed
    if dev is not None and "image" not in cfg.flag_keys and dev.registry_features():
        resolve_features(dev, cfg, fetch, notify or (lambda message: None))
    recipe = None
    if dev is not None and dev.dockerfile and "image" not in cfg.flag_keys:
        try:
            with open(dev.dockerfile, "rb") as f:
                recipe = f.read()
        except OSError as e:
            raise ConfigError(f"{dev.path}: key 'build.dockerfile': cannot read {dev.dockerfile} ({e.strerror})",
                              "create it, or fix the path (it is relative to the devcontainer.json)") from None
    uid, gid = os.getuid(), os.getgid()
    # lockdown forwards no SSH agent, so its grant is not even read
    secrets = (delivery.secrets_run_args(engine, uid, gid) if locked
               else delivery.sandbox_additions(project, engine))
    return SpecInputs(
        uid=uid, gid=gid, topo=topo, git_args=git_args, git_env=git_env,
        mounts=_resolved(cfg["mounts"]), dev_mounts=_resolved(dev.mounts) if dev is not None else [],
        ca_bundle=ca_bundle, secrets=secrets, instructions_args=instructions.mount_args(), recipe=recipe,
        execd=execd.spec_args(gitbridge.lib_dir(), project.sandbox))


def resolve_features(dev, cfg, fetch, notify):
    """A devcontainer's registry features pinned, fetched (or taken from the cache) and verified, in place.

    The registry is trusted like the image builder trusts the network: the
    host's store plus agentsh's checked copy of config ca_bundle.
    """
    from agentsh.base.state import Store  # lazy: only for a devcontainer with registry features
    from agentsh.policy import devcontainer_features, devcontainer_oci  # lazy: tar and the registry client

    try:
        cafile = ca_bundle_source(cfg["ca_bundle"])
    except ConfigError:
        cafile = None  # build() refuses the setting itself; the host's store still verifies
    fetcher = devcontainer_oci.Fetcher(fetch, cafile, notify)
    for line in devcontainer_features.resolve(dev, fetcher, Store()):
        notify(line)


# -- the pure part ---------------------------------------------------------------


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


def _mount_args(resolved, where, fix):
    args = []
    for host, exists, rest in resolved:
        if not exists:
            raise ConfigError(f"{where}: {host} does not exist", fix)
        args += ["-v", f"{_mount_source(host)}:{rest}"]
    return args


def build(project, cfg, engine, inputs, publish=()):
    """The container spec for a project under a config: a pure function of its arguments.

    `inputs`: what gather() read; `publish`: `ab-up -p` ports, kept with the
    sandbox (LABEL_PUBLISH) until the next `-p`.
    """
    root = _mount_source(project.root)
    dev = cfg.devcontainer
    locked = lockdown.is_locked(cfg)
    # Who the sandbox runs as: the devcontainer's remoteUser, else the
    # invoking user (keep-id where the engine maps it itself).
    user_args = []
    if engine.is_podman and engine.rootless:
        # runsc cannot start in the user namespace keep-id makes: under gVisor the sandbox runs as the
        # root of rootless Podman's namespace, which is the invoking user on the host (sandbox.isolation).
        user_args.append("--user=0:0" if cfg.get("isolation") == isolation.GVISOR else "--userns=keep-id")
    elif not (dev is not None and dev.user):
        if engine.is_podman or not engine.rootless:
            user_args.append(f"--user={inputs.uid}:{inputs.gid}")
    dev_user = [f"--user={dev.user}"] if dev is not None and dev.user else []
    args = [
        "--name", project.sandbox,
        "--hostname", project.slug,
        "--label", f"{LABEL_MANAGED}=true",
        "--label", f"{LABEL_PROJECT}={root}",
        "--init",
        "--cap-drop=all",
        *cap_add_args(cfg, user_args + dev_user),
        "--security-opt=no-new-privileges",
        f"--pids-limit={cfg['pids']}",
    ]
    if cfg["memory"]:
        args.append(f"--memory={cfg['memory']}")
    if cfg["cpus"]:
        args.append(f"--cpus={cfg['cpus']}")
    if engine.is_podman:
        args.append("--pull=never")
    args += user_args
    net_args, net_env = network.run_args(cfg)  # none / allow / learn: loopback only (+ proxy env)
    if dev is not None and dev.siblings and "image" not in cfg.flag_keys:
        from agentsh.sandbox import compose  # lazy: only for a compose-based devcontainer with siblings

        net_args = compose.sandbox_net_args(project, cfg, net_args)  # on the siblings' network
    args += net_args
    iso_args, runtime = isolation.run_args(cfg, engine, cfg["network"]["mode"],
                                           ssh_agent="SSH_AUTH_SOCK" in inputs.secrets[1])
    args += iso_args
    if locked and not engine.is_podman:  # Docker has no `:O`: a volume of its local driver mounts the overlay
        args += ["-v", f"{lockdown.overlay_volume(project)}:{root}"]
    else:
        args += ["-v", f"{root}:{root}" + lockdown.project_mount_suffix(project, cfg)]  # lockdown: copy-on-write
    # The host's git dir read-only, a private one of the sandbox's own at its path (gitbridge).
    args += [_mount_arg(a) for a in inputs.git_args]
    if locked:  # an ephemeral home: nothing persists, nothing of other runs is seen
        owner = "U" if engine.is_podman else f"uid={inputs.uid},gid={inputs.gid}"
        args += ["--tmpfs", f"{SANDBOX_HOME}:rw,nosuid,nodev,mode=0700,{owner}"]
    else:
        args += ["-v", f"{project.home_volume}:{SANDBOX_HOME}"]
    args += _mount_args(inputs.mounts, "mounts", "create it or remove the entry from 'mounts'")
    # ports, caches, instructions, devcontainer
    wanted_ports = [*cfg.get("ports", ()), *(dev.ports if dev else ()), *publish]
    mode = cfg["network"]["mode"]
    if wanted_ports and mode != "full":
        raise ConfigError(f"ports ({', '.join(map(str, wanted_ports))}) cannot be published when "
                          f"[network] mode = \"{mode}\": the sandbox has loopback only",
                          "drop the ports, or use mode = \"full\" for this project")
    args += ports.publish_args(list(dict.fromkeys(wanted_ports)), project.root)
    if publish:
        args += ["--label", f"{LABEL_PUBLISH}={','.join(publish)}"]
    cache_args, extra_env = caches.spec_additions(cfg.get("caches", ()))
    args += cache_args + inputs.instructions_args
    image, image_build, post_create, pull = cfg["image"], None, [], False
    if dev is not None:
        args += _mount_args(inputs.dev_mounts, f"{dev.path}: mounts", "create it or remove the mount")
        args += _dev_volume_args(dev, project, engine)
        # Values made from host variables (${localEnv:...}) are not here: they go to each command
        # the way credentials do (dev.exec_env), never into `inspect`.
        extra_env = {**dev.env, **extra_env}
        args += dev_user
        args += dev.run_args
        post_create = dev.post_create_commands()
        if "image" not in cfg.flag_keys:  # --image beats the devcontainer
            dev_image, image_build = _dev_image(dev, project, inputs.recipe, cfg.get("pull", "missing"))
            if image_build is not None and not isinstance(inputs.ca_bundle, ConfigError):
                image_build["ca_bundle"] = inputs.ca_bundle  # for the feature layer's install scripts
            image = dev_image or cfg["image"]
            # A registry image the trusted file names is pulled when missing; the default image never is.
            pull = (image_build is None and dev_image not in (None, cfg["image"])
                    and cfg.get("pull", "missing") == "missing")
    env = {**extra_env, **net_env, **inputs.git_env, "HOME": SANDBOX_HOME, "AGENTSH_SANDBOX": project.sandbox,
           "AGENTSH_PROJECT": root}
    if isinstance(inputs.ca_bundle, ConfigError):
        raise inputs.ca_bundle
    if inputs.ca_bundle:
        args += ["-v", f"{_mount_source(inputs.ca_bundle)}:{CA_PATH}:ro"]
        env.update(dict.fromkeys(CA_ENV, CA_PATH))
    secrets_args, secrets_env = inputs.secrets  # secrets tmpfs, SSH agent socket
    args += secrets_args
    env.update(secrets_env)
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    if dev is not None and engine.is_podman:  # remoteEnv NAME: null, for what the image sets
        args += [f"--unsetenv={name}" for name in dev.unset if name not in env]
    # The keep-alive is the exec server when this agentsh could build it (sandbox.execd).
    execd_args, keepalive = inputs.execd
    args += execd_args
    args += ["-w", root, image, *keepalive]
    out = Spec(project.sandbox, root, image, args, keepalive)
    out.build, out.post_create, out.publish = image_build, post_create, list(publish)
    out.topo, out.locked, out.pull, out.runtime = inputs.topo, locked, pull, runtime
    out.lifecycle = dict(dev.lifecycle) if dev is not None else {}
    out.wait_for = dev.wait_for if dev is not None else None
    out.workdir = dev.workdir if dev is not None else root
    out.late_env = dict(dev.late_env) if dev is not None else {}
    out.exec_env = {} if dev is None or locked else dict(dev.exec_env)
    out.service_command = dev.service_command if dev is not None else None
    if out.service_command:  # a compose service's own command: started with each start (devcontainer_run)
        out.lifecycle.setdefault("postStartCommand", [])
    return out


def _dev_volume_args(dev, project, engine):
    """A devcontainer's volumes (named per project: no sandbox reaches another's) and tmpfs mounts."""
    args = []
    for name, target, ro in dev.volumes:
        # Podman's U: the volume belongs to the sandbox user (a new one would be root's, unwritable for keep-id).
        opts = ",".join([*(["ro"] if ro else []), *(["U"] if engine.is_podman else [])])
        args += ["-v", f"{dev.volume_name(project.key, name)}:{target}{':' + opts if opts else ''}"]
    for target, opts in dev.tmpfs:
        args += ["--tmpfs", f"{target}:" + ",".join(["rw", "nosuid", "nodev", "exec", "mode=1777", *(
            o for o in opts.split(",") if o and o not in ("rw", "exec"))])]
    return args


def _dev_image(dev, project, recipe, pull):
    """(image, build or None) of a devcontainer: its own build (a Dockerfile, features) or its image."""
    if not dev.dockerfile and not dev.features:
        return dev.image, None
    parts = [recipe or b"", json.dumps([dev.build_args, dev.target, dev.cache_from, dev.build_options, dev.image],
                                       sort_keys=True).encode(),
             (dev.context or "").encode("utf-8", "surrogateescape")]
    for f in dev.features:
        parts.append(json.dumps([f.ref, f.options, [[r, m, sha256_hex(d)] for r, m, d in f.files]]
                                + ([f.digest] if f.oci else [])).encode())
    digest = sha256_hex(b"\0".join(parts))[:12]
    image = f"localhost/agentsh-dc-{project.key}:{digest}"
    build = {"context": dev.context, "file": dev.dockerfile, "args": dev.build_args, "tag": image,
             "target": dev.target, "cache_from": list(dev.cache_from), "options": list(dev.build_options),
             "pull": pull, "base": dev.image, "features": list(dev.features), "user": dev.user,
             "host_args": list(dev.build_host_args)}
    return image, build


def plan(want, cfg):
    """What `ab-up --dry-run` shows: the resolved sandbox, and what of the devcontainer is not applied."""
    dev = cfg.devcontainer
    flags = want.run_args
    env = sorted({flags[i + 1].split("=", 1)[0] for i, a in enumerate(flags[:-1]) if a == "-e"} |
                 set(want.late_env))
    mounts = []
    for i, a in enumerate(flags[:-1]):
        if a == "-v":
            source, _, rest = flags[i + 1].partition(":")
            target, _, mode = rest.partition(":")
            mounts.append({"type": "volume" if not source.startswith("/") else "bind", "source": source,
                           "target": target, "readonly": "ro" in mode.split(",")})
        elif a == "--tmpfs":
            mounts.append({"type": "tmpfs", "source": None, "target": flags[i + 1].split(":")[0],
                           "readonly": False})
    ports = [flags[i + 1] for i, a in enumerate(flags[:-1]) if a == "-p"]
    user = next((a[len("--user="):] for a in reversed(flags) if a.startswith("--user=")), None)
    build = None
    if want.build:
        build = {k: want.build[k] for k in ("file", "context", "target", "cache_from", "options", "tag", "base")}
        build["args"] = sorted(want.build["args"])
        build["features"] = [f.plan() for f in want.build["features"]]
    dev_plan = dev.plan() if dev is not None else None
    return {
        "sandbox": want.name,
        "project": want.project_root,
        "image": want.image,
        "isolation": cfg.get("isolation", isolation.CONTAINER),
        "pull": bool(want.pull),
        "build": build,
        "user": user,
        "env": env,
        "env_per_command": sorted(want.exec_env),
        "mounts": mounts,
        "ports": ports,
        "features": dev_plan["features"] if dev_plan else [],
        "lifecycle": dev_plan["lifecycle"] if dev_plan else {},
        "wait_for": want.wait_for,
        "workdir": want.workdir,
        "devcontainer": dev_plan,
        "not_applied": dev_plan["not_applied"] if dev_plan else [],
        "ignored": dev_plan["ignored"] if dev_plan else [],
        "notices": list(cfg.notices),
        "run_args": list(want.full_run_args()),
    }
