"""agentsh's egress proxy: HTTP CONNECT and plain HTTP to allowed host:port pairs only.

A long-running host process per sandbox (started by agentsh.egress.network.attach),
serving a listening socket that lives inside the sandbox's network namespace.
For each connection it reads one request head, decides on the host and port
*before* resolving anything, resolves the name itself, refuses IP literals
no rule lists and internal addresses (loopback, private, link-local, and the
IPv6 forms embedding them; see policy.rules.classify) that no rule names,
connects to the very address it checked, then splices bytes both ways
(os.splice through a pipe: the payload never enters Python) and appends one
audit entry when the connection ends. The thread that accepted a connection
serves it and splices the replies (blocking splice; a worker the other
direction), so a request and its answer wait for no thread hand-off;
threads are reused across connections (Workers) since starting one costs
more than a small request.

Programs that ignore HTTP(S)_PROXY are served too: the proxy answers the
sandbox's DNS (egress.dns: synthetic addresses for names a rule allows), and
TCP to those addresses reaches its second, transparent listener
(handle_steered: the name from the address, checked against the TLS SNI or
HTTP Host, then the same decisions and address checks).

    python -m agentsh.egress.proxy serve --state DIR --record REL --fd N [--steer-fd N --dns-fd N --dns-fd N]
    python -m agentsh.egress.proxy plant PID PORT UNIX_SOCKET   (the namespace helper)

`serve` runs the proxy under a supervisor that restarts it if it dies; both
stop when the sandbox's first process is gone, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import fcntl
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from agentsh.base import layout
from agentsh.base.state import Store
from agentsh.egress import audit, dns, intercept, steer
from agentsh.egress.dns import SYNTHETIC, Names
from agentsh.egress.intercept import Contexts, Swaps
from agentsh.egress.network import DNS_PORT, STEER_PORT_OFFSET
from agentsh.egress.network import _start_time as start_time
from agentsh.policy.rules import HOST_ALIASES, NAME_IT, Policy, expand, normalize_host, unmapped

TYPE_CHECKING = False  # typing stays off the proxy's start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from agentsh.policy.rules import IPAddress

HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT = 30
CONNECT_TIMEOUT = 15
CHUNK = 1 << 20
_HOP_HEADERS = (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive")
_METHOD_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


IDLE_WORKERS = 32  # threads kept waiting for the next connection (a new thread costs 0.1-0.3 ms here)
ACCEPTORS = 2  # of them, threads blocked in accept() on a listener, at most (one serves, one accepts meanwhile)


class Workers:
    """Threads reused across connections: the acceptors (each serves what it accepts), a relay's second direction.

    Starting a thread costs more than a small request through the proxy
    otherwise does; a finished task's thread waits (on its own lock) for
    the next one instead of exiting, up to `idle_max` idle (with the
    ACCEPTORS blocked in accept(), IDLE_WORKERS). Past that it exits, so a
    burst of 1,000 connections leaves at most IDLE_WORKERS threads behind
    for a listener.
    """

    def __init__(self, idle_max: int = IDLE_WORKERS - ACCEPTORS) -> None:
        self.idle_max = idle_max
        self._lock = threading.Lock()
        self._idle = []

    def run(self, fn: Callable[..., object], *args: object) -> None:
        with self._lock:
            slot = self._idle.pop() if self._idle else None
        if slot is None:
            slot = [threading.Lock(), None]
            slot[0].acquire()
            slot[1] = (fn, args)
            threading.Thread(target=self._loop, args=(slot,), daemon=True).start()
            return
        slot[1] = (fn, args)
        slot[0].release()

    def _loop(self, slot: list[Any]) -> None:
        while True:
            fn, args = slot[1]
            slot[1] = None
            try:
                fn(*args)
            except Exception:  # noqa: S110 (a task reports its own errors; the thread stays usable)
                pass
            with self._lock:
                if len(self._idle) >= self.idle_max:
                    return
                self._idle.append(slot)
            slot[0].acquire()


_WORKERS = Workers()


class RecordPolicy:
    """The policy from the proxy's state record plus the project's `ab-net allow` record.

    `current()` costs two stat calls while nothing changed; a changed mtime
    re-reads both records, so an allow takes effect on the next request.
    """

    def __init__(self, store: Store, rel: str) -> None:
        self.store, self.rel = store, rel
        self._stamp = None
        self._policy = Policy("allow", [])
        self.record = {}

    def _mtimes(self, *rels: str) -> tuple[tuple[int, int] | None, ...]:
        out = []
        for rel in rels:
            try:
                st = os.stat(self.store.path(rel))
                out.append((st.st_ino, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def _stamp_now(self) -> tuple[tuple[int, int] | None, ...]:
        return self._mtimes(self.rel, self.record.get("extra") or self.rel)

    def current(self) -> Policy:
        if self._stamp_now() != self._stamp:
            try:
                record = self.store.read(self.rel) or {}
                extra = record.get("extra")
                added = (self.store.read(extra) or {}).get("allow", []) if extra else []
                self._policy = Policy(record.get("mode", "allow"), expand(record.get("allow", [])) + added)
                self.record = record
            except Exception as e:  # a torn or hand-edited record: keep the last good policy
                sys.stderr.write(f"agentsh proxy: cannot reload the policy: {e}\n")
            self._stamp = self._stamp_now()
        return self._policy


class StaticPolicy:
    """A fixed policy (tests, benchmarks)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def current(self) -> Policy:
        return self.policy


