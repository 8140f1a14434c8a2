"""The egress proxy in-process against a dual-stack server on the host's loopback.

What a name resolves to is faked (socket.getaddrinfo), so these tests can
point an allowed wildcard name at loopback the way a hostile DNS zone would;
the server counts every connection it accepts, so "refused" means the proxy
never even connected.
"""

import json
import socket
import threading
import time

import pytest

from agentsh.egress import audit, proxy
from agentsh.policy.rules import Policy
from tests.egress_origin import Origin, exchange


@pytest.fixture
def origin():
    srv = Origin()
    yield srv
    srv.close()


def start(policy, log_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    p = proxy.Proxy(listener, proxy.StaticPolicy(policy), audit.Writer(str(log_path)), "ab-test-egress")
    threading.Thread(target=p.serve_forever, daemon=True).start()
    return p, listener.getsockname()[1]


def entries(log_path, count):
    for _ in range(200):
        found = audit.read(str(log_path))
        if len(found) >= count:
            return found
        time.sleep(0.01)
    return audit.read(str(log_path))


@pytest.fixture
def resolver(monkeypatch):
    """Fake DNS: names -> address lists; records every lookup."""
    answers, lookups = {}, []
    real = socket.getaddrinfo

    def fake(host, port, *args, **kw):
        if host in answers:
            lookups.append(host)
            out = []
            for addr in answers[host]:
                if ":" in addr:
                    scope = 2 if "%" in addr else 0
                    out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, port, 0, scope)))
                else:
                    out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port)))
            return out
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers, lookups


@pytest.mark.parametrize("mode", ["allow", "learn"])
@pytest.mark.parametrize("answer", [["127.0.0.1"], ["::1"], ["::ffff:127.0.0.1"], ["127.0.0.1", "::1"],
                                    ["0.0.0.0"], ["::"], ["127.8.9.10"]])
def test_wildcard_name_resolving_to_loopback_is_refused(origin, resolver, tmp_path, mode, answer):
    answers, lookups = resolver
    answers["rebind.attacker.example"] = answer
    p, port = start(Policy(mode, [f"*.attacker.example:{origin.port}"]), tmp_path / "log.jsonl")
    try:
        reply = exchange(port, f"CONNECT rebind.attacker.example:{origin.port} HTTP/1.1\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 403") and b"internal address" in reply
        assert answer[0].encode() not in reply  # the sandbox learns the kind of address, not which one
        reply = exchange(port, f"GET http://rebind.attacker.example:{origin.port}/ HTTP/1.1\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 403")
        assert origin.peers == [] and lookups == ["rebind.attacker.example"] * 2
        [first, _] = entries(tmp_path / "log.jsonl", 2)
        shown = answer[0].replace("::ffff:", "")  # a mapped address is the IPv4 address it carries
        assert not first["allowed"] and f"resolves to {shown}," in first["reason"]
    finally:
        p.close()


def test_exact_name_rule_reaches_what_the_name_resolves_to_the_control(origin, resolver, tmp_path):
    """The control for the test above: the same server, reached once a rule names the host."""
    answers, _ = resolver
    answers["dev.attacker.example"] = ["127.0.0.1"]
    p, port = start(Policy("allow", [f"dev.attacker.example:{origin.port}"]), tmp_path / "log.jsonl")
    try:
        reply = exchange(port, f"CONNECT dev.attacker.example:{origin.port} HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n"
                         .encode())
        assert reply.startswith(b"HTTP/1.1 200 Connection established") and reply.endswith(b"origin")
        assert origin.peers == ["::ffff:127.0.0.1"]
    finally:
        p.close()


