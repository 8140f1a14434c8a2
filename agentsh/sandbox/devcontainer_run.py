"""A devcontainer's lifecycle commands and feature layer, run against the engine.

Lifecycle (the spec's order): onCreateCommand, updateContentCommand and
postCreateCommand once per sandbox creation, postStartCommand at each
start, postAttachCommand at each `ab-up`. A string runs with /bin/sh -c, a
list as it is, an object's entries in parallel. `ab-up` waits for all of
them unless `waitFor` names an earlier one: the commands after it then run
in the background, their output in /tmp/agentsh-<command>.log inside.
`${containerEnv:NAME}` is read from the running sandbox's environment.

A command holding a host value (`${localEnv:...}`), or run while the file
gives commands host values, never puts it on the engine's command line: a
small script goes through a pipe into the secrets tmpfs, removes itself
and runs the command.
"""

import json
import os
import re
import shutil
import tempfile
import threading

from agentsh.base.errors import AgentshError
from agentsh.base.layout import SECRETS_DIR
from agentsh.creds import delivery
from agentsh.policy.devcontainer_vars import container_substitute, env_list
from agentsh.sandbox.image import PULL_TIMEOUT
from agentsh.sandbox.spec import CA_ENV, LABEL_MANAGED

CREATE = ("onCreateCommand", "updateContentCommand", "postCreateCommand")
ORDER = (*CREATE, "postStartCommand", "postAttachCommand")
FEATURES_DIR = "/tmp/agentsh-features"


def _q(text):
    return "'" + text.replace("'", "'\\''") + "'"


def shown(argv):
    """A command as the user wrote it (the string of a /bin/sh -c, else the words)."""
    if len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"]:
        return argv[2]
    return " ".join(argv)


def _container_env(engine, want):

    info = engine.inspect(want.name) or {}
    return env_list((info.get("Config") or {}).get("Env"))


def resolve_late_env(engine, want):
    """The devcontainer env values that read ${containerEnv:...}, resolved from the image's environment."""
    if not want.late_env:
        return {}

    info = engine.image_inspect(want.image) or {}
    env = env_list((info.get("Config") or {}).get("Env"))
    flags = want.run_args
    env.update(flags[i + 1].split("=", 1) for i, a in enumerate(flags[:-1]) if a == "-e" and "=" in flags[i + 1])
    return {k: container_substitute(v, env) for k, v in want.late_env.items()}


def run(engine, want, names, notify):
    """Run the named lifecycle commands of `want` (a Spec) in order; an AgentshError when one fails."""
    steps = [(n, want.lifecycle[n]) for n in ORDER if n in names and want.lifecycle.get(n)]
    if "postStartCommand" in names and getattr(want, "service_command", None):
        start_service_command(engine, want, notify)
    if not steps:
        return
    env = None
    last = ORDER.index(want.wait_for) if want.wait_for in ORDER else len(ORDER)
    for name, entries in steps:
        background = ORDER.index(name) > last  # after waitFor: ab-up does not wait for it
        if env is None and any("${containerEnv:" in a for _, argv, _ in entries for a in argv):
            env = _container_env(engine, want)

        jobs = [(label, [container_substitute(a, env or {}) for a in argv], host) for label, argv, host in entries]
        if background:
            for label, argv, host in jobs:
                _start_background(engine, want, name, label, argv, host, notify)
            continue
        if len(jobs) == 1:
            label, argv, host = jobs[0]
            _run_one(engine, want, name, label, argv, host, notify)
        else:
            _run_parallel(engine, want, name, jobs, notify)


def start_service_command(engine, want, notify):
    """A compose service's command/entrypoint, in the background: the keep-alive stays agentsh's exec server."""
    log = "/tmp/agentsh-service.log"
    notify(f"service command: {shown(want.service_command)} (in the background; output in {log} inside)")
    cmd = _command(engine, want, want.service_command, frozenset())
    engine.call("exec", "-d", "-w", want.workdir, want.name, "sh", "-c", f'exec "$@" > {log} 2>&1', "sh", *cmd)


def _command(engine, want, argv, host):
    """The exec words for argv: as they are, or (host values, per-command env) a script in the tmpfs."""
    if not want.exec_env and not host:
        return list(argv)

    token = os.urandom(6).hex()
    path = f"{SECRETS_DIR}/lifecycle-{token}"
    lines = ['rm -f "$0"'] + [f"export {k}={_q(v)}" for k, v in want.exec_env.items()]
    lines.append("exec " + " ".join(_q(a) for a in argv))
    script = delivery.FileCredential(f"lifecycle-{token}", None, path, ("\n".join(lines) + "\n").encode(
        "utf-8", "surrogateescape"), False)
    delivery.write_files(engine, want.name, [script])
    return ["sh", path]


def _run_one(engine, want, name, label, argv, host, notify):
    what = f"{name}{'.' + label if label else ''}"
    notify(f"{what}: {shown(argv)}")
    cmd = _command(engine, want, argv, host)
    status, _ = engine.stream(engine.argv("exec", "-w", want.workdir, want.name, *cmd),
                              on_line=lambda line: notify(f"  | {line}"))
    if status != 0:
        raise AgentshError(f"{what} {shown(argv)!r} failed with exit status {status}",
                           "fix it in the devcontainer.json, then run 'ab-up' again")