class Refused(OSError):
    """A destination the policy allows by name but not at the address it resolves to.

    `log` says which address (for the audit log); the reply to the sandbox
    says only what kind it was, so the proxy is no resolver of internal names.
    """

    def __init__(self, log: str, reply: str) -> None:
        super().__init__(log)
        self.log, self.reply = log, reply


class Proxy:
    """Serves one listening socket; decisions from `policy.current()`, entries to `log`."""

    def __init__(self, listener: socket.socket, policy: RecordPolicy | StaticPolicy, log: audit.Writer,
                 sandbox: str = "", transparent: socket.socket | None = None, dns: Iterable[socket.socket] = (),
                 names: Names | None = None, local_names: Iterable[str] = (), swaps: Swaps | None = None,
                 contexts: Contexts | None = None) -> None:
        self.local_names = local_names
        # The sandbox's placeholders (egress.intercept.Swaps) and TLS contexts: connections to a host a
        # credential is bound to are intercepted; None: every connection is a plain tunnel.
        self.swaps, self.contexts = swaps, contexts
        self.listener, self.policy, self.log, self.sandbox = listener, policy, log, sandbox
        self.transparent, self.dns = transparent, list(dns)  # steered TCP; the DNS answerer's UDP and TCP sockets
        self.closed = threading.Event()
        self.names = names if names is not None else Names()

    def serve_forever(self) -> None:
        """Serve every socket given until close()."""
        threads = []
        if self.dns:
            answerer = dns.Answerer(self.names, self.name_allowed, self._log_dns, self.local_names)
            for sock in self.dns:
                loop = dns.serve_udp if sock.type == socket.SOCK_DGRAM else dns.serve_tcp
                sock.settimeout(None)
                threads.append(threading.Thread(target=loop, args=(sock, answerer, self.closed), daemon=True))
        for t in threads:
            t.start()
        for sock, handler in ((self.transparent, self.handle_steered), (self.listener, self.handle)):
            if sock is not None:
                sock.settimeout(None)
                waiting = [ACCEPTORS, threading.Lock()]
                for _ in range(ACCEPTORS):
                    _WORKERS.run(self._accept, sock, handler, waiting)
        self.closed.wait()

    def _accept(self, listener: socket.socket, handler: Callable[[socket.socket], None], waiting: list[Any]) -> None:
        """Accept on `listener` and serve what comes, until close(); `waiting`: [threads in accept, its lock].

        The thread that accepts a connection serves it, so its request is
        read without waiting for another thread to wake; it starts another
        acceptor only when none is left waiting, and accepts again after
        the connection while fewer than ACCEPTORS do (else it goes back to
        the workers). Sequential connections thus cost no thread hand-off.
        """
        lock = waiting[1]
        while not self.closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self.closed.is_set():
                    break
                time.sleep(0.05)
                continue
            with lock:
                waiting[0] -= 1
                spare = waiting[0] > 0
                if not spare:
                    waiting[0] += 1
            if not spare:
                try:
                    _WORKERS.run(self._accept, listener, handler, waiting)
                except RuntimeError:  # no thread to be had (a limit reached): this connection is dropped, not the proxy
                    conn.close()
                    time.sleep(0.05)
                    continue  # this thread keeps accepting (it was counted as the new one)
            try:  # relayed replies come as a head and a body: without this the second waits for a delayed ACK
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            try:
                handler(conn)
            except Exception:  # noqa: S110 (a handler reports its own errors; accepting goes on)
                pass
            with lock:
                again = waiting[0] < ACCEPTORS
                if again:
                    waiting[0] += 1
            if not again:
                return
        with lock:
            waiting[0] -= 1

    def close(self) -> None:
        self.closed.set()
        for sock in [self.listener, self.transparent, *self.dns]:
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    # -- names the DNS answerer gives an address -------------------------------------

    def name_allowed(self, host: str) -> tuple[bool, str]:
        """(allowed, reason): whether a rule could allow `host` on some port (always in learn mode)."""
        policy = self.policy.current()
        for rule in policy.rules:
            if rule.ip is None and rule.matches(host, next(iter(rule.ports)) if rule.ports else 443, None):
                return True, rule.text
        if policy.mode == "learn":
            return True, "learn"
        return False, "not on the allowlist"

    def _log_dns(self, host: str, reason: str) -> None:
        start = time.time()
        self._log({"time": audit.now_iso(start), "sandbox": self.sandbox, "host": host, "port": 0, "method": "DNS",
                   "allowed": False, "reason": reason, "bytes_sent": 0, "bytes_received": 0, "ms": 0}, start)

    # -- a connection steered to the proxy (no proxy protocol) ---------------------------

    def handle_steered(self, client: socket.socket) -> None:
        """A TCP connection the sandbox made to a synthetic address: name from the map, checked against SNI/Host."""
        start = time.time()
        entry = {"time": audit.now_iso(start), "sandbox": self.sandbox, "host": "", "port": 0, "method": "TCP",
                 "allowed": False, "reason": "", "bytes_sent": 0, "bytes_received": 0, "ms": 0}
        upstream = None
        try:
            try:
                addr, port = steer.original_dst(client)
            except ValueError:
                return  # reached the port directly, not through the rule: nothing to forward to
            host = self.names.name(addr)
            entry.update(host=host or addr, port=port)
            if host is None:
                entry["reason"] = f"{addr} is no address this sandbox's DNS answered"
                self._log(entry, start)
                return
            try:
                kind, said, first = steer.sniff(client)
            except (ValueError, OSError) as e:
                entry["reason"] = f"refused: {e}"
                self._log(entry, start)
                return
            entry["method"] = kind
            http = kind not in ("TLS", "TCP")
            if said is not None and normalize_host(said) != host:
                what = "TLS server name" if kind == "TLS" else "HTTP Host"
                entry["reason"] = f"{what} {said[:255]!r} does not match {host} (the name the address was given for)"
                if http:
                    _reply(client, 403, f"the Host header does not match {host}")
                self._log(entry, start)
                return
            policy = self.policy.current()
            allowed, why, host, checked = policy.check(host, port)
            entry["reason"] = why
            if not allowed:
                if http:
                    hint = f"; allow it with: ab-net allow {_dest(host, port) if port not in (80, 443) else host}"
                    _reply(client, 403, f"{_dest(host, port)} is not allowed for this sandbox ({why}){hint}")
                self._log(entry, start)
                return
            try:
                upstream = _connect(host, port, checked, policy)
            except Refused as e:
                entry.update(reason=e.log)
                if http:
                    _reply(client, 403, f"{_dest(host, port)}: {e.reply}")
                self._log(entry, start)
                return
            except OSError as e:
                entry["reason"] = f"cannot connect: {e.strerror or e}"
                if http:
                    _reply(client, 502, f"cannot reach {_dest(host, port)}: {e.strerror or e}")
                self._log(entry, start)
                return
            if kind == "TLS" and self._bound(host):
                self._intercept(client, upstream, host, port, first, entry, start)
                return
            if http:
                self._scan(first, host, port)
            entry["allowed"] = True
            client.settimeout(None)
            sent, received = _relay(client, upstream, first)
            entry.update(bytes_sent=sent, bytes_received=received)
            self._log(entry, start)
        except Exception as e:  # a broken client must never take the proxy down
            if not entry["reason"]:
                entry["reason"] = f"error: {e}"
            if entry["host"]:
                self._log(entry, start)
        finally:
            if not entry["allowed"]:
                _reset(client)  # a refusal reads as "connection reset", not as an empty answer
            for s in (client, upstream):
                if s is not None:
                    s.close()

    # -- one connection --------------------------------------------------------

    def handle(self, client: socket.socket) -> None:
        start = time.time()
        entry = {"time": audit.now_iso(start), "sandbox": self.sandbox, "host": "", "port": 0, "method": "",
                 "allowed": False, "reason": "", "bytes_sent": 0, "bytes_received": 0, "ms": 0}
        upstream = None
        try:
            client.settimeout(HEAD_TIMEOUT)
            try:
                head, rest = _read_head(client)
                if head is None:
                    return  # closed before a request: nothing to log
                method, host, port, forward = _parse(head)
            except ValueError as e:
                entry["reason"] = f"bad request: {e}"
                _reply(client, 400, str(e))
                self._log(entry, start)
                return
            entry.update(method=method, host=host, port=port)
            policy = self.policy.current()
            allowed, why, host, addr = policy.check(host, port)
            entry["reason"] = why
            if not allowed:
                hint = ""
                if why in ("not on the allowlist", "IP address not on the allowlist"):
                    hint = f"; allow it with: ab-net allow {_dest(host, port) if port not in (80, 443) else host}"
                shown = host if len(host) <= 255 else host[:255] + "..."
                _reply(client, 403, f"{_dest(shown, port)} is not allowed for this sandbox ({why}){hint}")
                self._log(entry, start)
                return
            try:
                upstream = _connect(host, port, addr, policy)
            except Refused as e:
                entry.update(allowed=False, reason=e.log)
                _reply(client, 403, f"{_dest(host, port)}: {e.reply}")
                self._log(entry, start)
                return
            except OSError as e:
                entry.update(allowed=False, reason=f"cannot connect: {e.strerror or e}")
                _reply(client, 502, f"cannot reach {_dest(host, port)}: {e.strerror or e}")
                self._log(entry, start)
                return
            if method == "CONNECT" and self._bound(host):
                self._intercept(client, upstream, host, port, rest, entry, start, connect=True)
                return
            entry["allowed"] = True
            client.settimeout(None)
            greeting = b""
            if method == "CONNECT":
                greeting, first = b"HTTP/1.1 200 Connection established\r\n\r\n", rest
            else:
                self._scan(forward, host, port)
                first = forward + rest
            sent, received = _relay(client, upstream, first, greeting)
            entry.update(bytes_sent=sent, bytes_received=received)
            self._log(entry, start)
        except Exception as e:  # a broken client must never take the proxy down
            if not entry["reason"]:
                entry["reason"] = f"error: {e}"
            if entry["host"]:
                self._log(entry, start)
        finally:
            for s in (client, upstream):
                if s is not None:
                    s.close()

    # -- credentials: interception toward bound hosts, warnings elsewhere -------------------

    def _bound(self, host: str) -> bool:
        """Whether a TLS connection to `host` is intercepted: a credential is bound to it, or it is a login's
        token endpoint and the sandbox trusts its CA (else the login would fail rather than be captured)."""
        if self.swaps is None or self.contexts is None:
            return False
        return self.swaps.bound(host) or (host in self.swaps.logins and self.contexts.has_ca())

    def _scan(self, head: bytes, host: str, port: int) -> None:
        """Warn (audit log) about placeholders in a plain-HTTP request head: they go out unchanged."""
        if self.swaps is not None and self.swaps.current().names:
            left = self.swaps.leftovers(head)
            if left:
                self._warn(left, host, port, "plain HTTP: never replaced")

    def _warn(self, names: Iterable[str], host: str, port: int, why: str = "") -> None:
        start = time.time()
        for name in dict.fromkeys(names):
            bound = next((h for n, h in self.swaps.names.values() if n == name), ())
            self._log({"time": audit.now_iso(start), "sandbox": self.sandbox, "host": host, "port": port,
                       "method": "CRED", "allowed": True, "warning": True,
                       "reason": f"placeholder of {name} sent unchanged to {host} (bound to "
                                 f"{', '.join(bound) or 'no host'}{'; ' + why if why else ''})",
                       "bytes_sent": 0, "bytes_received": 0, "ms": 0}, start)

    def _intercept(self, client: socket.socket, upstream: socket.socket, host: str, port: int, first: bytes,
                   entry: dict[str, Any], start: float, connect: bool = False) -> None:
        """Terminate the sandbox's TLS, verify the upstream's, swap the bound placeholders, relay HTTP/1.1."""
        entry["method"] = "CONNECT" if connect else "TLS"
        try:
            upstream.settimeout(CONNECT_TIMEOUT)
            secure = intercept.TLSConn(upstream, self.contexts.upstream(), server_hostname=host)
            upstream.settimeout(None)
        except (OSError, ValueError) as e:
            entry["reason"] = f"upstream TLS refused: {str(e)[:200]}"
            if connect:
                _reply(client, 502, f"cannot verify {_dest(host, port)}: {str(e)[:200]}")
            self._log(entry, start)
            return
        entry["allowed"] = True
        try:
            if connect:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            client.settimeout(None)
            tls = intercept.TLSConn(client, self.contexts.server(host), first)
            bound = self.swaps.current().by_host.get(host, [])
            sent, received, requests, swapped = intercept.relay(
                intercept.Stream(tls), intercept.Stream(secure), bound, self.swaps,
                lambda names: self._warn(names, host, port, "not its bound host or header"), host=host)
            entry.update(bytes_sent=sent, bytes_received=received,
                         reason=f"{entry['reason']}; credentials added: {swapped} of {requests} requests")
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            entry["reason"] = f"{entry['reason']}; intercepted connection ended: {str(e)[:200]}"
        self._log(entry, start)

    def _log(self, entry: dict[str, Any], start: float) -> None:
        entry["ms"] = int((time.time() - start) * 1000)
        try:
            self.log.write(entry)
        except OSError as e:
            sys.stderr.write(f"agentsh proxy: cannot write the audit log: {e}\n")


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _dest(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    """(request head bytes, bytes read past it), or (None, b"") on EOF before a full head."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_LIMIT:
            raise ValueError("request head too large")
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    return buf[:end], buf[end:]


def _split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """(host, port) of an authority; the host only normalised (Policy.check judges it)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed [")
        host, rest = text[1:end], text[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if port and not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise ValueError(f"bad port {port[:16]!r}")
    host = normalize_host(host)
    if not host:
        raise ValueError("no host")
    return host, int(port) if port else default_port


def _parse(head: bytes) -> tuple[str, str, int, bytes]:
    """(method, host, port, head to send upstream) for a proxy request head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise ValueError("not an HTTP request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if not 0 < len(method) <= 32 or not _METHOD_CHARS.issuperset(method):
        raise ValueError("not an HTTP method")
    if method == "CONNECT":
        host, port = _split_hostport(target, 443)
        return method, host, port, b""
    if not target.lower().startswith("http://"):
        raise ValueError("plain HTTP needs an absolute http:// URL; use CONNECT for https")
    rest = target[7:]
    end = len(rest)
    for delimiter in "/?#":  # the authority ends at the first of them (RFC 3986)
        i = rest.find(delimiter, 0, end)
        if i >= 0:
            end = i
    authority, path = rest[:end], rest[end:]
    if not path.startswith("/"):
        path = "/" + path
    authority = authority.rsplit("@", 1)[-1]
    host, port = _split_hostport(authority, 80)
    headers = [h for h in lines[1:] if h and h.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS]
    out = [f"{method} {path} {version}".encode("latin-1"), *headers, b"Connection: close", b"", b""]
    return method, host, port, b"\r\n".join(out)


_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


def _connect(host: str, port: int, addr: IPAddress | None, policy: Policy) -> socket.socket:
    """Resolve (here, never in the sandbox) and connect to an address the policy admits.

    `addr` is the checked address of an IP literal (Policy.check), else None.
    Every address a name resolves to is checked (Policy.admits: internal
    ones only when a rule names them) and the socket connects to that very
    address, so no second lookup can point it elsewhere.
    """
    if addr is not None:
        candidates = [addr]
    elif host in HOST_ALIASES:
        candidates = [_LOOPBACK]
    else:
        candidates = []
        for _, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            ip = unmapped(ipaddress.ip_address(sockaddr[0].split("%", 1)[0]))
            if ip not in candidates:
                candidates.append(ip)
    refused, last = None, None
    for ip in candidates:
        if addr is None:
            ok, reason = policy.admits(host, port, ip)
            if not ok:
                refused = refused or Refused(f"{host} resolves to {ip}, an internal address ({reason}); {NAME_IT}",
                                             f"resolves to an internal address ({reason}); {NAME_IT}")
                continue
        sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((str(ip), port))
        except OSError as e:
            sock.close()
            last = e
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise last or refused or OSError(f"no address for {host}")


def _reply(sock: socket.socket, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = f"agentsh: {message}\n".encode()
    try:
        sock.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                     f"X-Agentsh-Policy: {'denied' if status == 403 else 'error'}\r\nConnection: close\r\n\r\n"
                     .encode() + body)
    except OSError:
        pass


def _relay(client: socket.socket, upstream: socket.socket, first: bytes, greeting: bytes = b"") -> tuple[int, int]:
    """Copy both ways until both sides are done; returns (bytes to upstream, bytes to client).

    `first` (read from the client with its request) goes upstream at once,
    `greeting` (a CONNECT's answer) to the client once the other direction
    runs. The client's later bytes are copied by a worker started first; this
    thread, already running, copies the replies, so no answer waits for a
    thread to wake.
    """
    if first:
        upstream.sendall(first)
    counts = [0]
    done = threading.Lock()
    done.acquire()

    def up() -> None:
        try:
            counts[0] = _pump(client, upstream)
        finally:
            done.release()

    _WORKERS.run(up)
    received = 0
    try:
        if greeting:
            client.sendall(greeting)
        received = _pump(upstream, client)
    finally:
        done.acquire()
    return len(first) + counts[0], received


_SPLICE = hasattr(os, "splice")


def _pump(src: socket.socket, dst: socket.socket) -> int:
    """src -> dst until EOF, then half-close dst; returns the byte count."""
    total = 0
    try:
        total = _splice(src, dst) if _SPLICE else _copy(src, dst)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    return total


def _splice(src: socket.socket, dst: socket.socket) -> int:
    global _SPLICE
    r, w = os.pipe()
    total = 0
    try:
        try:
            fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
        except OSError:
            pass
        sfd, dfd = src.fileno(), dst.fileno()
        while True:
            try:
                n = os.splice(sfd, w, CHUNK)
            except OSError as e:
                if total == 0 and e.errno in (22, 38, 95):  # EINVAL/ENOSYS/EOPNOTSUPP: no splice here
                    _SPLICE = False
                    return _copy(src, dst)
                raise
            if n == 0:
                return total
            total += n
            while n:
                n -= os.splice(r, dfd, n)
    finally:
        os.close(r)
        os.close(w)


def _copy(src: socket.socket, dst: socket.socket) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    while True:
        n = src.recv_into(buf)
        if not n:
            return total
        dst.sendall(view[:n])
        total += n


# -- the process ---------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    return start_time(pid)


def names_path(store: Store, rel: str) -> str:
    """The DNS answerer's name <-> address map, next to the proxy's record (rel: layout.proxy_record)."""
    return store.path(layout.dns_names_file(os.path.basename(rel).removesuffix(".json")))


def raise_fd_limit() -> None:
    """The soft limit on open files up to the hard one: a tunnel holds six (two sockets, two pipes).

    With a common soft limit of 1,024 the proxy would refuse connections
    past about 170 at once.
    """
    import resource  # lazy: only at the proxy's start

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    except (OSError, ValueError):
        pass


def serve(state_root: str, rel: str, fd: int, steer_fd: int | None = None, dns_fds: Iterable[int] = ()) -> None:
    """Run until the sandbox's first process is gone (polled each second) or SIGTERM."""
    from agentsh.creds import oauth  # lazy: the agents' login endpoints, once at the proxy's start

    raise_fd_limit()
    store = Store(state_root)
    policy = RecordPolicy(store, rel)
    policy.current()
    record = policy.record
    listener = socket.socket(fileno=fd)
    log = audit.Writer(store.path(record.get("log") or layout.audit_log(record.get("sandbox", "sandbox"))))
    sandbox = record.get("sandbox", "")

    def report(problem: str) -> None:  # why the placeholders cannot be opened: a WARN line in ab-log
        now = time.time()
        log.write({"time": audit.now_iso(now), "sandbox": sandbox, "host": "-", "port": 0, "method": "CRED",
                   "allowed": True, "warning": True, "reason": problem, "bytes_sent": 0, "bytes_received": 0,
                   "ms": 0})

    proxy = Proxy(listener, policy, log, sandbox,
                  transparent=socket.socket(fileno=steer_fd) if steer_fd is not None else None,
                  dns=[socket.socket(fileno=f) for f in dns_fds], names=Names(names_path(store, rel)),
                  local_names=[record["hostname"]] if record.get("hostname") else (),
                  swaps=Swaps(store.path(layout.swap_record(sandbox)), sandbox, report=report,
                              logins=oauth.login_hosts()) if sandbox else None,
                  contexts=Contexts(store.root, sandbox) if sandbox else None)

    def stop(*_: object) -> None:
        proxy.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pid, start = record.get("sandbox_pid"), record.get("sandbox_start")

    def watch() -> None:
        while not proxy.closed.is_set():
            if pid and _start_time(pid) != start:
                proxy.close()
                return
            time.sleep(1)

    threading.Thread(target=watch, daemon=True).start()
    try:
        proxy.serve_forever()
    finally:
        log.close()


def supervise(run: Callable[[], object], state_root: str, rel: str) -> None:
    """Run `run` (the proxy) in a child process, again whenever it dies, until SIGTERM or its sandbox is gone.

    The sockets stay open in this parent, so a restarted proxy serves the
    same planted listeners: a crash or a kill costs the connections in
    flight, never the sandbox's way out, and nothing passes while no child
    runs (nobody accepts). A child that returns 0 stopped on purpose (its
    sandbox is gone); SIGTERM here is passed on and ends both. The child
    dies with this process (PR_SET_PDEATHSIG).
    """
    record = Store(state_root).read(rel) or {}
    pid, start = record.get("sandbox_pid"), record.get("sandbox_start")
    state = {"stopping": False, "child": 0}

    def term(*_: object) -> None:
        state["stopping"] = True
        if state["child"]:
            try:
                os.kill(state["child"], signal.SIGTERM)
            except OSError:
                pass

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    recent = []
    while not state["stopping"]:
        child = os.fork()
        if child == 0:
            try:
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
                if os.getppid() == 1:
                    os._exit(0)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                run()
                code = 0
            except BaseException as e:  # noqa: BLE001 (the child reports and dies; the parent restarts it)
                sys.stderr.write(f"agentsh proxy: {e!r}\n")
                code = 1
            sys.stderr.flush()
            os._exit(code)
        state["child"] = child
        if state["stopping"]:  # a SIGTERM that came while forking
            term()
        _, status = os.waitpid(child, 0)
        state["child"] = 0
        if state["stopping"] or os.waitstatus_to_exitcode(status) == 0:
            return
        if pid and _start_time(pid) != start:
            return
        now = time.monotonic()
        recent = [t for t in recent if now - t < 10] + [now]
        sys.stderr.write(f"agentsh proxy: restarting (the proxy exited with status {status})\n")
        time.sleep(0.1 if len(recent) < 5 else 2)  # a proxy that keeps dying is retried slowly




def _tool(name: str) -> str | None:
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name)


def steer_rules(steer_port: int) -> tuple[list[list[str]], list[str], list[str]]:
    """Commands (argv) that steer TCP to the synthetic block onto 127.0.0.1:steer_port, idempotently.

    A local route for the block makes its addresses reachable at all (the
    namespace has no other route); the nat OUTPUT rule rewrites each such
    connection to the transparent listener, which reads the original
    destination back with SO_ORIGINAL_DST.
    """
    iptables, ip = _tool("iptables"), _tool("ip")
    if not iptables or not ip:
        raise OSError("iptables and ip (packages iptables, iproute2) are needed to steer connections")
    rule = ["OUTPUT", "-d", str(SYNTHETIC), "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(steer_port)]
    return [[ip, "route", "replace", "local", str(SYNTHETIC), "dev", "lo"]], [iptables, "-t", "nat"], rule


def _steer(steer_port: int) -> str:
    """Set the namespace's route and REDIRECT rule; "" when done, else why not."""
    try:
        routes, iptables, rule = steer_rules(steer_port)
        for argv in routes:
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        if subprocess.run([*iptables, "-C", *rule], capture_output=True, timeout=30).returncode != 0:
            subprocess.run([*iptables, "-A", *rule], check=True, capture_output=True, timeout=30)
    except subprocess.CalledProcessError as e:
        err = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        return f"{os.path.basename(e.cmd[0])}: {(err or ['failed'])[-1][:200]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)[:200]
    return ""


def _bind(kind: int, port: int, listen: bool = True) -> socket.socket:
    """A socket bound to 127.0.0.1:port (retried briefly: a stopped proxy's socket may linger)."""
    sock = socket.socket(socket.AF_INET, kind)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for attempt in range(30):
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError as e:
            if e.errno != 98 or attempt == 29:  # EADDRINUSE
                raise SystemExit(f"cannot listen on 127.0.0.1:{port} in the sandbox: {e.strerror}")
            time.sleep(0.1)
    if listen and kind == socket.SOCK_STREAM:
        sock.listen(1024)
    return sock


def _loopback_up() -> None:
    """Bring the namespace's loopback up where it is down (runc does so for a new namespace; gVisor's runsc
    with network=host leaves it down, and with it 127.0.0.1, where the proxy's sockets go)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, 0x8913, req))[1]  # SIOCGIFFLAGS
        if not flags & 1:  # IFF_UP
            fcntl.ioctl(s, 0x8914, struct.pack("16sh14x", b"lo", flags | 1))  # SIOCSIFFLAGS
    except OSError as e:
        raise SystemExit(f"cannot bring up the sandbox's loopback: {e.strerror}") from None
    finally:
        s.close()


def plant(pid: int, port: int, unix_path: str) -> None:
    """In the sandbox's network namespace, make the proxy's sockets and send their fds to unix_path.

    The fds, in order: the proxy listener (127.0.0.1:PORT), the transparent
    listener (PORT + 1), the DNS answerer's UDP and TCP sockets (port 53).
    The message carries "" or why the steering rules could not be set (the
    proxy then serves HTTP(S)_PROXY users only; nothing else gets out).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    if libc.setns(ns, 0x40000000) != 0:  # CLONE_NEWNET
        err = ctypes.get_errno()
        raise SystemExit(f"cannot enter the sandbox's network namespace: {os.strerror(err)}")
    os.close(ns)
    _loopback_up()
    socks = [_bind(socket.SOCK_STREAM, port), _bind(socket.SOCK_STREAM, port + STEER_PORT_OFFSET),
             _bind(socket.SOCK_DGRAM, DNS_PORT), _bind(socket.SOCK_STREAM, DNS_PORT)]
    problem = _steer(port + STEER_PORT_OFFSET)
    back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    back.connect(unix_path)
    back.sendmsg([b"\0" + problem.encode()],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno() for s in socks]))])
    back.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m agentsh.egress.proxy", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--state", required=True)
    s.add_argument("--record", required=True)
    s.add_argument("--fd", type=int, required=True)
    s.add_argument("--steer-fd", type=int)
    s.add_argument("--dns-fd", type=int, action="append", default=[])
    pl = sub.add_parser("plant")
    pl.add_argument("pid", type=int)
    pl.add_argument("port", type=int)
    pl.add_argument("unix_path")
    args = p.parse_args(argv)
    if args.cmd == "serve":
        supervise(lambda: serve(args.state, args.record, args.fd, args.steer_fd, args.dns_fd), args.state,
                  args.record)
    else:
        plant(args.pid, args.port, args.unix_path)


if __name__ == "__main__":
    main()
