"""The only place that builds container-engine command lines.

Podman by default, Docker where its flags allow. Every call goes through a
runner (a function taking argv and returning (status, stdout, stderr)), so unit
tests swap in a recorder. Engine failures become one-line errors that say what
to run next; policy (which mounts, which user) lives in `sandbox`.
"""

from __future__ import annotations

import os

from agentsh.base.errors import EngineError
from agentsh.base.paths import state_dir
from agentsh.host import connection

TYPE_CHECKING = False  # typing costs milliseconds to import, on ab-exec's path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    # argv, input=, capture=, timeout= -> (status, stdout, stderr)
    Runner = Callable[..., tuple[int, str, str]]
    Argv = list[str]  # (aliases: Engine.list would shadow `list` in its later annotations)
    Rows = list[dict]

INSTALL_HINT = {
    "podman": "install it (Debian/Ubuntu: sudo apt-get install podman; Fedora: sudo dnf install podman)",
    "docker": "install Docker Engine, or use Podman (set engine = \"podman\")",
}


def _json_loads(text: str | bytes) -> Any:
    import json  # not needed by ab-exec's hot path

    return json.loads(text)


def which(program: str) -> str | None:
    """shutil.which without importing shutil (hot path)."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", program)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


_SETPRIV = []  # [path] once looked up ("" when there is none)


def tied(argv: list[str]) -> list[str]:
    """argv run so that the process gets SIGKILL when ours dies (util-linux setpriv --pdeathsig).

    The engine runs in a process group of its own, so a kill of ours (or of
    our group, as `timeout` sends) does not reach it; without this a killed
    ab-exec would leave its `podman exec` running, holding the container.
    Where setpriv is missing, argv is run as it is.
    """
    if not _SETPRIV:
        _SETPRIV.append(which("setpriv") or "")
    return [_SETPRIV[0], "--pdeathsig", "KILL", "--", *argv] if _SETPRIV[0] else list(argv)


# How long an engine call other than a build, a pull or the user's own command may take: a wedged
# engine (a container lock held by a stuck process) gets one clear line instead of a hang.
TIMEOUT_VAR = "AGENTSH_ENGINE_TIMEOUT"
DEFAULT_TIMEOUT = 300.0


def default_timeout() -> float | None:
    value = os.environ.get(TIMEOUT_VAR, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        seconds = DEFAULT_TIMEOUT
    return seconds if seconds > 0 else None


class EngineTimeout(EngineError):
    """An engine call that did not finish in time (its process was killed)."""


def timeout_error(argv: Sequence[str], timeout: float) -> EngineTimeout:
    what = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv[:3]))
    return EngineTimeout(f"'{what}' did not finish within {timeout:g} s (killed it); the engine may be stuck",
                         f"check 'podman ps' and 'ab-doctor'; {TIMEOUT_VAR}=SECONDS changes the limit")


def subprocess_runner(argv: list[str], input: bytes | None = None, capture: bool = True,
                      timeout: float | None = None) -> tuple[int, str, str]:
    import subprocess  # lazy: ab-exec starts the engine with posix_spawn, without subprocess

    timeout = timeout or default_timeout()
    try:
        proc = subprocess.run(
            tied(argv),
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            stdin=None if input is not None else subprocess.DEVNULL,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise EngineError(f"{argv[0]}: not found") from None
    except subprocess.TimeoutExpired:
        raise timeout_error(argv, timeout) from None
    out = proc.stdout.decode("utf-8", "replace") if capture else ""
    err = proc.stderr.decode("utf-8", "replace") if capture else ""
    return proc.returncode, out, err


# Failures of the engine's defaults on some hosts (cgroups v1 "hybrid" with
# crun; hosts refusing rootful Podman's default rlimits), fixed by a
# containers.conf the user selects, never by flags we hard-code.
HOST_QUIRKS = ("cgroups in hybrid mode", "error setting rlimit", "setrlimit")


# How a registry that cannot be reached shows in the engine's error text.
UNREACHABLE = ("pinging container registry", "no such host", "dial tcp", "connection refused", "i/o timeout",
               "tls handshake timeout")


# -- typed errors: one class for each case a caller tells apart -------------------


class ContainerGone(EngineError):
    """The container an operation names is not there, or not running."""


class NoSuchContainer(ContainerGone):
    """No container of that name or id."""


class NotRunning(ContainerGone):
    """The container exists but is stopped (an exec, say, needs it running)."""


class BrokenContainer(EngineError):
    """The engine lists the container but its storage is gone (a `rm` killed half-way: state "removing")."""


class NameInUse(EngineError):
    """`run` found a container of that name already there."""


class ImageMissing(EngineError):
    """The image is neither local nor (for a pull) in its registry."""


class RegistryUnreachable(EngineError):
    """The image registry cannot be reached (network, proxy, DNS)."""


class EngineUnavailable(EngineError):
    """The engine's service (Docker's daemon, a remote Podman) does not answer."""


class HostQuirk(EngineError):
    """The engine's defaults cannot start containers on this host; a containers.conf fixes it."""