def _run_parallel(engine, want, name, jobs, notify):
    """An object's entries, each in its own exec at once; every failure is named."""
    lock = threading.Lock()
    failed = []

    def say(message):
        with lock:
            notify(message)

    def one(label, argv, host):
        try:
            _run_one(engine, want, name, label, argv, host, say)
        except AgentshError as e:
            failed.append(e.message)

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise AgentshError("; ".join(failed), "fix it in the devcontainer.json, then run 'ab-up' again")


def _start_background(engine, want, name, label, argv, host, notify):

    log = f"/tmp/agentsh-{name}{'-' + re.sub(r'[^A-Za-z0-9_.-]', '_', label) if label else ''}.log"
    notify(f"{name}{'.' + label if label else ''}: {shown(argv)} (in the background, after waitFor "
           f"{want.wait_for}; output in {log} inside)")
    cmd = _command(engine, want, argv, host)
    engine.call("exec", "-d", "-w", want.workdir, want.name, "sh", "-c", f'exec "$@" > {log} 2>&1', "sh", *cmd)


# -- features -------------------------------------------------------------------------


CA_IN_BUILD = "/run/agentsh/ca-bundle.crt"  # where the shipped Containerfile's RUN steps mount it too


def feature_recipe(base, features, user, base_user, ca=False):
    """The Containerfile that installs `features` (in order) on `base`, and the context files it copies.

    `ca`: the host's CA bundle reaches each install.sh as a build secret (with the usual variables
    pointing at it), so installs work behind a TLS-intercepting proxy; it is not kept in the image.
    """

    remote = user.split(":")[0] if user else "root"
    home = "/root" if remote in ("root", "0") else f"/home/{remote}"
    lines = [f"FROM {base}", "USER root"]
    files = []
    for i, f in enumerate(features):
        folder = f"{i}-{os.path.basename(f.folder)}"
        for rel, mode, data in f.files:
            files.append((f"{folder}/{rel}", mode, data))
        env = {"_REMOTE_USER": remote, "_CONTAINER_USER": remote, "_REMOTE_USER_HOME": home,
               "_CONTAINER_USER_HOME": home, **f.options}
        files.append((f"{folder}/devcontainer-features.env", 0o644,
                      "".join(f"{k}={_q(v)}\n" for k, v in env.items()).encode("utf-8", "surrogateescape")))
        lines.append(f"COPY {folder} {FEATURES_DIR}/{folder}")
        mount = f"--mount=type=secret,id=ca_bundle,target={CA_IN_BUILD} " if ca else ""
        certs = (f"if [ -s {CA_IN_BUILD} ]; then export " + " ".join(f"{k}={CA_IN_BUILD}" for k in CA_ENV)
                 + "; fi && ") if ca else ""
        lines.append(f"RUN {mount}cd {FEATURES_DIR}/{folder} && chmod +x install.sh && {certs}set -a && "
                     ". ./devcontainer-features.env && set +a && ./install.sh")
        for k, v in f.container_env.items():
            lines.append(f"ENV {k}={_json(v)}")
    lines.append(f"RUN rm -rf {FEATURES_DIR}")
    if base_user:
        lines.append(f"USER {base_user}")
    return "\n".join(lines) + "\n", files


def _json(text):

    return json.dumps(text)


def build_features(engine, build, base, notify):
    """Build the feature layer of a devcontainer on `base` into build["tag"]."""


    info = engine.image_inspect(base) or {}
    bundle = build.get("ca_bundle")
    recipe, files = feature_recipe(base, build["features"], build.get("user"),
                                   (info.get("Config") or {}).get("User") or "", ca=bool(bundle))
    context = tempfile.mkdtemp(prefix="agentsh-features-")
    try:
        for rel, mode, data in files:
            path = os.path.join(context, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(data)
            os.chmod(path, (mode & 0o777) | 0o600)
        with open(os.path.join(context, "Containerfile"), "w") as out:
            out.write(recipe)
        shown = ", ".join(f.id + (f" ({f.oci.at(f.digest)})" if f.oci else "") for f in build["features"])
        notify(f"installing features {shown} into {build['tag']}")
        engine.build(context, build["tag"], file=os.path.join(context, "Containerfile"),
                     labels={LABEL_MANAGED: "true"}, on_line=lambda line: notify(f"  | {line}"),
                     secrets={"ca_bundle": bundle} if bundle else None)
    finally:
        shutil.rmtree(context, ignore_errors=True)


class environ:
    """Variables set in this process (so the engine it starts inherits them) for a `with` block."""

    def __init__(self, values):
        self.values, self.saved = values, {}

    def __enter__(self):
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v
        return self

    def __exit__(self, *exc):
        for k, old in self.saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def ensure_image(engine, image, notify):
    """Pull `image` (named by a trusted devcontainer.json) when it is not local, showing progress."""
    if engine.image_exists(image):
        return

    notify(f"pulling {image} (named by the devcontainer.json; config pull = \"never\" stops this)")
    engine.pull(image, on_line=lambda line: notify(f"  | {line}"), timeout=PULL_TIMEOUT)
