"""The one engine fake: a recording runner, and the same recording as a `podman` script.

`FakeRunner` stands in for the engine inside this process (`Engine(runner=...)`):
it records every argv and answers from a small model of containers and images.
Where code under test runs the engine as a subprocess (`ab-exec` starts
`podman exec`), `install_podman_script` puts a `podman` on PATH that records
its calls in the same form (`ScriptLog.calls`), plus the stdin and the
variables it was asked to watch.
"""

import json
import os
import shlex
from pathlib import Path

from agentsh.host.engine import Engine

PULL_ERROR = ('Trying to pull docker.io/library/debian:bookworm-slim...\n'
              'Error: initializing source docker://debian:bookworm-slim: pinging container registry '
              'registry-1.docker.io: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
              'registry-1.docker.io: no such host\n')
IMAGE_ID = "sha256:0123456789abcdef0123"


class FakeRunner:
    """Records every call; answers like podman would from what it was told exists.

    containers: name -> inspect dict (made by `run`, changed by start/stop/rm);
    images: names that exist (added by pull when `pull_ok`, import and a good build);
    build_status/build_output: what `build` answers; listing: what `images` lists.
    """

    def __init__(self, images=(), pull_ok=False, build_status=0, build_output=None):
        self.calls = []
        self.containers = {}  # name -> inspect dict
        self.images = set(images)
        self.pull_ok = pull_ok
        self.build_status = build_status
        self.build_output = build_output
        self.listing = []
        self.pid = 0  # the "container's" init pid inspect reports
        self.probe_status, self.probe_output = 0, ""  # what a throwaway `run --rm IMAGE` answers
        self.info = {"host": {"security": {"rootless": False}}, "store": {"graphDriverName": "overlay"},
                     "version": {"Version": "4.3.1"}}  # what `info` answers

    def __call__(self, argv, input=None, capture=True, timeout=None):
        args = list(argv[1:])
        self.calls.append(args)
        cmd = args[0]
        if args[:2] == ["container", "inspect"]:
            info = self.containers.get(args[2])
            if info is None:
                return 125, "", f'Error: no container with name or ID "{args[2]}" found: no such container'
            return 0, json.dumps([info]), ""
        if cmd == "run" and "--rm" in args and "--name" not in args:  # a throwaway start (image.probe)
            return self.probe_status, self.probe_output, ""
        if cmd in ("run", "create"):
            name = args[args.index("--name") + 1]
            if name in self.containers:
                return 125, "", f'Error: creating container storage: the container name "{name}" is already in use'
            labels = dict(a.split("=", 1) for i, a in enumerate(args) if i and args[i - 1] == "--label")
            self.containers[name] = {"Id": "id-" + name,
                                     "State": {"Status": "running" if cmd == "run" else "created", "Pid": self.pid},
                                     "Config": {"Labels": labels, "Image": ""}}
            return 0, "id-" + name + "\n", ""
        if cmd == "rename":
            if args[1] not in self.containers:
                return 125, "", "Error: no container with name or ID found: no such container"
            self.containers[args[2]] = self.containers.pop(args[1])
            return 0, "", ""
        if cmd == "rm":
            for name in args[1:]:
                if not name.startswith("-"):
                    self.containers.pop(name, None)
            return 0, "", ""
        if cmd in ("start", "unpause"):
            self.containers[args[-1]]["State"]["Status"] = "running"
            return 0, "", ""
        if cmd == "stop":
            if args[-1] not in self.containers:
                return 125, "", "Error: no container with name or ID found: no such container"
            self.containers[args[-1]]["State"]["Status"] = "exited"
            return 0, "", ""
        if args[:2] == ["image", "exists"]:
            return (0 if args[2] in self.images else 1), "", ""
        if args[:2] == ["image", "inspect"]:
            if args[2] not in self.images:
                return 125, "", "Error: no such image"
            return 0, json.dumps([{"Id": IMAGE_ID, "Size": 1234}]), ""
        if cmd == "pull":
            if not self.pull_ok:
                return 125, "", PULL_ERROR
            self.images.add(args[1])
            return 0, "Writing manifest to image destination\n", ""
        if cmd == "import":
            self.images.add(args[-1])
            return 0, "sha256:feedface\n", ""
        if cmd == "build":
            if self.build_status == 0:
                self.images.add(args[args.index("-t") + 1])
            out = self.build_output or "STEP 1/3: FROM base\nSTEP 2/3: RUN true\nCOMMIT x\n--> 0123\n"
            return self.build_status, out, ""
        if cmd == "images":
            return 0, json.dumps(self.listing), ""
        if cmd == "info":
            return 0, json.dumps(self.info), ""
        if cmd == "version":
            return 0, self.info["version"]["Version"] + "\n", ""
        return 0, "", ""

    def commands(self):
        return [c[0] if c[0] not in ("container", "image", "volume") else " ".join(c[:2]) for c in self.calls]

    def find(self, cmd):
        return [c for c in self.calls if c[0] == cmd]

    def build_args(self):
        (build,) = self.find("build")
        return build

    def build_arg_values(self):
        args = self.build_args()
        return dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--build-arg")


def fake_engine(rootless=False, **runner_options):
    runner = FakeRunner(**runner_options)
    return Engine("podman", runner=runner, rootless=rootless, exe="podman"), runner


# -- the same fake as a program, for code that runs the engine as a subprocess -----------


def podman_script(record_dir, watch=()):
    """A `podman` that answers 0 to everything and records, in `record_dir`:

    calls: one line per call, its arguments space-joined (newlines in them as spaces);
    env-NAME: for each `exec`, one line with the value of NAME it saw (`unset` if none);
    stdin: what an `exec ... sh -c` read on its standard input.
    """
    d = shlex.quote(str(record_dir))
    lines = ["#!/bin/sh", f"d={d}", """printf '%s' "$*" | tr '\\n' ' ' >> "$d/calls"; echo >> "$d/calls\"""",
             'if [ "$1" = exec ]; then']
    for name in watch:
        if not name.isidentifier():
            raise ValueError(name)
        lines.append(f"""  printf '%s\\n' "${{{name}-unset}}" >> "$d/env-{name}\"""")
    lines += ["""  case "$*" in *"sh -c"*) cat >> "$d/stdin" ;; esac""", "fi", "exit 0", ""]
    return "\n".join(lines)


class ScriptLog:
    """What the fake `podman` program recorded."""

    def __init__(self, record_dir):
        self.dir = record_dir

    def calls(self):
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def argvs(self):
        return [line.split() for line in self.calls()]

    def env(self, name):
        path = self.dir / f"env-{name}"
        return path.read_text().splitlines() if path.exists() else []

    def stdin(self):
        path = self.dir / "stdin"
        return path.read_bytes() if path.exists() else b""

    def clear(self):
        for path in self.dir.iterdir():
            path.unlink()


def install_podman_script(bindir, record_dir, watch=()):
    """Write the fake `podman` into `bindir` (recording into `record_dir`); returns its log."""
    os.makedirs(bindir, exist_ok=True)
    os.makedirs(record_dir, exist_ok=True)
    script = os.path.join(bindir, "podman")
    with open(script, "w") as f:
        f.write(podman_script(record_dir, watch))
    os.chmod(script, 0o755)
    return ScriptLog(Path(record_dir))
