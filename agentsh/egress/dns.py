"""The sandbox's DNS answerer: every name it may reach gets a synthetic address, and no query leaves.

In network modes "allow" and "learn" the sandbox's /etc/resolv.conf names
127.0.0.1, where the egress proxy answers on a UDP and a TCP socket planted in
the sandbox's network namespace (egress.network). An A query for a name the
policy could allow on some port (any name in "learn") is answered with an
address from SYNTHETIC (198.18.0.0/15, the benchmarking block no real host
uses); the proxy keeps the name <-> address map and, when the sandbox then
connects to that address (steered to the proxy by the namespace's REDIRECT
rule), knows which name was meant. A name no rule allows gets NXDOMAIN and
one "DNS" entry in the audit log. AAAA and every other type get an empty
answer (NOERROR, no records), so programs fall back to IPv4, which is
steered. Nothing is forwarded: the sandbox cannot reach a real resolver, so
no made-up name (or data hidden in one) ever leaves the machine; the proxy
resolves a name on the host only when a connection to it is allowed.

The map is kept in a file next to the proxy's record, so a restarted proxy
knows the addresses programs in the sandbox may have cached.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import threading

from agentsh.policy.rules import normalize_host, parse_host

TYPE_CHECKING = False  # typing stays off the proxy's start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

SYNTHETIC = ipaddress.IPv4Network("198.18.0.0/15")
_FIRST = int(SYNTHETIC.network_address) + 1  # 198.18.0.1
_LAST = int(SYNTHETIC.broadcast_address) - 1
TTL = 60
A, AAAA, CLASS_IN = 1, 28, 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
MAX_MESSAGE = 4096


def is_synthetic(addr: str | int | ipaddress.IPv4Address) -> bool:
    """Whether an IPv4 address (ipaddress object or str) lies in the synthetic block."""
    try:
        return ipaddress.IPv4Address(addr) in SYNTHETIC
    except ValueError:
        return False


class Names:
    """name <-> synthetic address, one entry per name, stable for the life of the file.

    `path`: a JSONL file (one {"name", "addr"} per line) read at start and
    appended to; None keeps the map in memory (tests). At most `limit`
    names: past it, new names are refused (SERVFAIL), so a sandbox that
    asks for millions of names cannot grow the map without bound.
    """

    def __init__(self, path: str | None = None, limit: int = _LAST - _FIRST + 1) -> None:
        self.path, self.limit = path, limit
        self._lock = threading.Lock()
        self._by_name, self._by_addr = {}, {}
        self._next = _FIRST
        self._fd = None
        if path:
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                item = json.loads(line)
                name, addr = str(item["name"]), int(ipaddress.IPv4Address(item["addr"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
            if not _FIRST <= addr <= _LAST or name in self._by_name or addr in self._by_addr:
                continue
            self._by_name[name], self._by_addr[addr] = addr, name
            self._next = max(self._next, addr + 1)

    def address(self, name: str) -> str | None:
        """The synthetic address (str) for a name, allocated on first use; None when the map is full."""
        with self._lock:
            addr = self._by_name.get(name)
            if addr is None:
                if len(self._by_name) >= self.limit or self._next > _LAST:
                    return None
                addr = self._next
                self._next += 1
                self._by_name[name], self._by_addr[addr] = addr, name
                self._append(name, addr)
        return str(ipaddress.IPv4Address(addr))

    def name(self, addr: str | int | ipaddress.IPv4Address) -> str | None:
        """The name a synthetic address stands for, or None."""
        try:
            return self._by_addr.get(int(ipaddress.IPv4Address(addr)))
        except ValueError:
            return None

    def _append(self, name: str, addr: int) -> None:
        if not self.path:
            return
        try:
            if self._fd is None:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            line = json.dumps({"name": name, "addr": str(ipaddress.IPv4Address(addr))}) + "\n"
            os.write(self._fd, line.encode())
        except OSError:
            pass  # the map still works in memory; only a restart would forget the name


# -- messages ---------------------------------------------------------------------------


def parse_query(data: bytes) -> tuple[int, int, str, int, int, bytes]:
    """(id, flags, name, qtype, qclass, question bytes) of a query; ValueError when it is none we answer."""
    if len(data) < 12:
        raise ValueError("short message")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000:
        raise ValueError("not a query")
    if qdcount != 1:
        raise ValueError("not exactly one question")
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            raise ValueError("truncated name")
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        label = data[pos:pos + n]
        if len(label) != n:
            raise ValueError("truncated name")
        labels.append(label.decode("latin-1"))
        pos += n
    if pos + 4 > len(data):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
    return qid, flags, ".".join(labels), qtype, qclass, data[12:pos + 4]


def response(qid: int, flags: int, question: bytes, rcode: int, address: str | None = None) -> bytes:
    """A response to a query: `address` (dotted IPv4) as the one A record, or no records."""
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode  # QR, opcode and RD kept, RA, rcode
    answers = b""
    if address is not None:
        answers = struct.pack("!HHHIH", 0xC00C, A, CLASS_IN, TTL, 4) + socket.inet_aton(address)
    return struct.pack("!HHHHHH", qid, out_flags, 1 if question else 0, 1 if answers else 0, 0, 0) + question + \
        answers


class Answerer:
    """Answers one DNS message with the map and a decision function.

    `decide(name)` -> (allowed, reason) says whether a name may get an
    address; `log(name, reason)` is called for each refused one.
    """

    def __init__(self, names: Names, decide: Callable[[str], tuple[bool, str]], log: Callable[[str, str], object],
                 local: Iterable[str] = ()) -> None:
        self.names, self.decide, self.log = names, decide, log
        self.local = frozenset(local)  # names of the sandbox itself: 127.0.0.1 (its hostname)

    def answer(self, data: bytes) -> bytes | None:
        """The response bytes for a query, or None for garbage not worth an answer."""
        try:
            qid, flags, name, qtype, qclass, question = parse_query(data)
        except ValueError:
            if len(data) >= 12 and not data[2] & 0x80:
                qid, flags = struct.unpack("!HH", data[:4])
                return response(qid, flags, b"", FORMERR)
            return None
        if (flags >> 11) & 0xF != 0:  # only standard queries
            return response(qid, flags, question, NOTIMP)
        try:
            host, literal = parse_host(name)
        except ValueError as e:
            self.log(normalize_host(name), f"DNS: {e}")
            return response(qid, flags, question, NXDOMAIN)
        if literal is not None:
            return response(qid, flags, question, NXDOMAIN)
        if host in self.local or host == "localhost" or host.endswith(".localhost"):
            return response(qid, flags, question, NOERROR, "127.0.0.1" if qtype == A and qclass == CLASS_IN else None)
        allowed, reason = self.decide(host)
        if not allowed:
            self.log(host, reason)
            return response(qid, flags, question, NXDOMAIN)
        if qclass != CLASS_IN or qtype != A:
            return response(qid, flags, question, NOERROR)  # AAAA, HTTPS, MX...: no records; v4 is steered
        address = self.names.address(host)
        if address is None:
            self.log(host, "DNS: too many names asked for")
            return response(qid, flags, question, SERVFAIL)
        return response(qid, flags, question, NOERROR, address)


def serve_udp(sock: socket.socket, answerer: Answerer, closed: threading.Event) -> None:
    while not closed.is_set():
        try:
            data, peer = sock.recvfrom(MAX_MESSAGE)
        except OSError:
            if closed.is_set():
                return
            continue
        try:
            reply = answerer.answer(data)
            if reply is not None:
                sock.sendto(reply, peer)
        except Exception:  # one odd query never stops the answerer
            continue


def serve_tcp(listener: socket.socket, answerer: Answerer, closed: threading.Event) -> None:
    while not closed.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            if closed.is_set():
                return
            continue
        threading.Thread(target=_tcp_conn, args=(conn, answerer), daemon=True).start()


def _tcp_conn(conn: socket.socket, answerer: Answerer) -> None:
    with conn:
        conn.settimeout(10)
        try:
            while True:
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                reply = answerer.answer(data)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ValueError):
            return


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