class RootlessSetup(EngineError):
    """Rootless Podman lacks something only root can give (subordinate ids, /dev/net/tun, uidmap)."""


# How each case shows in the engine's error text (lower case), Podman's and Docker's.
NO_SUCH_CONTAINER = ("no such container", "no container with name or id")
NOT_RUNNING = ("container state improper", "is not running")
NAME_IN_USE = ("already in use",)
ENGINE_UNAVAILABLE = ("cannot connect to the docker daemon", "cannot connect to podman")
IMAGE_MISSING = ("image not known", "unable to find image", "manifest unknown", "no such image",
                 "repository does not exist", "initializing source")

_ENGINE_GONE = (b"no such container", b"no container with name or id", b"container state improper",
                b"has already been removed", b"does not exist in database", b"is not running")
# The engine's own error lines: Podman's and Docker's 20.10 client ("Error: "), Docker's daemon answer as newer
# clients show it ("Error response from daemon: ", status 1 rather than Podman's 125).
_ENGINE_PREFIXES = (b"error: ", b"error response from daemon: ")
GONE_STATUSES = (125, 1)


def is_gone_message(data: bytes) -> bool:
    """Whether an exec's first stderr bytes are the engine saying the container is gone or stopped.

    For ab-exec's relay, which sees raw bytes and must not wait for more;
    Engine.error gives the same answer as a NoSuchContainer or NotRunning.
    """
    head = data[:400].lower()
    return head.startswith(_ENGINE_PREFIXES) and any(m in head for m in _ENGINE_GONE)


COMPAT_OPT_OUT = "AGENTSH_ENGINE_COMPAT"  # "0": never apply the compatibility settings by itself
COMPAT_MARKER = "engine-compat"  # in the state dir: this host's Podman needs them (the podman path inside)


ROOTFUL_SOCKETS = ("/run/podman/", "/var/run/podman/", "/run/docker.sock", "/var/run/docker.sock")


def _rootless_address(host: str, own_socket: bool) -> bool:
    """Whether an engine address names a rootless engine: a path under /run/user/ or naming "rootless", an
    ssh:// login as someone other than root to a socket outside the rootful engines' places (an ordinary
    user's own Podman or Docker is rootless), or, with `own_socket` (Docker: dockerd-rootless.sh's socket is
    its user's; a rootful Podman service's socket may be handed to a user), a Unix socket the (non-root)
    user running us owns."""
    if "/run/user/" in host or "rootless" in host or (own_socket and _own_socket(host)):
        return True
    if host.startswith("ssh://"):
        import getpass  # lazy: only for an ssh:// address, off the local engine's hot path
        from urllib.parse import urlsplit  # lazy: as above

        try:
            parts = urlsplit(host)
            login = parts.username or getpass.getuser()
        except (ValueError, KeyError, OSError):
            return False
        return login != "root" and not parts.path.startswith(ROOTFUL_SOCKETS)
    return False


def _own_socket(host: str) -> bool:
    """Whether DOCKER_HOST names a Unix socket that the (non-root) user running us owns."""
    if not host.startswith("unix://") or os.geteuid() == 0:
        return False
    try:
        return os.stat(host[len("unix://"):]).st_uid == os.geteuid()
    except OSError:
        return False


