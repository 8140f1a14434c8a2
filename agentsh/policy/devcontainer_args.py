"""Engine flags a devcontainer.json brings (`runArgs`, `build.options`, mount strings), sorted.

A flag is passed on only when it cannot weaken the sandbox; each other one
is refused with the reason or ignored with what agentsh does instead. The
flags passed are rebuilt as `--flag=value` from checked values, never
copied as words (a value cannot smuggle a second flag).
"""

from __future__ import annotations

from agentsh.base.errors import ConfigError
from agentsh.policy.values import ENV_NAME, check_sandbox_path, control_character

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Iterator

HOST_NAMESPACE = "shares a host namespace with the sandbox"
DEVICES = "gives the sandbox host devices"
NETWORK = "the sandbox's network is agentsh's ([network] mode in config)"
LIMITS = "resource limits are agentsh's (config memory, cpus, pids)"
MOUNTS = "host paths reach the sandbox only through mounts, which ab-allow shows"

# flag -> (takes a value, what to do): "pass", "env", "publish", "tmpfs", "label", or ("refuse"|"ignore", why).
RUN_FLAGS = {
    "--add-host": (True, "pass"), "--shm-size": (True, "pass"), "--hostname": (True, "pass"),
    "-h": (True, "--hostname"), "--expose": (True, "pass"), "--stop-signal": (True, "pass"),
    "--annotation": (True, "pass"),
    "--label": (True, "label"), "-l": (True, "label"),
    "--env": (True, "env"), "-e": (True, "env"),
    "--publish": (True, "publish"), "-p": (True, "publish"),
    "--tmpfs": (True, "tmpfs"),
    "--privileged": (False, ("refuse", "gives the sandbox every capability and the host's devices")),
    "--cap-add": (True, ("refuse", "adds capabilities; config cap_add is yours to set")),
    "--security-opt": (True, ("refuse", "loosens the sandbox's confinement (seccomp, AppArmor, SELinux, "
                                        "no-new-privileges)")),
    "--device": (True, ("refuse", DEVICES)), "--device-cgroup-rule": (True, ("refuse", DEVICES)),
    "--gpus": (True, ("refuse", DEVICES)),
    "--pid": (True, ("refuse", HOST_NAMESPACE)), "--ipc": (True, ("refuse", HOST_NAMESPACE)),
    "--uts": (True, ("refuse", HOST_NAMESPACE)), "--userns": (True, ("refuse", HOST_NAMESPACE)),
    "--cgroupns": (True, ("refuse", HOST_NAMESPACE)), "--cgroup-parent": (True, ("refuse", HOST_NAMESPACE)),
    "--network": (True, ("refuse", NETWORK)), "--net": (True, ("refuse", NETWORK)),
    "--dns": (True, ("refuse", NETWORK)), "--dns-search": (True, ("refuse", NETWORK)),
    "--dns-option": (True, ("refuse", NETWORK)), "--ip": (True, ("refuse", NETWORK)),
    "--ip6": (True, ("refuse", NETWORK)), "--mac-address": (True, ("refuse", NETWORK)),
    "--network-alias": (True, ("refuse", NETWORK)), "--link": (True, ("refuse", NETWORK)),
    "--volume": (True, ("refuse", MOUNTS)), "-v": (True, ("refuse", MOUNTS)),
    "--mount": (True, ("refuse", MOUNTS)), "--volumes-from": (True, ("refuse", MOUNTS)),
    "--user": (True, ("refuse", "the sandbox's user comes from remoteUser or containerUser")),
    "-u": (True, ("refuse", "the sandbox's user comes from remoteUser or containerUser")),
    "--group-add": (True, ("refuse", "adds the sandbox user to host groups")),
    "--env-file": (True, ("refuse", "reads a host file into the container's environment")),
    "--entrypoint": (True, ("refuse", "the sandbox runs agentsh's keep-alive")),
    "--workdir": (True, ("refuse", "commands start in the project")),
    "-w": (True, ("refuse", "commands start in the project")),
    "--publish-all": (False, ("refuse", "publishes every port of the image on the host")),
    "-P": (False, ("refuse", "publishes every port of the image on the host")),
    "--memory": (True, ("refuse", LIMITS)), "-m": (True, ("refuse", LIMITS)),
    "--memory-swap": (True, ("refuse", LIMITS)), "--cpus": (True, ("refuse", LIMITS)),
    "--cpu-shares": (True, ("refuse", LIMITS)), "--cpuset-cpus": (True, ("refuse", LIMITS)),
    "--pids-limit": (True, ("refuse", LIMITS)), "--ulimit": (True, ("refuse", LIMITS)),
    "--oom-kill-disable": (False, ("refuse", LIMITS)), "--oom-score-adj": (True, ("refuse", LIMITS)),
    "--sysctl": (True, ("refuse", "changes kernel settings of the sandbox")),
    "--runtime": (True, ("refuse", "the runtime is the engine's setting")),
    "--storage-opt": (True, ("refuse", "changes the engine's storage")),
    "--read-only": (False, ("refuse", "the sandbox needs its writable root")),
    "--init": (False, ("ignore", "the sandbox always runs an init")),
    "--rm": (False, ("ignore", "the sandbox is kept; ab-down --rm removes it")),
    "--name": (True, ("ignore", "agentsh names the sandbox")),
    "--cap-drop": (True, ("ignore", "the sandbox drops every capability already")),
    "--restart": (True, ("ignore", "ab-up starts the sandbox")),
    "--pull": (True, ("ignore", "config pull decides")),
    "--log-driver": (True, ("ignore", "the engine's default")), "--log-opt": (True, ("ignore", "the engine's default")),
    "--interactive": (False, ("ignore", "agentsh runs the sandbox detached")),
    "--tty": (False, ("ignore", "agentsh runs the sandbox detached")),
    "--detach": (False, ("ignore", "agentsh runs the sandbox detached")),
    "-i": (False, ("ignore", "agentsh runs the sandbox detached")),
    "-t": (False, ("ignore", "agentsh runs the sandbox detached")),
    "-d": (False, ("ignore", "agentsh runs the sandbox detached")),
    "-it": (False, ("ignore", "agentsh runs the sandbox detached")),
    "--platform": (True, ("ignore", "the image decides")),
}
UNKNOWN = "not known to be safe in a sandbox"
TMPFS_OPTIONS = ("rw", "ro", "noexec", "nosuid", "nodev", "exec")


