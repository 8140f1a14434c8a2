"""Attacks on the egress proxy's address checks, from inside real sandboxes, rootful and rootless.

"The internet" is a TCP server on the host listening on every address (::,
dual stack), so a request the proxy lets through to the host's loopback or
LAN addresses reaches it; the server records every connection it accepts.
Each attack runs busybox nc against the proxy port inside the sandbox
(127.0.0.1:3128, the only way out in modes "allow" and "learn") and checks
the reply, that the server saw no connection, and the audit log. Each test
then shows the same server reached once a rule names the destination (the
control: the refusal is the policy, not a broken set-up).
"""

import copy
import ipaddress
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.conftest import TINY_IMAGE, remove_sandboxes_under
from tests.egress_origin import Origin

pytestmark = pytest.mark.usefixtures("tiny_image")


@pytest.fixture
def origin():
    srv = Origin(b"hello from origin")
    yield srv
    srv.close()


class Box:
    """One project and its sandbox, driven as this process's user (rootful) or as the test user (rootless)."""

    def __init__(self, kind, project, state_home, runner, write_config):
        self.kind, self.project, self.state_home = kind, str(project), str(state_home)
        self._run, self._write_config = runner, write_config
        self.name = None
        self.proxy_pids = set()

    def run(self, *argv, input=None):
        return self._run(*argv, input=input)

    def configure(self, network_toml):
        self._write_config(f'image = "{TINY_IMAGE}"\n{network_toml}')

    def up(self):
        proc = self.run("ab-up", self.project)
        assert proc.returncode == 0, proc.stderr.decode()
        self.name = proc.stdout.decode().strip()
        self.note_proxy()
        return self.name

    def note_proxy(self):
        show = self.run("ab-net", "show", "--json", self.project)
        if show.returncode == 0:
            pid = json.loads(show.stdout)["proxy"]["pid"]
            if pid:
                self.proxy_pids.add(pid)

    def send(self, requests):
        """Each request (bytes) on its own connection to the proxy, from inside; the replies, in order."""
        if self.name is None:
            self.up()
        lines = []
        for i, data in enumerate(requests):
            lines.append(f"echo '=== {i}'; printf '{_printf_escape(data)}' | timeout 20 nc 127.0.0.1 3128; echo")
        proc = self.run("ab-exec", "--dir", self.project, "--", "sh", "-c", "\n".join(lines))
        assert proc.returncode == 0, proc.stderr.decode()
        replies = proc.stdout.split(b"=== ")[1:]
        assert len(replies) == len(requests), proc.stdout[-500:]
        return [r.split(b"\n", 1)[1] for r in replies]

    def allow(self, pattern):
        proc = self.run("ab-net", "allow", pattern, self.project)
        assert proc.returncode == 0, proc.stderr.decode()

    def log(self, *flags):
        proc = self.run("ab-log", "--json", *flags, self.project)
        assert proc.returncode == 0, proc.stderr.decode()
        return json.loads(proc.stdout)

    def log_path(self):
        return os.path.join(self.state_home, "agentsh", "net", "log", f"{self.name}.jsonl")


def _printf_escape(data):
    """A printf format writing exactly `data`: ASCII letters and digits as is, every other byte as \\ooo."""
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\{b:03o}" for b in data)


def _stop_proxies(pids):
    """Proxies exit within a second of their sandbox; make sure (by pid, only agentsh's own)."""
    for pid in pids:
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
        else:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    mine = b"agentsh.egress.proxy" in f.read()
            except OSError:
                mine = False
            if mine:
                os.kill(pid, signal.SIGTERM)
                raise AssertionError(f"the egress proxy {pid} outlived its sandbox")


@pytest.fixture(params=["rootful", "rootless"])
def box(request, tmp_path, user_config, isolated_dirs):
    if request.param == "rootful":
        project = tmp_path / "proj"
        project.mkdir()

        def run(*argv, input=None):
            return subprocess.run(list(argv), input=input, cwd=project, capture_output=True, timeout=300)

        b = Box("rootful", project, isolated_dirs["XDG_STATE_HOME"], run, user_config)
        yield b
        b.note_proxy()
        run("ab-down", "--rm", "--volumes", str(project))
        remove_sandboxes_under(str(tmp_path))
        _stop_proxies(b.proxy_pids)
        return
    base_user = request.getfixturevalue("rootless_user")
    user = copy.copy(base_user)
    base = base_user.mkdir(f"work/egress-{uuid.uuid4().hex[:10]}")
    user.env = {**base_user.env, "XDG_CONFIG_HOME": f"{base}/config", "XDG_STATE_HOME": f"{base}/state"}
    project = user.mkdir(f"{base.relative_to(user.home)}/proj")
    config = f"{base}/config/agentsh/config.toml"
    user.run("mkdir", "-p", os.path.dirname(config), check=True)

    def write_config(text):
        user.run("sh", "-c", f"cat > {config}", input=text.encode(), check=True)

    def run(*argv, input=None):
        return user.run(*argv, cwd=project, input=input)

    b = Box("rootless", project, f"{base}/state", run, write_config)
    yield b
    b.note_proxy()
    run("ab-down", "--rm", "--volumes", str(project))
    if b.name:
        user.run("podman", "rm", "-f", "-t", "0", b.name)
        user.run("podman", "volume", "rm", "-f", f"{b.name}-home")
        left = user.run("podman", "ps", "-a", "--filter", f"name=^{b.name}$", "--format", "{{.Names}}").stdout
        assert left.strip() == b"", left
    _stop_proxies(b.proxy_pids)
    user.run("rm", "-rf", str(base), check=True)


