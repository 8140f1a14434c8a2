"""The DNS answerer and the first-bytes sniffing of steered connections, in-process."""

import socket
import ssl
import struct
import threading
import time

import pytest

from agentsh.egress import dns, steer


def query(name, qtype=dns.A, qid=0x1234, flags=0x0100):
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", qtype, 1)
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + question


def parsed(reply):
    qid, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    addrs = []
    if an:
        addrs.append(socket.inet_ntoa(reply[-4:]))
    return qid, flags & 0xF, addrs


@pytest.fixture
def answerer():
    logged = []
    allowed = {"api.example.com", "h.example.org"}
    a = dns.Answerer(dns.Names(), lambda h: (h in allowed, "rule" if h in allowed else "not on the allowlist"),
                     lambda h, r: logged.append((h, r)), local=["myproj"])
    a.logged = logged
    return a


def test_an_allowed_name_gets_a_stable_synthetic_address(answerer):
    first = parsed(answerer.answer(query("api.example.com")))
    assert first[:2] == (0x1234, dns.NOERROR) and dns.is_synthetic(first[2][0])
    assert parsed(answerer.answer(query("API.Example.Com")))[2] == first[2]  # same name (case folded), same address
    other = parsed(answerer.answer(query("h.example.org")))[2]
    assert other != first[2] and answerer.names.name(other[0]) == "h.example.org"
    assert answerer.logged == []


def test_a_denied_name_gets_nxdomain_and_is_logged(answerer):
    assert parsed(answerer.answer(query("exfil-0123abcd.evil.example"))) == (0x1234, dns.NXDOMAIN, [])
    assert answerer.logged == [("exfil-0123abcd.evil.example", "not on the allowlist")]
    assert answerer.names.name("198.18.0.1") is None  # no address was given out


def test_aaaa_and_other_types_get_no_records_and_the_hostname_is_loopback(answerer):
    assert parsed(answerer.answer(query("api.example.com", dns.AAAA))) == (0x1234, dns.NOERROR, [])
    assert parsed(answerer.answer(query("api.example.com", 65))) == (0x1234, dns.NOERROR, [])
    assert parsed(answerer.answer(query("myproj"))) == (0x1234, dns.NOERROR, ["127.0.0.1"])
    assert parsed(answerer.answer(query("localhost"))) == (0x1234, dns.NOERROR, ["127.0.0.1"])


def test_malformed_queries_are_answered_formerr_or_dropped(answerer):
    assert answerer.answer(b"\x00\x01") is None
    bad = struct.pack("!HHHHHH", 7, 0x0100, 2, 0, 0, 0)
    assert parsed(answerer.answer(bad))[:2] == (7, dns.FORMERR)
    pointer = struct.pack("!HHHHHH", 8, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    assert parsed(answerer.answer(pointer))[:2] == (8, dns.FORMERR)
    assert parsed(answerer.answer(query("a..b")))[1] in (dns.FORMERR, dns.NXDOMAIN)
    assert parsed(answerer.answer(query("x", flags=0x2800)))[1] == dns.NOTIMP  # an UPDATE


def test_the_map_survives_a_restart_and_is_bounded(tmp_path):
    path = str(tmp_path / "names.jsonl")
    names = dns.Names(path, limit=2)
    a, b = names.address("a.example"), names.address("b.example")
    assert names.address("c.example") is None  # full
    again = dns.Names(path)
    assert (again.address("a.example"), again.address("b.example")) == (a, b) and again.name(a) == "a.example"
    assert again.address("c.example") not in (a, b)


def client_hello(server_name):
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_the_sni_of_a_real_client_hello():
    assert steer.client_hello_sni(client_hello("api.example.com")) == "api.example.com"
    with pytest.raises(ValueError):
        steer.client_hello_sni(client_hello("api.example.com")[:60])


def send_in_two(sock, data):
    """The first 10 bytes, a pause, the rest: the sniffer must put a head together from pieces."""
    if data:
        sock.sendall(data[:10])
        time.sleep(0.05)
        sock.sendall(data[10:])


def test_sniff_reads_tls_http_and_gives_up_on_silence(monkeypatch):
    monkeypatch.setattr(steer, "FIRST_WAIT", 0.2)
    for data, want in ((client_hello("a.example"), ("TLS", "a.example")),
                       (b"GET / HTTP/1.1\r\nHost: b.example:8080\r\n\r\n", ("GET", "b.example")),
                       (b"SSH-2.0-x\r\n", ("TCP", None)), (b"", ("TCP", None))):
        a, b = socket.socketpair()
        with a, b:
            sender = threading.Thread(target=send_in_two, args=(a, data))
            sender.start()
            kind, name, seen = steer.sniff(b)
            sender.join()
            assert (kind, name) == want and data.startswith(seen)