def compat_conf() -> str:
    """The shipped containers.conf for hosts whose Podman defaults cannot start containers."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "containers-compat.conf")


def _compat_marker() -> str:
    return os.path.join(state_dir(), COMPAT_MARKER)


class Engine:
    """A Podman or Docker command line, and how its answers are read."""

    def __init__(self, name: str = "podman", runner: Runner | None = None, rootless: bool | None = None,
                 exe: str | None = None) -> None:
        if name not in INSTALL_HINT:
            raise EngineError(f"unknown engine {name!r}", "set engine to \"podman\" or \"docker\"")
        self.name = name
        self._exe = exe
        self.runner = runner or subprocess_runner
        self._rootless = rootless
        self._through: list[tuple[str, str] | None] = []  # [podman's connection] once read
        self.compat = False  # whether the compatibility settings are in force for this process
        if name == "podman" and runner is None and not os.environ.get("CONTAINERS_CONF") \
                and os.environ.get(COMPAT_OPT_OUT) != "0" and os.path.exists(_compat_marker()):
            os.environ["CONTAINERS_CONF"] = compat_conf()  # every engine process of ours inherits it
            self.compat = True

    def adopt_compat(self) -> bool:
        """After a HostQuirk: use the shipped settings from now on (remembered), unless the user chose.

        True when they were not in force and now are (worth one more try).
        """
        if not self.is_podman or self.compat or os.environ.get("CONTAINERS_CONF") \
                or os.environ.get(COMPAT_OPT_OUT) == "0":
            return False
        marker = _compat_marker()
        os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
        with open(marker, "w") as f:
            f.write(f"{self.exe}\n")
        os.environ["CONTAINERS_CONF"] = compat_conf()
        self.compat = True
        return True

    @property
    def exe(self) -> str:
        """The engine binary; a clear error when it is not installed."""
        if self._exe is None:
            found = which(self.name)
            if not found:
                raise EngineError(f"{self.name} is not installed (not found on PATH)", INSTALL_HINT[self.name])
            self._exe = found
        return self._exe

    @property
    def is_podman(self) -> bool:
        return self.name == "podman"

    @property
    def rootless(self) -> bool:
        """Rootless engines map the user's uid into the container themselves.

        Local Podman run by a non-root user is rootless. A remote Podman
        (CONTAINER_HOST) or Docker (DOCKER_HOST) is rootless when its address
        says so: a socket file a non-root user owns (what dockerd-rootless.sh
        and `podman system service` make, wherever XDG_RUNTIME_DIR is), an
        address naming /run/user/ or "rootless", or an ssh:// login as a user
        other than root. A rootful daemon's socket is root's.
        Decided without an engine call, since `ab-up` needs it on its hot path.
        """
        if self._rootless is None:
            host = os.environ.get("CONTAINER_HOST" if self.is_podman else "DOCKER_HOST", "")
            if self.is_podman and not host:
                through = self._podman_connection()
                host = through[1] if through else ""
                self._rootless = _rootless_address(host, own_socket=False) if host else os.geteuid() != 0
            else:
                self._rootless = _rootless_address(host, own_socket=not self.is_podman)
        return self._rootless

    def _podman_connection(self) -> tuple[str, str] | None:
        """The connection podman goes through without CONTAINER_HOST (connection.podman_connection), once."""
        if not self._through:
            self._through.append(connection.podman_connection())
        return self._through[0]

    @property
    def is_local(self) -> bool:
        """Whether the engine's containers are processes of this host (their pids are in our /proc).

        False for an engine reached through a connection (see `remote`): its
        sandboxes count as local only once a container's init is seen in our
        /proc (liveness.is_container_process), sandbox by sandbox.
        """
        return os.path.isdir("/proc/self") and self.remote is None

    @property
    def remote(self) -> str | None:
        """Where the engine is when it is reached through a connection, else None (the engine of this host).

        Podman: CONTAINER_HOST (what `podman --url` sets), CONTAINER_CONNECTION
        (a `podman system connection` name), or containers.conf's `remote = true`
        with its default connection. Docker: a DOCKER_HOST other than a Unix
        socket, DOCKER_CONTEXT, or the current context `docker context use`
        chose (in ~/.docker/config.json). No engine call: it is on ab-exec's path.
        """
        if self.is_podman:
            if os.environ.get("CONTAINER_HOST"):
                return os.environ["CONTAINER_HOST"]
            through = self._podman_connection()
            return through[0] if through else None
        host = os.environ.get("DOCKER_HOST")
        if host:
            return None if host.startswith("unix://") else host
        context = os.environ.get("DOCKER_CONTEXT") or connection.docker_context()
        return f"context {context}" if context and context != "default" else None

    # -- plumbing -------------------------------------------------------

    def argv(self, *args: str) -> Argv:
        return [self.exe, *args]

    def call(self, *args: str, input: bytes | None = None, check: bool = True, timeout: float | None = None,
             what: str | None = None) -> Any:
        """Run an engine subcommand: its stdout, or raises a clear error; check=False: (status, stdout, stderr)."""
        status, out, err = self.runner(self.argv(*args), input=input, timeout=timeout)
        if status != 0 and isinstance(self.error(err, what or args[0]), HostQuirk) and self.adopt_compat():
            status, out, err = self.runner(self.argv(*args), input=input, timeout=timeout)  # with the settings
        if status != 0 and check:
            raise self.error(err, what or args[0])
        return out if check else (status, out, err)

    def error(self, stderr: str, what: str) -> EngineError:
        """Turn engine stderr into one actionable line, typed by what went wrong."""
        text = " ".join(stderr.strip().split())
        low = text.lower()
        if any(s in low for s in NO_SUCH_CONTAINER):
            return NoSuchContainer(f"{what}: no such container")
        if "container not known" in low:
            return BrokenContainer(f"{what}: the container is half-removed ({text[-160:]})",
                                   "remove it with 'ab-down --rm' (podman rm -f NAME)")
        if "permission denied while trying to connect to the docker daemon socket" in low:
            where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            return EngineUnavailable(f"this user may not use the Docker daemon at {where} (permission denied on "
                                     "its socket)", "add the user to the socket's group (sudo usermod -aG docker "
                                     "$USER, then log in again), or use rootless Podman (engine = \"podman\")")
        if any(s in low for s in ENGINE_UNAVAILABLE):
            fix = ("start it: sudo systemctl start docker" if self.name == "docker"
                   else "start it: systemctl --user start podman.socket, or unset CONTAINER_HOST")
            return EngineUnavailable(f"the {self.name} engine is not running", fix)
        if "initializing source" in low and any(s in low for s in UNREACHABLE):
            return RegistryUnreachable(f"{what}: cannot reach the image registry ({text[-160:]})",
                                       "check the network or proxy, or build the image locally: "
                                       "ab-image build --bootstrap")
        if any(s in low for s in IMAGE_MISSING):
            return ImageMissing(f"{what}: image not found ({text[:160]})",
                                "build it with 'ab-image build' or set another image")
        if any(s in low for s in HOST_QUIRKS):
            first = stderr.strip().splitlines()[0] if stderr.strip() else text
            if self.compat:
                fix = f"agentsh already uses its compatibility settings ({compat_conf()}); check 'podman info'"
            elif os.environ.get(COMPAT_OPT_OUT) == "0":
                fix = f"unset {COMPAT_OPT_OUT} to let agentsh apply {compat_conf()} (runc, lower ulimits)"
            elif os.environ.get("CONTAINERS_CONF"):
                fix = (f"your CONTAINERS_CONF ({os.environ.get('CONTAINERS_CONF')}) does not fix it; "
                       f"agentsh's own settings are in {compat_conf()}")
            else:
                fix = f"use runc and lower ulimits: export CONTAINERS_CONF={compat_conf()}"
            return HostQuirk(f"{self.name} cannot start containers with its defaults on this host: {first}", fix)
        if self.is_podman and self.rootless:
            from agentsh.host import rootless  # lazy: only on a rootless engine's error path

            found = rootless.diagnose(stderr)
            if found:  # the engine's words ("sync pipe: EOF") do not say what is missing; this does
                message, fix = rootless.summary(found)
                return RootlessSetup(f"rootless {self.name} {what} failed ({rootless.engine_reason(stderr)}): "
                                     f"{message}", f"fix (once, as root): {fix}")
        last = text[-300:] if text else "no error text"
        if any(s in low for s in NAME_IN_USE):
            return NameInUse(f"{self.name} {what} failed: {last}")
        if any(s in low for s in NOT_RUNNING):
            return NotRunning(f"{self.name} {what} failed: {last}")
        return EngineError(f"{self.name} {what} failed: {last}")

    # -- containers -----------------------------------------------------

    def inspect(self, name: str) -> dict | None:
        """The container's inspect dict, or None if there is no such container."""
        status, out, err = self.call("container", "inspect", name, check=False)
        if status != 0:
            e = self.error(err, "inspect")
            if isinstance(e, NoSuchContainer):
                return None
            raise e
        data = _json_loads(out or "[]")
        return data[0] if data else None

    def run_detached(self, run_args: Argv) -> str:
        return self.call("run", "-d", *run_args, what="run").strip()

    def create(self, run_args: Argv) -> str:
        """`create` with `run` arguments: the container is made (and checked by the engine), not started."""
        return self.call("create", *run_args, what="create").strip()

    def rename(self, name: str, new_name: str) -> None:
        self.call("rename", name, new_name)

    def start(self, name: str) -> None:
        self.call("start", name)

    def stop(self, name: str, timeout: int = 5) -> None:
        self.call("stop", "-t", str(timeout), name)

    def remove(self, name: str, *more: str) -> None:
        """Remove containers (running or not); a missing one is no error.

        One call each: Podman 4's `rm -f A B` removes neither when A is missing, and says nothing.
        """
        for one in (name, *more):
            status, _, err = self.call("rm", "-f", one, check=False)
            if status != 0:
                e = self.error(err, "rm")
                if not isinstance(e, NoSuchContainer):
                    raise e

    def exec_argv(self, name: str, cmd: Sequence[str], workdir: str | None = None, env_names: Iterable[str] = (),
                  tty: bool = False, interactive: bool = True, user: str | None = None) -> Argv:
        """argv for `exec`: env values come from the caller's environment, never argv."""
        args = ["exec"]
        if interactive:
            args.append("-i")
        if tty:
            args.append("-t")
        if workdir:
            args += ["-w", workdir]
        if user:
            args += ["-u", user]
        for n in env_names:
            args += ["-e", n]
        return self.argv(*args, name, *cmd)

    def list(self, labels: dict[str, str]) -> Rows:
        """Containers carrying all of `labels` ({key: value}), as dicts."""
        filters = []
        for k, v in labels.items():
            filters += ["--filter", f"label={k}={v}"]
        if self.is_podman:
            return _json_loads(self.call("ps", "-a", *filters, "--format", "json") or "[]")
        out = self.call("ps", "-a", "--no-trunc", *filters, "--format", "{{json .}}")
        return [_json_loads(line) for line in out.splitlines() if line.strip()]

    def storage_only(self, name_filter: str) -> list[str]:
        """Names of containers that exist only in the engine's storage (a `run` or `create` killed half-way).

        Podman's `ps -a` does not show them, `ps -a --external` does, and
        their names stay taken ("already in use") until `rm -f` removes them.
        """
        if not self.is_podman:
            return []
        # (`--filter` does not apply to storage-only containers in Podman 4: filtered here)
        rows = _json_loads(self.call("ps", "-a", "--external", "--format", "json") or "[]")
        return sorted(n for r in rows if str(r.get("State", "")).lower() == "storage"
                      for n in (r.get("Names") or []) if name_filter in n)

    # -- volumes and images ------------------------------------------------

    def volume_remove(self, name: str) -> None:
        self.call("volume", "rm", "-f", name, check=False)

    def volumes(self, prefix: str) -> list[str]:
        """Names of the volumes whose name starts with `prefix`."""
        out = self.call("volume", "ls", "-q", "--filter", f"name={prefix}")
        return sorted(n for n in out.split() if n.startswith(prefix))

    def volume_owned(self, name: str, image: str, uid: int, gid: int) -> None:
        """Make the named volume (unless it is there) and give its root directory to uid:gid.

        Docker makes a new volume root's, and has no option like Podman's `:U`;
        a non-root user of a rootful daemon (the `docker` group) could not write
        a home on it. A throwaway container from the sandbox's own image, with
        CAP_CHOWN only and no network, changes the owner of the top directory.
        """
        self.call("volume", "create", name, what="volume create")
        self.call("run", "--rm", "--network=none", "--user=0:0", "--cap-drop=all", "--cap-add=CHOWN",
                  "--security-opt=no-new-privileges", "-v", f"{name}:/agentsh-volume", "--entrypoint", "chown",
                  image, f"{int(uid)}:{int(gid)}", "/agentsh-volume", what="run (the home volume's owner)")

    def overlay_volume(self, name: str, lower: str, upper: str, work: str) -> None:
        """A volume that mounts an overlay of host dir `lower` (never written) with writes kept in `upper`.

        Docker's local volume driver mounts it when a container starts (the
        daemon does, as root): what Podman's `-v P:P:O,upperdir=U,workdir=W` is,
        for an engine that has no `:O`. Made once; the same name means the same dirs.
        """
        for path in (lower, upper, work):
            if any(c in path for c in ",:"):
                raise EngineError(f"{path} contains ',' or ':', which an overlay mount cannot name",
                                  "rename or move the directory")
        if self.call("volume", "inspect", name, check=False)[0] == 0:
            return
        self.call("volume", "create", "--driver", "local", "--opt", "type=overlay", "--opt", "device=overlay",
                  "--opt", f"o=lowerdir={lower},upperdir={upper},workdir={work}", name, what="volume create")

    def image_exists(self, image: str) -> bool:
        if self.is_podman:
            return self.call("image", "exists", image, check=False)[0] == 0
        return self.call("image", "inspect", image, check=False)[0] == 0

    def images(self, reference: str | None = None) -> Rows:
        args = ["images", "--format", "json" if self.is_podman else "{{json .}}"]
        if reference:
            args += ["--filter", f"reference={reference}"]
        out = self.call(*args)
        if self.is_podman:
            return _json_loads(out or "[]")
        return [_json_loads(line) for line in out.splitlines() if line.strip()]

    def info(self) -> dict:
        # `{{json .}}`, not `json`: Docker's 20.10 client (Debian 12's) prints the word "json" for that
        return _json_loads(self.call("info", "--format", "{{json .}}"))

    # -- image building (ab-image) ------------------------------------------

    def build_argv(self, context: str, tag: str, file: str | None = None, build_args: dict[str, str] | None = None,
                   secrets: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                   no_cache: bool = False, pull: str = "never", target: str | None = None,
                   cache_from: Sequence[str] = (), options: Sequence[str] = ()) -> Argv:
        """argv for `build`. By default the base must already be local: nothing is pulled
        (`pull="missing"` lets Podman pull a missing base; Docker pulls what is missing anyway).
        `options`: further `--flag[=value]` words, already checked by the caller.

        secrets ({id: host file}) reach only the RUN steps that mount them
        (`RUN --mount=type=secret,id=ID`); they are not kept in the image and
        do not change its layer cache.
        """
        args = ["build", "-t", tag]
        if file:
            args += ["-f", file]
        for k, v in (build_args or {}).items():
            args += ["--build-arg", f"{k}={v}"]
        for k, v in (secrets or {}).items():
            args += ["--secret", f"id={k},src={v}"]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        if self.is_podman:
            args.append(f"--pull={pull}")
        if no_cache:
            args.append("--no-cache")
        if target:
            args.append(f"--target={target}")
        args += [f"--cache-from={ref}" for ref in cache_from]
        args += list(options)
        return self.argv(*args, context)

    def build(self, context: str, tag: str, on_line: Callable[[str], None] | None = None,
              timeout: float | None = None, **kw: Any) -> None:
        """Build an image, streaming its output lines to on_line.

        On failure: an EngineError whose `tail` holds the last output lines.
        """
        status, tail = self.stream(self.build_argv(context, tag, **kw), on_line, timeout=timeout)
        if status != 0 and any(q in line.lower() for line in tail for q in HOST_QUIRKS) and self.adopt_compat():
            status, tail = self.stream(self.build_argv(context, tag, **kw), on_line, timeout=timeout)
        if status != 0:
            step = next((line for line in reversed(tail) if line.startswith(("STEP ", "Step ", "#"))), "")
            where = f" at {step.split(':', 1)[0]}" if step.startswith(("STEP ", "Step ")) else ""
            reason = next((line.strip() for line in reversed(tail) if line.strip()), f"exit status {status}")
            error = self.error(reason, "build")
            if not isinstance(error, RootlessSetup):
                error = EngineError(f"{self.name} build failed{where}: {reason.removeprefix('Error: ')[-300:]}")
            error.tail = tail
            raise error

    def pull(self, image: str, on_line: Callable[[str], None] | None = None, timeout: float | None = None) -> None:
        """Pull an image; an EngineError naming the engine's reason when it cannot."""
        status, tail = self.stream(self.argv("pull", image), on_line, timeout=timeout)
        if status != 0:
            reason = next((line.strip() for line in reversed(tail) if line.strip()), f"exit status {status}")
            raise EngineError(f"cannot pull {image}: {reason.removeprefix('Error: ')[-300:]}")

    def import_image(self, tarball: str, ref: str, changes: Iterable[str] = ()) -> str:
        """Make an image from a root filesystem tarball; returns its id."""
        args = ["import"]
        for change in changes:
            args += ["--change", change]
        out = self.call(*args, tarball, ref, what="import", timeout=3600)
        return out.strip().splitlines()[-1].removeprefix("sha256:") if out.strip() else ""

    def image_inspect(self, image: str) -> dict | None:
        """The image's inspect dict, or None when there is no such image."""
        status, out, _ = self.call("image", "inspect", image, check=False)
        if status != 0:
            return None
        data = _json_loads(out or "[]")
        return data[0] if data else None

    def stream(self, argv: Argv, on_line: Callable[[str], None] | None = None, timeout: float | None = None,
               keep: int = 60) -> tuple[int, Argv]:
        """Run argv, passing each output line (stdout and stderr merged) to on_line.

        Returns (status, the last `keep` lines). A runner other than the
        subprocess one (a test's) is called once and its output replayed.
        """
        from collections import deque  # lazy: only for builds, pulls and postCreateCommand

        tail = deque(maxlen=keep)

        def emit(line: str) -> None:
            tail.append(line)
            if on_line:
                on_line(line)

        if self.runner is not subprocess_runner:
            status, out, err = self.runner(argv, timeout=timeout)
            for line in (out + err).splitlines():
                emit(line)
            return status, list(tail)
        import subprocess  # lazy: only for builds, pulls and postCreateCommand
        import threading  # lazy: only for builds, pulls and postCreateCommand

        try:
            proc = subprocess.Popen(tied(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise EngineError(f"{argv[0]}: not found") from None
        timer = None
        if timeout:
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
        try:
            with proc.stdout:
                for raw in proc.stdout:
                    # progress bars redraw with \r: keep the last state of the line
                    emit(raw.decode("utf-8", "replace").rstrip("\r\n").rsplit("\r", 1)[-1])
            status = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
        return status, list(tail)


    # -- credentials (agentsh.creds.delivery) ------------------------------------------

    def exec_bytes(self, name: str, cmd: Sequence[str], input: bytes = b"",
                   timeout: float | None = None) -> tuple[int, bytes, str]:
        """Run cmd in a container with raw bytes on stdin and stdout.

        Secrets travel this way (never on argv); the answer stays bytes so a
        token file comes back exactly. Returns (status, stdout bytes, stderr text).
        """
        argv = self.argv("exec", "-i", name, *cmd)
        if self.runner is not subprocess_runner:
            status, out, err = self.runner(argv, input=input, timeout=timeout)
            return status, out if isinstance(out, bytes) else out.encode(), err
        import subprocess  # lazy: only for credential files sent through the engine's exec

        try:
            proc = subprocess.run(tied(argv), input=input, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise EngineError(f"{argv[0]}: not found") from None
        except subprocess.TimeoutExpired:
            raise EngineError(f"{self.name} exec in {name} did not finish within {timeout} s") from None
        return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")

    # -- network policy (agentsh.egress.network) ---------------------------------------

    def unshare_argv(self, cmd: Sequence[str]) -> Argv:
        """argv running cmd in rootless Podman's user namespace (where it may enter a sandbox's namespaces)."""
        return self.argv("unshare", *cmd)