def connect(host, port, then=b"GET / HTTP/1.0\r\n\r\n"):
    return f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode() + then


def get(host, port):
    return f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def assert_refused(replies, *words):
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 403 Forbidden"), reply[:300]
        assert b"hello from origin" not in reply
        for word in words:
            assert word.encode() in reply, reply[:300]


def assert_reached(reply):
    assert reply.startswith(b"HTTP/1.1 200 Connection established") and reply.endswith(b"hello from origin\n"), \
        reply[:300]


def host_addresses():
    """This host's own non-loopback addresses: IPv4, IPv6 (not link-local), and link-local IPv6 with its interface."""
    out = subprocess.run(["ip", "-o", "addr", "show", "up"], capture_output=True, text=True, check=True).stdout
    v4, v6, link = [], [], []
    for line in out.splitlines():
        fields = line.split()
        dev, addr = fields[1], ipaddress.ip_interface(fields[3]).ip
        if addr.is_loopback or dev.startswith("veth"):
            continue
        if addr.version == 6 and addr.is_link_local:
            link.append((str(addr), dev))
        elif addr.is_private:  # Python's judgement, not the one under test
            (v4 if addr.version == 4 else v6).append(str(addr))
    return v4, v6, link


def test_wildcard_rule_resolving_to_loopback_is_refused(box, origin):
    """host.containers.internal means the host's loopback to the proxy; a wildcard matching it names nothing."""
    box.configure(f'[network]\nmode = "allow"\nallow = ["*.containers.internal:{origin.port}", '
                  f'"*.docker.internal:{origin.port}", "*.internal:*"]\n')
    replies = box.send([connect("host.containers.internal", origin.port), get("host.docker.internal", origin.port),
                        connect("HOST.Containers.Internal.", origin.port)])
    assert_refused(replies, "internal address (loopback)")
    assert origin.peers == []
    denied = box.log("--denied")
    assert [e["host"] for e in denied] == ["host.containers.internal", "host.docker.internal",
                                            "host.containers.internal"]
    assert all("resolves to 127.0.0.1" in e["reason"] for e in denied)
    # The control: a rule naming the host itself reaches the very same server.
    box.allow(f"host.containers.internal:{origin.port}")
    [reply] = box.send([connect("host.containers.internal", origin.port)])
    assert_reached(reply)
    assert len(origin.peers) == 1


def test_ipv4_mapped_loopback_literal_is_refused_in_learn_mode(box, origin):
    box.configure('[network]\nmode = "learn"\n')
    port = origin.port
    replies = box.send([connect("[::ffff:127.0.0.1]", port), connect("[::ffff:7f00:1]", port),
                        connect("[::FFFF:7F00:0001]", port), connect("[0:0:0:0:0:ffff:7f00:1]", port),
                        connect("[::ffff:0.0.0.0]", port), connect("[::ffff:0:0]", port),
                        connect("[::ffff:127.1.2.3]", port), get("[::ffff:127.0.0.1]", port)])
    assert_refused(replies, "internal address")
    assert origin.peers == []
    assert len(box.log("--denied")) == 8
    # The control: naming the address lets its mapped spelling through, to that address.
    box.allow(f"127.0.0.1:{port}")
    [reply] = box.send([connect("[::ffff:7f00:1]", port)])
    assert_reached(reply)
    assert origin.peers == ["::ffff:127.0.0.1"]