class RunArgs:
    """runArgs sorted: `args` to pass, `env` ({name: value, or None for the host's}), `ports`, `tmpfs`,
    `refused` and `ignored` as (flag, why)."""

    def __init__(self) -> None:
        self.args, self.env, self.ports, self.tmpfs, self.refused, self.ignored = [], {}, [], [], [], []


def _words(words: list[str]) -> Iterator[tuple[str | None, str | None, str]]:
    """(flag, value or None, shown) for each flag of an engine command line."""
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-") or word == "-":
            yield None, word, word
            continue
        name, eq, value = word.partition("=")
        if not eq and len(name) > 2 and not name.startswith("--") and name[:2] in RUN_FLAGS \
                and RUN_FLAGS[name[:2]][0]:
            name, value, eq = name[:2], name[2:], "="  # -eNAME=1, -p3000
        takes = RUN_FLAGS.get(name, (None, None))[0]
        if not eq and takes and i < len(words):
            value = words[i]
            i += 1
        yield name, (value if (eq or takes) else None), word if not (takes and not eq) else f"{word} {value}"


def run_args(words: list[str], project_root: str) -> RunArgs:
    """Sort a devcontainer's runArgs (already substituted) into a RunArgs."""

    out = RunArgs()
    for flag, value, shown in _words(words):
        if value is not None and control_character(value):
            raise ConfigError(f"runArgs: {shown!r} holds a control character", "remove it")
        if flag is None:
            out.refused.append((shown, "not a flag (a value without its flag?)"))
            continue
        takes, action = RUN_FLAGS.get(flag, (None, ("refuse", UNKNOWN)))
        if takes and value is None:
            out.refused.append((shown, "has no value"))
            continue
        if action == "--hostname":
            flag, action = "--hostname", "pass"
        if isinstance(action, tuple):
            kind, why = action
            if flag in ("--network", "--net") and value in ("host",):
                why = HOST_NAMESPACE
            (out.refused if kind == "refuse" else out.ignored).append((shown, why))
        elif action == "pass":
            if value.startswith("-") or any(c in value for c in " \t"):
                out.refused.append((shown, "its value looks like another flag"))
            else:
                out.args.append(f"{flag}={value}")
        elif action == "label":
            if value.startswith("io.agentsh"):
                out.refused.append((shown, "agentsh's own labels"))
            else:
                out.args.append(f"--label={value}")
        elif action == "env":
            name, eq, text = value.partition("=")
            if not ENV_NAME.match(name):
                out.refused.append((shown, f"{name!r} is not a variable name"))
            else:
                out.env[name] = text if eq else None
        elif action == "publish":
            port = value.rsplit(":", 1)[-1].split("/")[0]
            if not (port.isdigit() and port.isascii() and 1 <= int(port) <= 65535):
                out.refused.append((shown, "not a port"))
            else:
                out.ports.append(int(port))
                if ":" in value:
                    out.ignored.append((shown, f"published as container port {port}; agentsh picks the host "
                                               "side (ab-status shows it; ab-up -p HOST:CONTAINER sets it)"))
        elif action == "tmpfs":
            out.tmpfs.append(_tmpfs(value, shown, out))
    return out