def test_only_checked_addresses_are_connected_and_the_name_is_resolved_once(resolver, tmp_path, monkeypatch):
    """A name answering loopback and a public address: the socket goes to the public one, by number."""
    answers, lookups = resolver
    answers["mixed.attacker.example"] = ["127.0.0.1", "::1", "10.0.0.1", "fe80::1%2", "93.184.216.34"]
    connected = []

    class Recorder(socket.socket):
        def connect(self, addr):
            connected.append(addr)
            raise ConnectionRefusedError(111, "refused by the test")

    monkeypatch.setattr(proxy.socket, "socket", Recorder)
    policy = Policy("learn", [])
    with pytest.raises(ConnectionRefusedError):
        proxy._connect("mixed.attacker.example", 443, None, policy)
    assert connected == [("93.184.216.34", 443)] and lookups == ["mixed.attacker.example"]
    connected.clear()
    answers["internal.attacker.example"] = ["127.0.0.1", "fe80::1%2", "::ffff:169.254.169.254"]
    with pytest.raises(proxy.Refused) as refused:
        proxy._connect("internal.attacker.example", 443, None, policy)
    assert connected == [] and "127.0.0.1" in refused.value.log and "127.0.0.1" not in refused.value.reply


LOOPBACK_SPELLINGS = ["127.0.0.1", "127.0.0.2", "[::1]", "0.0.0.0", "[::]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                      "[::FFFF:7F00:1]", "[0:0:0:0:0:ffff:7f00:1]", "[::ffff:0.0.0.0]", "[::ffff:0:0]",
                      "[::127.0.0.1]", "[::ffff:0:127.0.0.1]", "[64:ff9b::127.0.0.1]", "[2002:7f00:1::1]",
                      "127.1", "0x7f.0.0.1", "0177.0.0.1", "2130706433", "0x7f000001", "[::1%25lo]", "localhost",
                      "host.containers.internal", "host.docker.internal"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_loopback_in_any_spelling_is_refused_in_learn_mode(origin, tmp_path, host):
    p, port = start(Policy("learn", []), tmp_path / "log.jsonl")
    try:
        for request in (f"CONNECT {host}:{origin.port} HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n",
                        f"GET http://{host}:{origin.port}/ HTTP/1.1\r\nHost: {host}\r\n\r\n",
                        f"GET http://user@{host}:{origin.port}/ HTTP/1.1\r\n\r\n"):
            reply = exchange(port, request.encode())
            assert reply.startswith(b"HTTP/1.1 403"), (request, reply)
        assert origin.peers == []
        assert [e["allowed"] for e in entries(tmp_path / "log.jsonl", 3)] == [False] * 3
    finally:
        p.close()


def test_a_rule_naming_loopback_reaches_it_in_learn_mode_the_control(origin, tmp_path):
    p, port = start(Policy("learn", [f"127.0.0.1:{origin.port}"]), tmp_path / "log.jsonl")
    try:
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"):  # one address, three spellings
            reply = exchange(port, f"CONNECT {host}:{origin.port} HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n".encode())
            assert reply.endswith(b"origin"), (host, reply)
        assert origin.peers == ["::ffff:127.0.0.1"] * 3  # connected over IPv4, to the address the rule names
        assert exchange(port, f"CONNECT [::1]:{origin.port} HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 403")
        assert exchange(port, f"CONNECT 127.1:{origin.port} HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 403")
        assert len(origin.peers) == 3
    finally:
        p.close()


def test_url_authority_ends_at_query_or_fragment():
    head = b"GET http://127.0.0.1:1?@allowed.example/ HTTP/1.1\r\nHost: allowed.example\r\n\r\n"
    method, host, port, forward = proxy._parse(head)
    assert (method, host, port) == ("GET", "127.0.0.1", 1) and forward.startswith(b"GET /?@allowed.example/ ")
    assert proxy._parse(b"GET http://127.0.0.1#@allowed.example/ HTTP/1.1\r\n\r\n")[1] == "127.0.0.1"
    assert proxy._parse(b"GET http://u:p@ok.example/x HTTP/1.1\r\n\r\n")[1:3] == ("ok.example", 80)


HOSTILE_HEADS = [
    b"CONNECT \x1b[31mred\x1b[0m.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT \x1b]0;pwned\x07.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT a\x00b.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT \xff\xfe\x9b31m.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT \xe2\x80\xaemoc.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT cr\rlf\n.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT " + b"x" * 20000 + b".example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT ok.example:" + b"9" * 5000 + b" HTTP/1.1\r\n\r\n",
    b"G\x1bET\x07" + b"M" * 5000 + b" http://ok.example/ HTTP/1.1\r\n\r\n",
    b"CONNECT ok.example:4\x1b[2J43 HTTP/1.1\r\n\r\n",
]


def test_hostile_request_heads_make_sane_audit_lines(tmp_path):
    log_path = tmp_path / "log.jsonl"
    p, port = start(Policy("learn", []), log_path)
    try:
        for head in HOSTILE_HEADS:
            reply = exchange(port, head)
            assert reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 403")), (head[:40], reply[:80])
            assert len(reply) < 2000
        exchange(port, b"CONNECT " + b"y" * (proxy.HEAD_LIMIT + 10))  # no end of head at all
        logged = entries(log_path, len(HOSTILE_HEADS) + 1)
    finally:
        p.close()
    raw = log_path.read_bytes()
    lines = raw.splitlines()
    assert len(lines) == len(HOSTILE_HEADS) + 1 and len(logged) == len(lines)
    for line in lines:
        assert all(0x20 <= b < 0x7f for b in line), line[:80]  # printable ASCII only
        entry = json.loads(line)
        assert not entry["allowed"] and len(line) < 2000
        for key in ("host", "method", "reason"):
            assert len(entry[key]) <= audit.LIMITS[key] + len("...(100000 characters)")
    hosts = [e["host"] for e in logged]
    assert "\x1b[31mred\x1b[0m.example" in hosts and "a\x00b.example" in hosts  # kept exactly, escaped in JSON
    assert "\xff\xfe\x9b31m.example" in hosts  # bytes that are no UTF-8 arrive as latin-1, losslessly
    assert any(h.startswith("x" * 255 + "...(") for h in hosts)
    reasons = [e["reason"] for e in logged]
    assert reasons[7] == "bad request: bad port '9999999999999999'"  # cut, and no int() of 5000 digits
    assert reasons[8] == "bad request: not an HTTP method"
    assert reasons[9] == "bad request: bad port '4\\x1b[2J43'"  # repr: escaped already
    assert logged[-1]["reason"] == "bad request: request head too large"


def test_log_and_its_text_form_escape_terminal_control_bytes(tmp_path):
    log_path = tmp_path / "log.jsonl"
    p, port = start(Policy("allow", []), log_path)
    try:
        for head in HOSTILE_HEADS[:6]:
            exchange(port, head)
        logged = entries(log_path, 6)
    finally:
        p.close()
    text = "\n".join(audit.format_entry(e) for e in logged)
    unsafe = [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f
                                                or 0x202a <= ord(c) <= 0x202e or 0x2066 <= ord(c) <= 0x2069)]
    assert unsafe == [] and text.count("\n") == 5
    assert "\\x1b[31mred\\x1b[0m.example" in text and "\\x1b]0;pwned\\x07" in text and "a\\x00b" in text
    assert "\\x9b31m" in text and "cr\\x0dlf\\x0a" in text


def test_printable_escapes_unicode_bidi_and_c1_and_is_unambiguous():
    hostile = "ok\u202eevil\u2066\u200f\x85\x9b[2J\x1b\\\x7f"
    shown = audit.printable(hostile)
    assert shown == "ok\\u202eevil\\u2066\\u200f\\x85\\x9b[2J\\x1b\\\\\\x7f"
    assert audit.printable("plain.example:443 café") == "plain.example:443 café"
    assert json.loads(audit.ascii_json({"h": hostile}))["h"] == hostile
    assert all(0x20 <= ord(c) < 0x7f for c in audit.ascii_json({"h": hostile}))
