"""A fake engine runner that records argv and answers from a script."""

import json

from agentsh.host.engine import Engine


class FakeRunner:
    """Records every call; answers with the first matching (prefix -> reply)."""

    def __init__(self):
        self.calls = []
        self.containers = {}  # name -> inspect dict
        self.images = set()
        self.pid = 0  # the "container's" init pid inspect reports

    def __call__(self, argv, input=None, capture=True, timeout=None):
        args = argv[1:]
        self.calls.append(args)
        cmd = args[0]
        if args[:2] == ["container", "inspect"]:
            info = self.containers.get(args[2])
            if info is None:
                return 125, "", f'Error: no container with name or ID "{args[2]}" found: no such container'
            return 0, json.dumps([info]), ""
        if cmd == "run":
            name = args[args.index("--name") + 1]
            if name in self.containers:
                return 125, "", f'Error: creating container storage: the container name "{name}" is already in use'
            labels = dict(a.split("=", 1) for i, a in enumerate(args) if i and args[i - 1] == "--label")
            self.containers[name] = {"Id": "id-" + name, "State": {"Status": "running", "Pid": self.pid},
                                     "Config": {"Labels": labels, "Image": ""}}
            return 0, "id-" + name + "\n", ""
        if cmd == "rm":
            self.containers.pop(args[-1], None)
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
        return 0, "", ""

    def commands(self):
        return [c[0] if c[0] not in ("container", "image", "volume") else " ".join(c[:2]) for c in self.calls]


def fake_engine(rootless=False):
    runner = FakeRunner()
    return Engine("podman", runner=runner, rootless=rootless, exe="podman"), runner