def _tmpfs(value: str, shown: str, out: RunArgs) -> tuple[str, str]:

    target, _, opts = value.partition(":")
    check_sandbox_path(target, f"runArgs {shown!r}")
    kept = []
    for opt in filter(None, opts.split(",")):
        key = opt.split("=", 1)[0]
        if opt in TMPFS_OPTIONS or (key in ("size", "mode") and opt[len(key) + 1:].isalnum()):
            kept.append(opt)
        else:
            out.ignored.append((f"{shown} {opt}", "tmpfs option agentsh does not pass"))
    return target, ",".join(kept)


BUILD_FLAGS = {
    "--no-cache": (False, "pass"), "--pull": (None, "pass"), "--platform": (True, "pass"),
    "--label": (True, "label"), "--build-arg": (True, "pass"), "--add-host": (True, "pass"),
    "--quiet": (False, "pass"), "-q": (False, "--quiet"), "--squash": (False, "pass"),
    "--layers": (None, "pass"), "--target": (True, "pass"),
    "--progress": (True, ("ignore", "the engine's own progress output is shown")),
    "--network": (True, ("refuse", "the build's network is the engine's default")),
    "--secret": (True, ("refuse", "hands host files to the build")),
    "--ssh": (True, ("refuse", "hands the host's SSH agent or keys to the build")),
    "--volume": (True, ("refuse", "mounts host paths into the build")), "-v": (True, ("refuse", "mounts host "
                                                                                      "paths into the build")),
    "--security-opt": (True, ("refuse", "loosens the build's confinement")),
    "--cap-add": (True, ("refuse", "loosens the build's confinement")),
    "--device": (True, ("refuse", "gives the build host devices")),
    "--file": (True, ("refuse", "the Dockerfile is build.dockerfile")), "-f": (True, ("refuse", "the Dockerfile "
                                                                                      "is build.dockerfile")),
    "--tag": (True, ("refuse", "agentsh tags the image")), "-t": (True, ("refuse", "agentsh tags the image")),
}


def build_options(words: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(flags to pass as --flag[=value], [(flag, why) refused or ignored]) of build.options."""

    kept, refused = [], []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        name, eq, value = word.partition("=")
        takes, action = BUILD_FLAGS.get(name, (None, ("refuse", UNKNOWN)))
        if not word.startswith("-"):
            refused.append((word, "not a flag (a value without its flag?)"))
            continue
        if not eq and takes and i < len(words):
            value, eq = words[i], "="
            i += 1
        if control_character(word + value):
            raise ConfigError(f"build.options: {word!r} holds a control character", "remove it")
        if action == "--quiet":
            name, action = "--quiet", "pass"
        if isinstance(action, tuple):
            refused.append((word, action[1]))
        elif takes and not eq:
            refused.append((word, "has no value"))
        elif eq and (value.startswith("-") or any(c in value for c in " \t")) and name != "--build-arg":
            refused.append((word, "its value looks like another flag"))
        elif action == "label" and value.startswith("io.agentsh"):
            refused.append((word, "agentsh's own labels"))
        elif name == "--pull" and eq and value not in ("always", "missing", "never", "newer", "true", "false"):
            refused.append((word, "not a pull policy"))
        else:
            kept.append(f"{name}={value}" if eq else name)
    return kept, refused


def mount_fields(text: str, where: str) -> dict[str, str]:
    """"type=bind,source=/a,target=/b,readonly" -> {"type": "bind", ..., "readonly": ""}."""
    fields = {}
    for part in text.split(","):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not key:
            raise ConfigError(f"{where}: {text!r} is not a mount (key=value,...)",
                              "write e.g. source=/host/path,target=/path,type=bind")
        fields[key] = value if eq else ""
    return fields