def test_ipv4_compatible_translated_nat64_and_6to4_loopback_literals_are_refused_in_learn_mode(box, origin):
    box.configure('[network]\nmode = "learn"\n')
    port = origin.port
    spellings = ["[::127.0.0.1]", "[::7f00:1]", "[::0.1.2.3]", "[::ffff:0:127.0.0.1]", "[::ffff:0:7f00:1]",
                 "[64:ff9b::127.0.0.1]", "[64:ff9b::7f00:1]", "[64:ff9b::0.0.0.0]", "[2002:7f00:1::1]",
                 "[2002:7f00:1::]", "[2002::1]"]
    replies = box.send([connect(s, port) for s in spellings])
    assert_refused(replies, "internal address")
    assert origin.peers == []
    reasons = [e["reason"] for e in box.log("--denied")]
    assert [r.split(" (")[1].split(")")[0] for r in reasons] == [
        "IPv4-compatible loopback", "IPv4-compatible loopback", "IPv4-compatible unspecified",
        "IPv4-translated loopback", "IPv4-translated loopback", "NAT64 loopback", "NAT64 loopback",
        "NAT64 unspecified", "6to4 loopback", "6to4 loopback", "6to4 unspecified"]


def test_loopback_and_unspecified_literals_and_names_are_refused_in_learn_mode(box, origin):
    box.configure('[network]\nmode = "learn"\n')
    port = origin.port
    targets = ["127.0.0.1", "127.0.0.2", "127.255.255.254", "[::1]", "0.0.0.0", "[::]", "localhost",
               "host.containers.internal", "host.docker.internal"]
    replies = box.send([connect(t, port) for t in targets] + [get("127.0.0.1", port), get("[::1]", port)])
    assert_refused(replies, "internal address")
    assert origin.peers == []
    # The control: the same server through a rule naming ::1.
    box.allow(f"[::1]:{port}")
    [reply] = box.send([connect("[::1]", port)])
    assert_reached(reply)
    assert origin.peers == ["::1"]


def test_non_canonical_ipv4_spelling_of_a_host_address_is_refused_in_learn_mode(box, origin):
    """127.1, 0x7f.0.0.1, 0177.0.0.1, 2130706433 and the same tricks on the host's LAN addresses."""
    box.configure('[network]\nmode = "learn"\n')
    port = origin.port
    v4, _, _ = host_addresses()
    spellings = ["127.1", "127.0.1", "0x7f.0.0.1", "0177.0.0.1", "2130706433", "0x7f000001", "0x7f.1"]
    for addr in v4:
        a, b, c, d = (int(x) for x in addr.split("."))
        spellings += [f"0x{a:x}.{b}.{c}.{d}", f"0{a:o}.{b}.{c}.{d}", str(int(ipaddress.ip_address(addr))),
                      f"{a}.{b}.{(c << 8) | d}", f"0x{int(ipaddress.ip_address(addr)):08x}"]
    replies = box.send([connect(s, port) for s in spellings] + [get("0x7f.0.0.1", port)])
    assert_refused(replies, "non-canonical IPv4 address")
    assert origin.peers == []
    assert [e["host"] for e in box.log("--denied")] == spellings + ["0x7f.0.0.1"]


def test_host_lan_and_link_local_addresses_are_refused_in_learn_mode(box, origin):
    """The host's own private and unique-local addresses (and the metadata address) reach nothing."""
    box.configure('[network]\nmode = "learn"\n')
    port = origin.port
    v4, v6, _ = host_addresses()
    if not v4 + v6:
        pytest.skip("this host has no private address besides loopback")
    targets = v4 + [f"[::ffff:{a}]" for a in v4] + [f"[{a}]" for a in v6] + ["169.254.169.254"]
    replies = box.send([connect(t, port) for t in targets] + [get(t, port) for t in targets])
    assert_refused(replies, "internal address")
    assert origin.peers == []
    # The control: a rule naming one LAN address (and only that one) reaches the server there.
    first = v4[0] if v4 else v6[0]
    box.allow(f"{first}:{port}" if ":" not in first else f"[{first}]:{port}")
    replies = box.send([connect(first if ":" not in first else f"[{first}]", port)] +
                       [connect(t, port) for t in targets[1:]])
    assert_reached(replies[0])
    assert_refused([r for t, r in zip(targets[1:], replies[1:]) if not t.endswith(f"{first}]")])
    assert len(origin.peers) == 1 + sum(t.endswith(f"{first}]") for t in targets[1:])


def test_ipv6_zone_id_literal_is_refused_in_learn_mode(box, origin):
    """fe80::...%eth0 names an interface of the host; a literal with a zone id is refused outright."""
    box.configure('[network]\nmode = "learn"\nallow = ["[fe80::/10]:*"]\n')
    port = origin.port
    _, _, link = host_addresses()
    targets = [f"[{addr}%{dev}]" for addr, dev in link] + [f"[{addr}%25{dev}]" for addr, dev in link]
    targets += ["[fe80::1%eth0]", "[::1%lo]", "[::ffff:127.0.0.1%1]", "[fe80::1%251]"]
    replies = box.send([connect(t, port) for t in targets] + [get(targets[0], port)])
    assert_refused(replies, "zone ids are not accepted")
    assert origin.peers == []
    assert len(box.log("--denied")) == len(targets) + 1
